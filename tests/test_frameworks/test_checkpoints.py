"""mmengine checkpoints under torch's safe loading (torch >= 2.6 loads with weights_only=True).

Without mmdualtoken's allow-list, loading one fails with "Unsupported global: GLOBAL
mmengine.logging.history_buffer.HistoryBuffer". Here: ``load_from`` and a process that never
imports mmdualtoken. The other ways in load the same way and are run elsewhere: ``--resume``
in tests/test_reliability/test_resume.py, tools/test.py in tests/test_readme.py.
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, checkpoints, config, run_tool

import mmdualtoken  # noqa: F401  (its allow-list, for torch.load below)

pytestmark = pytest.mark.slow  # Runner trainings through the tools

TINY_CLS = config('tiny/dualtoken_s_in1k_tiny.py')
ONE_ITERATION = [
    'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=4',
    'val_dataloader.dataset.indices=4', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'
]


def test_load_from_and_a_process_without_the_allow_list(tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'run')
    run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        work_dir,
        '--cfg-options',
        *ONE_ITERATION,
        cwd=tiny_workdir)
    first = osp.join(work_dir, 'epoch_1.pth')
    checkpoint = torch.load(first, map_location='cpu')  # weights_only, with our allow-list
    assert 'message_hub' in checkpoint and 'optimizer' in checkpoint

    other = str(tmp_path / 'load_from')
    proc = run_tool(
        'train.py',
        TINY_CLS,
        '--work-dir',
        other,
        '--cfg-options',
        *ONE_ITERATION,
        f'load_from={first}',
        cwd=tiny_workdir)
    assert f'Load checkpoint from {first}' in proc.stdout + proc.stderr
    assert checkpoints(other) == ['best_accuracy_top1_epoch_1.pth', 'epoch_1.pth']  # save_best

    # the same checkpoint in a process that never imports mmdualtoken: torch refuses it
    code = ('import torch, sys; torch.load(sys.argv[1], map_location="cpu")')
    proc = subprocess.run([sys.executable, '-c', code, first],
                          capture_output=True,
                          text=True,
                          cwd=REPO_ROOT)
    assert proc.returncode != 0
    assert 'Weights only load failed' in proc.stderr
    assert 'Unsupported global' in proc.stderr
