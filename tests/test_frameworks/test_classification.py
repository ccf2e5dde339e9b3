"""mmpretrain end to end on the tiny ImageNet-layout set, inference, layer-wise lr decay."""
import numpy as np
import pytest
import torch
from helpers import checkpoints, config, run_tool, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the tools


def test_train_val(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'cls')
    run_tool(
        'train.py',
        config('tiny/dualtoken_s_in1k_tiny.py'),
        '--work-dir',
        work_dir,
        '--cfg-options',
        'train_dataloader.dataset.indices=8',
        'train_dataloader.batch_size=4',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1',
        cwd=tiny_workdir)
    logged = scalars(work_dir)
    losses = [r['loss'] for r in logged if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any('accuracy/top1' in r for r in logged)
    assert checkpoints(work_dir) == ['epoch_1.pth']


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
