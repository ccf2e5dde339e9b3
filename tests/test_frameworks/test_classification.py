"""mmpretrain: inference and get_model, layer-wise lr decay (training on the tiny
ImageNet-layout set: the README's commands, tests/test_readme.py)."""
import numpy as np
import pytest
import torch
from helpers import config

pytestmark = pytest.mark.slow  # mmpretrain's inferencer and optimizer builders


@pytest.mark.parametrize('name', ['dualtoken_t_in1k.py', 'dualtoken_s-mix_in1k.py'])
def test_inferencer_and_get_model(name):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    model = get_model(config(name), pretrained=False)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2, 1000)
    # mmpretrain's inferencer builds its pipeline in whatever scope is current; in a process
    # that also ran mmdet (as this test worker may have), it must be made current.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(config(name), pretrained=False, device='cpu')
        rng = np.random.default_rng(0)
        for h, w in [(97, 131), (400, 300)]:
            result = inferencer(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))[0]
            assert 0 <= result['pred_label'] < 1000
            assert len(result['pred_scores']) == 1000


def test_layer_wise_lr_decay():
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import get_model
    cfg = Config.fromfile(config('dualtoken_t_in1k.py'))
    model = get_model(cfg)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        wrapper = build_optim_wrapper(
            model,
            dict(
                type='OptimWrapper',
                optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04),
                constructor='LearningRateDecayOptimWrapperConstructor',
                paramwise_cfg=dict(layer_decay_rate=0.5, norm_decay_mult=0., bias_decay_mult=0.)))
    num_layers = sum(model.backbone.depths) + 2
    lr_of = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lr_of[id(p)] = group['lr']
    named = dict(model.named_parameters())
    stem = lr_of[id(named['backbone.stem.layers.0.conv.weight'])]
    first_block = lr_of[id(named['backbone.stages.0.blocks.0.ffn.fc1.weight'])]
    head = lr_of[id(named['head.fc.weight'])]
    assert head == pytest.approx(1e-3)
    assert first_block == pytest.approx(1e-3 * 0.5**(num_layers - 2))
    assert stem == pytest.approx(1e-3 * 0.5**(num_layers - 1))
