"""tools/dist_train.sh and dist_test.sh with 2 processes without a GPU (torchrun, gloo, DDP)."""
import os
import os.path as osp
import subprocess
import sys

import torch
from helpers import REPO_ROOT, config, scalars


def test_dist_train_two_cpu_processes(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'dist')
    # the tiny detection config plus a hook with which every rank saves its weights
    cfg = tmp_path / 'dist_config.py'
    cfg.write_text(f"_base_ = {config('tiny/retinanet_dualtoken_s_tiny.py')!r}\n"
                   "custom_imports = dict(imports=['mmdualtoken', 'mmdualtoken.engine', 'rank_weights_hook'])\n"
                   "custom_hooks = [dict(type='SaveRankWeightsHook')]\n")
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517', OMP_NUM_THREADS='1',
               PYTHONPATH=osp.dirname(osp.abspath(__file__)) + '/..', PYTHONWARNINGS='ignore')
    cmd = [osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
           str(cfg), '2', '--work-dir', work_dir,
           '--cfg-options', 'train_dataloader.dataset.indices=4',
           'train_dataloader.batch_size=1', 'val_dataloader.dataset.indices=2',
           'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
           'default_hooks.logger.interval=1', 'model.test_cfg.score_thr=0.0']
    proc = subprocess.run(cmd, cwd=tiny_workdir, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    log = proc.stdout + proc.stderr
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert 'find_unused_parameters' not in log or 'unused' not in proc.stderr
    # 4 images, 2 processes x batch 1: 2 iterations, each a DDP step over both ranks
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == 2
    rank0 = torch.load(osp.join(work_dir, 'rank0.pth'), weights_only=True)
    rank1 = torch.load(osp.join(work_dir, 'rank1.pth'), weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)

    # tools/dist_test.sh on the checkpoint, 2 processes
    cmd = [osp.join(REPO_ROOT, 'tools', 'dist_test.sh'), str(cfg),
           osp.join(work_dir, 'epoch_1.pth'), '2', '--work-dir', str(tmp_path / 'dist_test'),
           '--cfg-options', 'test_dataloader.dataset.indices=2', 'model.test_cfg.score_thr=0.0']
    proc = subprocess.run(cmd, cwd=tiny_workdir, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
