"""init_cfg=Pretrained loads strictly, with one clear error when it cannot."""
import pytest
import torch
from helpers import RunsWhenUnpickled

from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])


def pretrained(path, prefix='backbone.', **kwargs):
    return DualTokenViT(arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                 prefix=prefix), **kwargs)


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
    with pytest.raises(ValueError, match='does not fit DualTokenViT.*of another shape.*'
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
    torch.save(dict(meta=dict(epoch=300, seed=np.int64(0)),
                    state_dict={'backbone.' + k: v for k, v in source.state_dict().items()},
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
    with pytest.raises(RuntimeError, match='Refusing to load the pretrained checkpoint .*'
                       'Unsupported global: GLOBAL .*RunsWhenUnpickled'):
        pretrained(path).init_weights()
    assert not marker.exists()
