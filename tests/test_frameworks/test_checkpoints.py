"""mmengine checkpoints under torch's safe loading: --resume, load_from and tools/test.py.

torch >= 2.6 loads with weights_only=True; without mmdualtoken's allow-list each of these
fails with "Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer".
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, checkpoints, config, run_tool, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the tools

TINY_CLS = config('tiny/dualtoken_s_in1k_tiny.py')
SHORT = [
    'train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
    'val_dataloader.dataset.indices=8', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=3'
]


def test_resume_load_from_and_test_with_safe_loading(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'run')
    run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        work_dir,
        '--cfg-options',
        *SHORT,
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        cwd=tiny_workdir)
    first = osp.join(work_dir, 'epoch_1.pth')
    checkpoint = torch.load(first, map_location='cpu')  # weights_only, with our allow-list
    assert 'message_hub' in checkpoint and 'optimizer' in checkpoint

    proc = run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        work_dir,
        '--resume',
        '--cfg-options',
        *SHORT,
        'train_cfg.max_epochs=2',
        'train_cfg.val_interval=1',
        cwd=tiny_workdir)
    assert 'resumed epoch: 1' in proc.stdout + proc.stderr
    assert checkpoints(work_dir) == ['epoch_1.pth', 'epoch_2.pth']

    other = str(tmp_path / 'load_from')
    proc = run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        other,
        '--cfg-options',
        *SHORT,
        f'load_from={first}',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        cwd=tiny_workdir)
    assert f'Load checkpoint from {first}' in proc.stdout + proc.stderr
    assert checkpoints(other) == ['epoch_1.pth']

    proc = run_tool(
        'test.py',
        TINY_CLS,
        osp.join(work_dir, 'epoch_2.pth'),
        '--work-dir',
        str(tmp_path / 'test'),
        '--cfg-options',
        'test_dataloader.dataset.indices=8',
        cwd=tiny_workdir)
    assert 'accuracy/top1' in proc.stdout + proc.stderr
    assert any('accuracy/top1' in r for r in scalars(work_dir))


def test_without_the_allow_list_the_checkpoint_is_refused(tiny_workdir, tmp_path):
    """The same checkpoint in a process that never imports mmdualtoken: torch refuses it."""
    work_dir = str(tmp_path / 'run')
    run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        work_dir,
        '--cfg-options',
        *SHORT,
        'train_dataloader.dataset.indices=4',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        cwd=tiny_workdir)
    code = ('import torch, sys; torch.load(sys.argv[1], map_location="cpu")')
    proc = subprocess.run([sys.executable, '-c', code,
                           osp.join(work_dir, 'epoch_1.pth')],
                          capture_output=True,
                          text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode != 0
    assert 'Weights only load failed' in proc.stderr
    assert 'Unsupported global' in proc.stderr
