"""tools/test.py --fuse-for-cpu: the backbone is converted after the checkpoint is loaded, and
the metric is the plain run's.

The checkpoint is the tiny classification config's model with random weights and BatchNorm
statistics far from their initial values (so that folding them into the convs changes the
weights), saved as tools/test.py's ``load_from`` reads it.
"""
import glob
import json
import os.path as osp

import pytest
import torch
from helpers import config, run_tool
from mmengine.config import Config
from mmengine.registry import DefaultScope

pytestmark = pytest.mark.slow  # Runner trainings through the tools

TINY_CLS = config('tiny/dualtoken_s_in1k_tiny.py')
METRIC = 'accuracy/top1'


def write_checkpoint(path: str) -> None:
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(TINY_CLS).model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(dict(state_dict=model.state_dict()), path)


def logged_metric(work_dir: str) -> float:
    """The metric tools/test.py's Runner wrote to ``<work_dir>/<timestamp>/<timestamp>.json``."""
    found = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return json.loads(f.read().strip().splitlines()[-1])[METRIC]


def test_fuse_for_cpu_gives_the_plain_runs_metric(tiny_workdir, tmp_path):
    checkpoint = str(tmp_path / 'random.pth')
    write_checkpoint(checkpoint)
    common = ['--cfg-options', 'test_dataloader.dataset.indices=8']
    plain = run_tool(
        'test.py',
        TINY_CLS,
        checkpoint,
        '--work-dir',
        str(tmp_path / 'plain'),
        *common,
        cwd=tiny_workdir)
    fused = run_tool(
        'test.py',
        TINY_CLS,
        checkpoint,
        '--work-dir',
        str(tmp_path / 'fused'),
        '--fuse-for-cpu',
        *common,
        cwd=tiny_workdir)
    for proc in (plain, fused):
        out = proc.stdout + proc.stderr
        assert f'Load checkpoint from {checkpoint}' in out
        # every key of the checkpoint found its module: it was loaded before the conversion
        assert 'do not match exactly' not in out, out[-3000:]
    out = fused.stdout + fused.stderr
    converted = [line for line in out.splitlines() if 'fuse_for_cpu: ' in line]
    assert len(converted) == 1, out[-3000:]
    assert int(converted[0].split('fuse_for_cpu: ')[1].split()[0]) > 0
    assert 'fuse_for_cpu: ' not in plain.stdout + plain.stderr
    # fp32 rounding apart the converted backbone computes the same outputs
    # (tests/test_deploy); over 8 images the top-1 is the same, to the image
    assert logged_metric(str(tmp_path / 'fused')) == logged_metric(str(tmp_path / 'plain'))
