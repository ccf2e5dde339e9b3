"""tools/dist_train.sh and dist_test.sh with 2 processes without a GPU (torchrun, gloo, DDP)."""
import json
import os
import os.path as osp
import sys

import pytest
import torch
from helpers import REPO_ROOT, config, run_process_tree, scalars, why_it_failed
from mmengine.config import Config

import mmdualtoken  # noqa: F401  (weights_only loading of the mmengine checkpoint)

pytestmark = pytest.mark.slow  # Runner trainings through the tools


def test_dist_train_two_cpu_processes(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'dist')
    # the tiny detection config plus a hook with which every rank saves its weights and
    # records its DDP wrapper (lists replace their base's: the config's imports and hooks
    # are written out again)
    base = Config.fromfile(config('tiny/retinanet_dualtoken_s_tiny.py'))
    imports = [*base.custom_imports.imports, 'rank_weights_hook']
    hooks = [*base.custom_hooks, dict(type='SaveRankWeightsHook')]
    cfg = tmp_path / 'dist_config.py'
    cfg.write_text(f"_base_ = {config('tiny/retinanet_dualtoken_s_tiny.py')!r}\n"
                   f"custom_imports = dict(imports={imports!r})\n"
                   f"custom_hooks = {[dict(h) for h in hooks]!r}\n")
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT='29517',
        OMP_NUM_THREADS='1',
        PYTHONPATH=osp.dirname(osp.abspath(__file__)) + '/..',
        PYTHONWARNINGS='ignore')
    cmd = [
        osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
        str(cfg), '2', '--work-dir', work_dir, '--cfg-options',
        'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=1',
        'val_dataloader.dataset.indices=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.0',
        'randomness.diff_rank_seed=True'
    ]
    proc = run_process_tree(cmd, cwd=tiny_workdir, env=env)
    assert proc.returncode == 0, why_it_failed(proc)
    log = proc.stdout + proc.stderr
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    # DDP without find_unused_parameters: it would raise had any parameter no gradient
    for rank in range(2):
        with open(osp.join(work_dir, f'rank{rank}_ddp.json')) as f:
            ddp = json.load(f)
        assert ddp == dict(wrapper='CPUDistributedDataParallel', find_unused_parameters=False)
    # 4 images, 2 processes x batch 1: 2 iterations, each a DDP step over both ranks
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == 2
    rank0 = torch.load(osp.join(work_dir, 'rank0.pth'), weights_only=True)
    rank1 = torch.load(osp.join(work_dir, 'rank1.pth'), weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    # the checkpoint holds every rank's random states (gathered to rank 0, which writes it);
    # with diff_rank_seed the ranks' generators differ
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu', weights_only=True)
    ranks = ckpt['random_states']['ranks']
    assert isinstance(ranks, list) and len(ranks) == 2
    assert not torch.equal(ranks[0]['torch'], ranks[1]['torch'])

    # tools/dist_test.sh on the checkpoint, 2 processes
    cmd = [
        osp.join(REPO_ROOT, 'tools', 'dist_test.sh'),
        str(cfg),
        osp.join(work_dir, 'epoch_1.pth'), '2', '--work-dir',
        str(tmp_path / 'dist_test'), '--cfg-options', 'test_dataloader.dataset.indices=2',
        'model.test_cfg.score_thr=0.0'
    ]
    proc = run_process_tree(cmd, cwd=tiny_workdir, env=env)
    assert proc.returncode == 0, why_it_failed(proc)
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
