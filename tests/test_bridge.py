"""A classification checkpoint initialises the detection and segmentation backbones."""
import pytest
import torch
from helpers import config, run_tool
from mmengine.config import Config

from mmdualtoken.checkpoint import extract_backbone_weights, to_backbone_checkpoint


@pytest.fixture(scope='module')
def classifier_checkpoint(tmp_path_factory):
    """An mmengine-style checkpoint of the tiny-arch ImageNet classifier (random weights)."""
    from mmpretrain.apis import get_model
    torch.manual_seed(0)
    model = get_model(config('dualtoken_t_in1k.py'))
    path = tmp_path_factory.mktemp('bridge') / 'cls.pth'
    torch.save(dict(meta=dict(epoch=300), state_dict=model.state_dict()), path)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in model.state_dict().items() if k.startswith('backbone.')
    }
    return str(path), backbone


def _build_with_pretrained(name, checkpoint, scope):
    import importlib

    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config(name))
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    model.init_weights()
    return model


@pytest.mark.parametrize('name, scope', [('retinanet_dualtoken_t.py', 'mmdet'),
                                         ('fpn_dualtoken_t_ade20k.py', 'mmseg'),
                                         ('mask_rcnn_dualtoken_t.py', 'mmdet')])
def test_every_backbone_tensor_arrives(classifier_checkpoint, name, scope):
    path, expected = classifier_checkpoint
    model = _build_with_pretrained(name, path, scope)
    state = model.backbone.state_dict()
    assert set(state) == set(expected)  # no missing, no unexpected keys
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    # the bridge moves every tensor of the backbone: report the count
    print(f'{name}: {len(expected)} backbone tensors loaded')
    assert len(expected) > 300


@pytest.mark.parametrize('layout', ['mmengine', 'bare', 'no_prefix', 'ddp', 'ema'])
def test_converter_layouts_and_idempotence(classifier_checkpoint, layout):
    path, expected = classifier_checkpoint
    full = torch.load(path, weights_only=True)['state_dict']
    if layout == 'mmengine':
        source = dict(state_dict=full)
    elif layout == 'bare':
        source = full
    elif layout == 'no_prefix':
        source = dict(expected)
    elif layout == 'ddp':
        source = dict(state_dict={'module.' + k: v for k, v in full.items()})
    else:
        source = dict(
            state_dict={
                k: torch.zeros_like(v)
                for k, v in full.items()
            },
            ema_state_dict=dict({
                'module.' + k: v
                for k, v in full.items()
            }, steps=torch.tensor(10)))
    converted = to_backbone_checkpoint(source, 'tiny', use_ema=layout == 'ema')
    assert set(converted['state_dict']) == {'backbone.' + k for k in expected}
    again = to_backbone_checkpoint(converted, 'tiny')
    assert again['state_dict'].keys() == converted['state_dict'].keys()
    for key, value in converted['state_dict'].items():
        assert again['state_dict'][key] is value
        torch.testing.assert_close(value, expected[key[len('backbone.'):]])


def test_converter_refuses_another_arch(classifier_checkpoint):
    path, _ = classifier_checkpoint
    checkpoint = torch.load(path, weights_only=True)
    with pytest.raises(
            ValueError,
            match=r"not a DualTokenViT arch='small' backbone: .*"
            r"missing .*of another shape"):
        to_backbone_checkpoint(checkpoint, 'small')


def test_converter_cli(classifier_checkpoint, tmp_path):
    path, expected = classifier_checkpoint
    dst = tmp_path / 'backbone.pth'
    proc = run_tool(
        'model_converters/to_backbone_checkpoint.py',
        path,
        str(dst),
        '--arch',
        'tiny',
        cwd=str(tmp_path))
    assert f'{len(expected)} backbone tensors' in proc.stdout
    weights = extract_backbone_weights(torch.load(dst, weights_only=True))
    assert set(weights) == set(expected)
