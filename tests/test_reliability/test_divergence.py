"""A loss that turns NaN stops the run (or skips the step) and never reaches a checkpoint.

Each test runs tools/train.py on a tiny config with a test hook (tests/fault_hooks.py) that
makes one loss term NaN inside the model's own loss output at iteration 3, before the
backward pass and the optimizer step, so the optimizer sees what a diverging run gives it.
A checkpoint is due after every epoch (detection, classification) or every iteration
(segmentation), so a checkpoint would follow the bad step at once. Under DDP
(tools/dist_train.sh, 2 processes) the loss of one rank turns NaN, in both FiniteLossHook
modes.
"""
import glob
import json
import os
import os.path as osp
import re
import sys

import pytest
import torch
from helpers import REPO_ROOT, config, free_port, run_process_tree, run_tool, scalars
from mmengine.config import Config

import mmdualtoken  # noqa: F401  (weights_only loading of mmengine checkpoints)

pytestmark = pytest.mark.slow  # fault injections in Runner trainings

TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
HOOKS_ENV = dict(PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get('PYTHONPATH', '')]))
COMMON = [  # 2 iterations per epoch
    'train_dataloader.dataset.indices=2', 'train_dataloader.batch_size=1',
    'val_dataloader.dataset.indices=2', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=1'
]
# config, options, the loss term made NaN, the checkpoint written before iteration 3
FRAMEWORKS = {
    'mmdet':
    ('tiny/retinanet_dualtoken_s_tiny.py', ['train_cfg.max_epochs=2',
                                            'train_cfg.val_interval=2'], 'loss_cls', 'epoch_1.pth'),
    'mmseg': ('tiny/fpn_dualtoken_s_ade20k_tiny.py',
              ['train_cfg.max_iters=4',
               'train_cfg.val_interval=4'], 'decode.loss_ce', 'iter_2.pth'),
    'mmpretrain':
    ('tiny/dualtoken_s_in1k_tiny.py', ['train_cfg.max_epochs=2',
                                       'train_cfg.val_interval=2'], 'loss', 'epoch_1.pth'),
}


def fault_config(tmp_path, name, *hooks, on_nonfinite='stop'):
    """The tiny config with FiniteLossHook in the given mode and the test hooks added."""
    base = Config.fromfile(config(name)).to_dict()
    custom_hooks = [
        dict(h, on_nonfinite=on_nonfinite) if h['type'] == 'FiniteLossHook' else h
        for h in base['custom_hooks']
    ]
    assert any(h['type'] == 'FiniteLossHook' for h in custom_hooks)  # the configs have it
    path = tmp_path / 'fault_config.py'
    path.write_text(
        f'_base_ = {config(name)!r}\n'
        f"custom_imports = dict(imports={base['custom_imports']['imports'] + ['fault_hooks']!r})\n"
        f'custom_hooks = {custom_hooks + list(hooks)!r}\n')
    return str(path)


def train(cfg, work_dir, options, tiny_workdir, check):
    return run_tool(
        'train.py',
        cfg,
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        *COMMON,
        *options,
        cwd=tiny_workdir,
        env=HOOKS_ENV,
        check=check)


def checkpoint_files(work_dir):
    return sorted(f for f in os.listdir(work_dir) if '.pth' in f)


def pointer(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def all_finite(path):
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def without_figures(line):
    """The error line with the finite loss values (they vary with the CPU) left out."""
    return re.sub(r'=-?\d[\d.e+-]*', '=<finite>', line)


@pytest.mark.parametrize('framework', list(FRAMEWORKS))
def test_nan_loss_stops(tiny_workdir, tmp_path, fault_report, framework):
    name, options, term, good = FRAMEWORKS[framework]
    cfg = fault_config(tmp_path, name, dict(type='PoisonLossHook', iteration=3, term=term))
    work_dir = tmp_path / 'work'
    proc = train(cfg, work_dir, options, tiny_workdir, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    error = proc.stderr.strip().splitlines()[-1]
    where = 'iteration 3' if framework == 'mmseg' else 'iteration 3 (epoch 2)'
    assert error.startswith(f'error: Training diverged at {where}: non-finite loss ('), error
    assert f'{term}=nan' in error and 'loss=nan' in error
    assert error.endswith('Stopped before any checkpoint held these weights: the last '
                          'checkpoint saved is the last good one. Lower the learning rate, '
                          'clip gradients (optim_wrapper.clip_grad) or skip such steps '
                          "(FiniteLossHook on_nonfinite='skip')."), error
    # the checkpoint of the last good step is the only one, and last_checkpoint names it
    assert checkpoint_files(work_dir) == [good]
    assert pointer(work_dir) == good
    assert all_finite(work_dir / good)
    fault_report(
        'divergence',
        fault=f'{term} becomes NaN at iteration 3 ({framework} tiny config, a checkpoint '
        f'due after it)',
        happened=f'stopped at iteration 3 (exit 1), {good} (finite) stays the last '
        f'checkpoint; printed: {without_figures(error)}',
        lost='the iterations since the last checkpoint (their weights diverged)')


def test_nan_loss_skip_mode(tiny_workdir, tmp_path, fault_report):
    name, options, term, _ = FRAMEWORKS['mmdet']
    cfg = fault_config(
        tmp_path, name, dict(type='PoisonLossHook', iteration=3, term=term), on_nonfinite='skip')
    work_dir = tmp_path / 'work'
    proc = train(cfg, work_dir, options, tiny_workdir, check=True)
    log = proc.stdout + proc.stderr
    warning = re.search(r'FiniteLossHook: non-finite loss .*', log).group(0)
    assert warning.startswith('FiniteLossHook: non-finite loss (loss=nan, loss_cls=nan, '
                              'loss_bbox='), warning
    assert warning.endswith('at iteration 3 (epoch 2); optimizer step skipped, weights '
                            'unchanged (1 skipped so far).'), warning
    assert log.count('FiniteLossHook:') == 1
    # the step of iteration 3 left weights and optimizer state bit for bit as they were
    with open(work_dir / 'nonfinite_iteration.json') as f:
        record = json.load(f)
    assert record == dict(
        iteration=3, params_unchanged=True, optimizer_state_unchanged=True, params_finite=True)
    # training went on to the end
    assert checkpoint_files(work_dir) == ['epoch_2.pth'] and all_finite(work_dir / 'epoch_2.pth')
    fault_report(
        'divergence',
        fault=f"{term} becomes NaN at iteration 3 with FiniteLossHook on_nonfinite='skip' "
        '(mmdet tiny config)',
        happened='the step of iteration 3 skipped (weights and optimizer state bitwise '
        'unchanged), training finished, epoch_2.pth finite; one warning: ' +
        without_figures(warning),
        lost='one optimizer step')


def test_nonfinite_weights_never_saved(tiny_workdir, tmp_path, fault_report):
    name, options, _, good = FRAMEWORKS['mmdet']
    param = 'bbox_head.retina_cls.weight'
    cfg = fault_config(tmp_path, name, dict(type='CorruptWeightHook', iteration=4, name=param))
    work_dir = tmp_path / 'work'
    proc = train(cfg, work_dir, options, tiny_workdir, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-4000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error == ('error: Refusing to save the checkpoint of epoch 2, iteration 4: 1 weight '
                     f'tensor(s) hold NaN or Inf (first: {param}); the last checkpoint saved '
                     'is the last good one.')
    assert checkpoint_files(work_dir) == [good] and pointer(work_dir) == good
    assert all_finite(work_dir / good)
    fault_report(
        'divergence',
        fault='a weight becomes NaN with a finite loss (iteration 4, the end of epoch 2, '
        'mmdet tiny config)',
        happened=f'the checkpoint of epoch 2 was not written, {good} stays the last '
        f'checkpoint; stopped (exit 1) with: {error}',
        lost='the iterations since the last checkpoint (their weights diverged)')


def dist_train_poisoned(tiny_workdir, tmp_path, on_nonfinite: str):
    """tools/dist_train.sh, 2 processes, the tiny detection config with FiniteLossHook in
    ``on_nonfinite`` mode; rank 1's loss_cls turns NaN at iteration 1 (of 2)."""
    work_dir = str(tmp_path / f'dist_{on_nonfinite}')
    base = Config.fromfile(config('tiny/retinanet_dualtoken_s_tiny.py'))
    imports = [*base.custom_imports.imports, 'rank_weights_hook', 'fault_hooks']
    hooks = [
        dict(h, on_nonfinite=on_nonfinite) if h['type'] == 'FiniteLossHook' else dict(h)
        for h in base.custom_hooks
    ]
    assert any(h['type'] == 'FiniteLossHook' for h in hooks)
    hooks += [
        dict(type='SaveRankWeightsHook'),
        dict(type='PoisonLossHook', iteration=1, term='loss_cls', rank=1)
    ]
    cfg = tmp_path / f'dist_{on_nonfinite}_config.py'
    cfg.write_text(f"_base_ = {config('tiny/retinanet_dualtoken_s_tiny.py')!r}\n"
                   f"custom_imports = dict(imports={imports!r})\n"
                   f"custom_hooks = {hooks!r}\n")
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(free_port()),
        OMP_NUM_THREADS='1',
        PYTHONPATH=osp.dirname(osp.abspath(__file__)) + '/..',
        PYTHONWARNINGS='ignore')
    cmd = [
        osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
        str(cfg), '2', '--work-dir', work_dir, '--cfg-options',
        'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=1',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=2', 'default_hooks.logger.interval=1'
    ]
    return work_dir, run_process_tree(cmd, cwd=tiny_workdir, env=env, timeout=600)


def test_dist_train_skip_mode_skips_the_step_on_every_rank(tiny_workdir, tmp_path, fault_report):
    """on_nonfinite='skip' under DDP: DDP's all-reduce carries rank 1's NaN into rank 0's
    gradients, so rank 0 (finite loss) skips the same step: no rank waits for another, the
    weights stay equal on both ranks and unchanged by that step, and training goes on."""
    work_dir, proc = dist_train_poisoned(tiny_workdir, tmp_path, 'skip')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    # rank 0 (whose log is the console) saw a finite loss and NaN gradients, and skipped
    assert re.search(
        r'FiniteLossHook: non-finite gradients with a finite loss \(loss=[\d.]+, '
        r'.*\) at iteration 1 \(epoch 1\); optimizer step skipped, weights '
        r'unchanged \(1 skipped so far\)\.', log), log[-6000:]
    # rank 1, poisoned: its step left weights and optimizer state as they were
    with open(osp.join(work_dir, 'nonfinite_iteration.json')) as f:
        record = json.load(f)
    assert record == dict(
        iteration=1, params_unchanged=True, optimizer_state_unchanged=True, params_finite=True)
    # both ranks went on to iteration 2 and ended with the same finite weights
    rank0 = torch.load(osp.join(work_dir, 'rank0.pth'), weights_only=True)
    rank1 = torch.load(osp.join(work_dir, 'rank1.pth'), weights_only=True)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
        assert torch.isfinite(rank0[key]).all(), key
    assert len([r for r in scalars(work_dir) if 'loss' in r]) == 2
    fault_report(
        'divergence',
        fault="loss_cls becomes NaN on rank 1 of 2 at iteration 1 with FiniteLossHook "
        "on_nonfinite='skip' (tools/dist_train.sh, DDP over gloo, mmdet tiny config)",
        happened='rank 0, whose loss was finite, got the NaN through the gradient all-reduce '
        'and skipped the same step; rank 1\'s weights and optimizer state bitwise '
        'unchanged by it; both ranks went on and ended with equal, finite weights',
        lost='one optimizer step')


def test_dist_train_stop_mode_ends_every_rank_with_the_reason(tiny_workdir, tmp_path, fault_report):
    """on_nonfinite='stop' (the configs' default) under DDP: rank 1 stops with its one-line
    error, torchrun ends rank 0 (no rank waits out the distributed timeout), nothing is
    saved."""
    work_dir, proc = dist_train_poisoned(tiny_workdir, tmp_path, 'stop')
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert ('error: Training diverged at iteration 1 (epoch 1): non-finite loss (loss=nan, '
            'loss_cls=nan, loss_bbox=') in proc.stderr, proc.stderr[-6000:]
    assert not glob.glob(osp.join(work_dir, '*.pth'))
    fault_report(
        'divergence',
        fault='loss_cls becomes NaN on rank 1 of 2 at iteration 1 (tools/dist_train.sh, DDP '
        'over gloo, mmdet tiny config, FiniteLossHook stop mode as the configs set it)',
        happened='rank 1 stopped with its one-line error (Training diverged at iteration 1 '
        '...), torchrun ended rank 0 at once (exit 1, no rank waited for the '
        'distributed timeout), no checkpoint written',
        lost='the run since its last checkpoint')
