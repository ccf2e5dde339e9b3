"""mmdet end to end on the tiny COCO set: Mask R-CNN train + val through the Runner (RetinaNet's
train, val and test from its checkpoint: the README's commands, tests/test_readme.py),
DetInferencer."""
import numpy as np
import pytest
from helpers import DET_TWO_ITERATIONS, config, run_tool, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the tools


def test_mask_rcnn_train_val(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'mask_rcnn')
    run_tool(
        'train.py',
        config('tiny/mask_rcnn_dualtoken_s_tiny.py'),
        '--work-dir',
        work_dir,
        '--cfg-options',
        *DET_TWO_ITERATIONS,
        cwd=tiny_workdir)
    logged = scalars(work_dir)
    losses = [r for r in logged if 'loss_mask' in r]
    assert len(losses) == 2 and all(np.isfinite(r['loss']) for r in losses)
    assert any('coco/segm_mAP' in r and 'coco/bbox_mAP' in r for r in logged)


@pytest.mark.parametrize('name', ['retinanet_dualtoken_s.py', 'mask_rcnn_dualtoken_t.py'])
def test_det_inferencer_any_image_size(name):
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(model=config(name), weights=None, device='cpu', show_progress=False)
    rng = np.random.default_rng(0)
    for h, w in [(97, 131), (240, 320)]:
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        result = inferencer(image, return_datasamples=True)
        sample = result['predictions'][0]
        assert sample.ori_shape == (h, w)
        assert sample.pred_instances.bboxes.shape[1] == 4
