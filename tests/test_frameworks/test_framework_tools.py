"""The frameworks' own tools accept our configs: the train.py and test.py that mmdet, mmseg and
mmpretrain install inside their package (``<package>/.mim/tools/``, what ``mim train mmdet
CONFIG`` runs), not ours. Each trains a few iterations on the tiny sets, then tests the
checkpoint it wrote; and mmdet's analysis_tools/get_flops.py counts the real RetinaNet config.

Nothing here goes through mmdualtoken's tools/ or mmdualtoken/launch.py: the config's
``custom_imports`` alone must bring in our modules. The segmentation config keeps its SyncBN:
with ``--launcher none`` mmengine's Runner reverts SyncBN to BN itself (one process, not
distributed), as it does for any OpenMMLab SyncBN config on a single machine.
"""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from helpers import DET_TWO_ITERATIONS, REPO_ROOT, checkpoints, config, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the tools

TIMEOUT = 600  # seconds per process; each takes well under a minute here


def framework_tool(package: str, tool: str) -> str:
    """``<package>/.mim/tools/<tool>`` of the installed framework package."""
    module = pytest.importorskip(package)
    path = osp.join(osp.dirname(module.__file__), '.mim', 'tools', tool)
    assert osp.isfile(path), f'{package} ships no {tool} at {path}'
    return path


def run_framework_tool(package: str, tool: str, *args: str, cwd) -> str:
    """Run ``python <package>/.mim/tools/<tool> args`` in ``cwd``; return stdout + stderr."""
    cmd = [sys.executable, framework_tool(package, tool), *args]
    # the installed (editable) mmdualtoken resolves custom_imports already; PYTHONPATH makes
    # a source checkout work as well
    pythonpath = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get('PYTHONPATH')) if p)
    env = dict(
        os.environ,
        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
        PYTHONWARNINGS='ignore',
        PYTHONPATH=pythonpath)
    proc = subprocess.run(
        cmd, cwd=str(cwd), capture_output=True, text=True, timeout=TIMEOUT, env=env)
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc.stdout + proc.stderr


def metrics_of_test_run(work_dir: str) -> dict:
    """The metrics test.py's Runner wrote to ``<work_dir>/<timestamp>/<timestamp>.json``."""
    found = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return json.loads(f.read().strip().splitlines()[-1])


# package, tiny config, options making train.py a two-iteration run (4 images, batch 2) that
# validates on two (four) images and saves a checkpoint, the checkpoint's name, options for
# test.py (the same images and batch as that validation), the metric the evaluator reports
FRAMEWORKS = {
    'mmdet':
    dict(
        config='tiny/retinanet_dualtoken_s_tiny.py',
        train=[
            *DET_TWO_ITERATIONS,
            # after two iterations RetinaNet's scores sit near the focal-loss prior
            # (0.01): keep them all, so that COCO evaluation has detections to score
            'model.test_cfg.score_thr=0.0'
        ],
        checkpoint='epoch_1.pth',
        test=[
            'test_dataloader.dataset.indices=2', 'test_dataloader.batch_size=2',
            'model.test_cfg.score_thr=0.0'
        ],
        metric='coco/bbox_mAP'),
    'mmseg':
    dict(
        config='tiny/fpn_dualtoken_s_ade20k_tiny.py',
        train=[
            'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
            'val_dataloader.dataset.indices=2', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2'
        ],
        checkpoint='iter_2.pth',
        test=['test_dataloader.dataset.indices=2'],
        metric='mIoU'),
    'mmpretrain':
    dict(
        config='tiny/dualtoken_s_in1k_tiny.py',
        train=[
            'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
            'val_dataloader.dataset.indices=4', 'val_dataloader.batch_size=4',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
            'default_hooks.checkpoint.interval=1'
        ],
        checkpoint='epoch_1.pth',
        best=['best_accuracy_top1_epoch_1.pth'],  # the ImageNet recipe's save_best
        test=['test_dataloader.dataset.indices=4', 'test_dataloader.batch_size=4'],
        metric='accuracy/top1'),
}


@pytest.mark.parametrize('package', list(FRAMEWORKS))
def test_framework_train_then_test(package, tiny_workdir, tmp_path):
    spec = FRAMEWORKS[package]
    work_dir = str(tmp_path / 'train')
    out = run_framework_tool(
        package,
        'train.py',
        config(spec['config']),
        '--work-dir',
        work_dir,
        '--cfg-options',
        *spec['train'],
        cwd=tiny_workdir)
    logged = scalars(work_dir)
    losses = [r['loss'] for r in logged if 'loss' in r]
    assert len(losses) == 2, out[-3000:]
    assert checkpoints(work_dir) == sorted([spec['checkpoint'], *spec.get('best', [])])
    val = [r[spec['metric']] for r in logged if spec['metric'] in r]
    assert len(val) == 1, out[-3000:]

    checkpoint = osp.join(work_dir, spec['checkpoint'])
    test_dir = str(tmp_path / 'test')
    out = run_framework_tool(
        package,
        'test.py',
        config(spec['config']),
        checkpoint,
        '--work-dir',
        test_dir,
        '--cfg-options',
        *spec['test'],
        cwd=tiny_workdir)
    assert f'Load checkpoint from {checkpoint}' in out
    assert spec['metric'] in out
    # the same weights on the same images: test.py reproduces the training run's validation
    assert metrics_of_test_run(test_dir)[spec['metric']] == pytest.approx(val[0], abs=1e-6)


def test_mmdet_get_flops_on_the_real_config(tiny_workdir):
    # mmdet 3.x's get_flops has no --shape: it measures the model on images of the config's
    # val_dataloader (its test pipeline: 1333x800 resize, pad to a multiple of 32). Point the
    # real config's data at the tiny COCO set and measure one image.
    out = run_framework_tool(
        'mmdet',
        osp.join('analysis_tools', 'get_flops.py'),
        config('retinanet_dualtoken_s.py'),
        '--num-images',
        '1',
        '--cfg-options',
        'val_dataloader.dataset.data_root=data/tiny/coco/',
        cwd=tiny_workdir)
    shape = re.search(r'Input shape: \((\d+), (\d+)\)', out)
    assert shape, out[-3000:]
    height, width = map(int, shape.groups())
    assert max(height, width) <= 1344 and min(height, width) <= 800 and height % 32 == 0
    flops = re.search(r'Flops: ([\d.]+)([KMGT]?)', out)
    params = re.search(r'Params: ([\d.]+)([KMG]?)', out)
    assert flops and params, out[-3000:]
    assert float(flops.group(1)) > 0 and flops.group(2) in ('G', 'T')
    assert params.group(2) == 'M' and 15 < float(params.group(1)) < 40
