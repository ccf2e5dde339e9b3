"""mmseg end to end on the tiny ADE20K set: UperNet train + val through the Runner; inference at
odd image sizes."""
import glob
import os.path as osp

import numpy as np
import pytest
from helpers import config, run_tool, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the tools


# Semantic FPN trains, validates and tests by the README's commands (tests/test_readme.py)
@pytest.mark.parametrize('name', ['tiny/upernet_dualtoken_s_ade20k_tiny.py'])
def test_train_val(tiny_workdir, tmp_path, name):
    work_dir = str(tmp_path / 'seg')
    options = [
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'train_dataloader.batch_size=2',
        'val_dataloader.dataset.indices=2', 'default_hooks.logger.interval=1',
        'default_hooks.visualization.interval=1'
    ]
    run_tool(
        'train.py',
        config(name),
        '--work-dir',
        work_dir,
        '--cfg-options',
        *options,
        cwd=tiny_workdir)
    logged = scalars(work_dir)
    losses = [r['loss'] for r in logged if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any('mIoU' in r for r in logged)
    pictures = glob.glob(osp.join(work_dir, '*', 'vis_data', 'vis_image', '*.png'))
    assert pictures, 'no picture of a predicted mask was written'


@pytest.mark.parametrize('name', ['fpn_dualtoken_t_ade20k.py', 'upernet_dualtoken_s_ade20k.py'])
def test_inference_mask_has_the_image_size(name):
    from mmseg.apis import inference_model, init_model
    model = init_model(config(name), checkpoint=None, device='cpu')
    rng = np.random.default_rng(0)
    for h, w in [(97, 131), (300, 211)]:
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        result = inference_model(model, image)
        assert tuple(result.pred_sem_seg.data.shape[-2:]) == (h, w)


def test_mmseg_inferencer_odd_size():
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(
        model=config('fpn_dualtoken_t_ade20k.py'), weights=None, device='cpu')
    image = np.random.default_rng(1).integers(0, 255, (123, 77, 3), dtype=np.uint8)
    result = inferencer(image, return_datasamples=True)
    assert tuple(result.pred_sem_seg.data.shape[-2:]) == (123, 77)
