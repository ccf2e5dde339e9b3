"""init_cfg=Pretrained loads strictly, with one clear error when it cannot."""
import pytest
import torch
from helpers import RunsWhenUnpickled

from mmdualtoken.errors import BadConfigError
from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])


def pretrained(path, prefix='backbone.', **kwargs):
    return DualTokenViT(
        arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix=prefix), **kwargs)


def save(path, state, prefix='backbone.'):
    torch.save(dict(state_dict={prefix + k: v for k, v in state.items()}), path)
    return path


def test_loads_every_tensor_and_another_grid(tmp_path):
    source = DualTokenViT(arch=ARCH)
    path = save(tmp_path / 'ok.pth', source.state_dict())
    model = pretrained(path, grid_size=9)
    model.init_weights()
    for key, value in source.state_dict().items():
        if key != 'global_tokens':
            torch.testing.assert_close(model.state_dict()[key], value)
    assert model.global_tokens.shape == (1, 9, 9, 16)


def test_another_arch_is_refused(tmp_path):
    other = DualTokenViT(arch=dict(ARCH, embed_dims=[8, 16, 32], num_heads=[1, 1, 1]))
    model = pretrained(save(tmp_path / 'other.pth', other.state_dict()))
    with pytest.raises(
            ValueError,
            match='does not fit DualTokenViT.*of another shape.*'
            'trained with another arch'):
        model.init_weights()


def test_missing_keys_are_refused(tmp_path):
    state = DualTokenViT(arch=ARCH).state_dict()
    state.pop('stem.norm.weight')
    model = pretrained(save(tmp_path / 'partial.pth', state))
    with pytest.raises(ValueError, match=r'1 missing \(stem.norm.weight\)'):
        model.init_weights()


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / 'corrupt.pth'
    good = save(tmp_path / 'good.pth', DualTokenViT(arch=ARCH).state_dict())
    path.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match='Cannot read the pretrained checkpoint .*complete'):
        pretrained(path).init_weights()


def test_missing_file_and_wrong_prefix(tmp_path):
    with pytest.raises(FileNotFoundError, match='Pretrained checkpoint not found'):
        pretrained(tmp_path / 'nope.pth').init_weights()
    path = save(tmp_path / 'noprefix.pth', DualTokenViT(arch=ARCH).state_dict(), prefix='')
    with pytest.raises(ValueError, match=r"No tensors under prefix 'backbone.'.*'stages.'"):
        pretrained(path).init_weights()
    pretrained(path, prefix=None).init_weights()  # the bare layout loads without a prefix


def test_a_runner_checkpoint_loads_safely_on_every_torch(tmp_path):
    """What an ImageNet run's epoch_300.pth holds (message hub, numpy scalars, optimizer
    state) loads with weights-only unpickling: torch's allow-list where torch has one, our
    AllowListUnpickler on torch < 2.4 (tools/compat_matrix.sh runs this on torch 2.1.2,
    where torch.load would otherwise unpickle the file fully)."""
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('pretrained_loading_test')
    hub.update_scalar('train/loss', 0.5)
    source = DualTokenViT(arch=ARCH)
    path = tmp_path / 'epoch_300.pth'
    torch.save(
        dict(
            meta=dict(epoch=300, seed=np.int64(0)),
            state_dict={
                'backbone.' + k: v
                for k, v in source.state_dict().items()
            },
            message_hub=hub.state_dict()), path)
    model = pretrained(path)
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_a_foreign_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'ran'
    state = {'backbone.' + k: v for k, v in DualTokenViT(arch=ARCH).state_dict().items()}
    path = tmp_path / 'foreign.pth'
    torch.save(dict(state_dict=state, extra=RunsWhenUnpickled(str(marker))), path)
    with pytest.raises(
            RuntimeError,
            match='Refusing to load the pretrained checkpoint .*'
            'Unsupported global: GLOBAL .*RunsWhenUnpickled'):
        pretrained(path).init_weights()
    assert not marker.exists()


# ---------------------------------------------------------------- pretrained (mmdet/mmseg form)
def test_pretrained_none_and_init_cfg_none_give_the_default_init():
    """pretrained=None is accepted, and init_cfg=None (what --cfg-options
    model.backbone.init_cfg=None sets) is the default init, as in mmdet's ResNet: truncated
    normal Linear weights, not PyTorch's uniform ones."""
    for kwargs in (dict(), dict(pretrained=None), dict(init_cfg=None),
                   dict(pretrained=None, init_cfg=None)):
        model = DualTokenViT(arch=ARCH, **kwargs)
        assert model.init_cfg == DualTokenViT.default_init_cfg
        model.init_weights()
        linear = model.stages[1].blocks[0].ffn.fc1
        assert torch.all(linear.bias == 0)
        assert abs(linear.weight.std().item() - 0.02) < 0.01


def test_a_local_checkpoint_through_pretrained_loads_like_init_cfg(tmp_path):
    source = DualTokenViT(arch=ARCH)
    path = save(tmp_path / 'epoch_300.pth', source.state_dict())
    with pytest.warns(
            UserWarning,
            match=r"pretrained=.* is deprecated.*read as init_cfg=dict\("
            r"type='Pretrained', checkpoint=.*epoch_300.pth', prefix='backbone.'\)"):
        model = DualTokenViT(arch=ARCH, pretrained=str(path))
    assert model.init_cfg == pretrained(path).init_cfg
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    'name',
    ['open-mmlab://resnet50_v1c', 'torchvision://resnet50', 'open-mmlab://resnext101_32x4d'])
def test_a_model_zoo_name_through_pretrained_is_one_line_at_construction(name):
    """mmseg's stock bases set model.pretrained to their ResNet's checkpoint: refused when the
    backbone is built, in one line saying where it came from and what to set."""
    with pytest.raises(BadConfigError) as error:
        DualTokenViT(arch=ARCH, pretrained=name)
    message = str(error.value)
    assert not isinstance(error.value, TypeError)
    assert '\n' not in message
    assert f'pretrained={name!r}' in message
    assert 'a checkpoint of another backbone' in message
    assert 'model.pretrained of the config' in message and 'EncoderDecoder' in message
    assert 'Set model.pretrained=None' in message
    assert "init_cfg=dict(type='Pretrained', checkpoint=<DualToken-ViT ImageNet checkpoint" \
        in message and "prefix='backbone.')" in message


def test_pretrained_and_init_cfg_together_are_an_error(tmp_path):
    with pytest.raises(
            BadConfigError, match="got both pretrained='a.pth' and init_cfg=.*"
            'keep only init_cfg'):
        DualTokenViT(
            arch=ARCH, pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'))
    with pytest.raises(TypeError, match='pretrained must be a checkpoint'):
        DualTokenViT(arch=ARCH, pretrained=True)


def test_mmseg_framework_encoder_decoder_passes_the_line_on():
    """The path users take: mmseg's EncoderDecoder copies model.pretrained into the backbone
    config; the build stops with our line (mmengine prefixes the classes), not a TypeError."""
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    def segmentor(pretrained):  # what a config gives (EncoderDecoder edits its backbone)
        return ConfigDict(
            type='EncoderDecoder',
            pretrained=pretrained,
            backbone=dict(type='DualTokenViT', arch=ARCH),
            decode_head=dict(
                type='FCNHead', in_channels=64, in_index=2, channels=8, num_convs=1, num_classes=3))

    with DefaultScope.overwrite_default_scope('mmseg'):
        with pytest.raises(BadConfigError) as error:
            MODELS.build(segmentor('open-mmlab://resnet50_v1c'))
        assert 'Set model.pretrained=None' in str(error.value)
        assert '\n' not in str(error.value)
        assert type(MODELS.build(segmentor(None)).backbone).__name__ == 'DualTokenViT'
