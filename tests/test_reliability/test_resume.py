"""--resume repeats an uninterrupted run bit for bit on CPU, in all three frameworks.

For each tiny config: one uninterrupted run, and the same run (same config, same schedule)
ended after a checkpoint and its validation (tests/stop_training_hook.py) and then continued
by ``tools/train.py --resume``. Every logged loss and every tensor of the final checkpoint
must be equal, bit for bit. Validation between the save and the resume point draws random
numbers (a val dataloader draws its base seed from torch's generator); RandomStateHook keeps
it out of the training stream. The segmentation run is iteration-based: on resume mmengine's
IterBasedTrainLoop fetches and discards the batches already trained, re-running their
augmentations, and the hook restores the states after that skip.
"""
import json
import os
import os.path as osp

import pytest
import torch
from helpers import REPO_ROOT, config, run_tool

import mmdualtoken  # noqa: F401  (weights_only loading of the mmengine checkpoint)

pytestmark = pytest.mark.slow  # fault injections in Runner trainings

SMALL = [
    'randomness.seed=0', 'randomness.deterministic=True', 'train_dataloader.dataset.indices=2',
    'train_dataloader.batch_size=1', 'val_dataloader.dataset.indices=2',
    'default_hooks.logger.interval=1'
]

# name: config, epoch- or iteration-based, length, where the first run stops, options
CASES = {
    'classification':
    dict(
        config='tiny/dualtoken_s_in1k_tiny.py',
        by_epoch=True,
        total=2,
        stop=1,
        what='classification (mmpretrain; RandAugment, Mixup/CutMix, drop path; epoch-based)',
        options=['default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=1']),
    'detection':
    dict(
        config='tiny/retinanet_dualtoken_s_tiny.py',
        by_epoch=True,
        total=2,
        stop=1,
        what='detection (mmdet RetinaNet; epoch-based)',
        options=['default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=1']),
    'segmentation':
    dict(
        config='tiny/fpn_dualtoken_s_ade20k_tiny.py',
        by_epoch=False,
        total=4,
        stop=2,
        what='segmentation (mmseg Semantic FPN; iteration-based, InfiniteSampler)',
        options=['default_hooks.checkpoint.interval=2', 'train_cfg.val_interval=2']),
}


def stoppable_config(tmp_path, name: str) -> str:
    """The config plus StopTrainingHook (first of custom_hooks, off unless told)."""
    path = tmp_path / 'stoppable.py'
    path.write_text(f'_base_ = {config(name)!r}\n'
                    "custom_imports = dict(imports=_base_.custom_imports['imports'] + "
                    "['stop_training_hook'], allow_failed_imports=False)\n"
                    "custom_hooks = [dict(type='StopTrainingHook')] + _base_.custom_hooks\n")
    return str(path)


def runs(work_dir):
    """For each run in ``work_dir``, in the order they ran: its logged [(iteration, loss)]
    and the steps (epochs or iterations) after which it validated."""
    found = []
    for run in sorted(
            d for d in os.listdir(work_dir)
            if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json'))):
        with open(osp.join(work_dir, run, 'vis_data', 'scalars.json')) as f:
            records = [json.loads(line) for line in f if line.strip()]
        found.append(([(r['iter'], r['loss']) for r in records
                       if 'loss' in r], [r['step'] for r in records if 'loss' not in r]))
    return found


def state_dict(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


@pytest.mark.parametrize('case', list(CASES))
def test_resumed_run_repeats_uninterrupted_run(tiny_workdir, tmp_path, fault_report, case):
    c = CASES[case]
    cfg = stoppable_config(tmp_path, c['config'])
    unit, length = ('epoch', 'max_epochs') if c['by_epoch'] else ('iter', 'max_iters')
    options = [*SMALL, *c['options'], f'train_cfg.{length}={c["total"]}']
    stop = f'custom_hooks.0.{"epoch" if c["by_epoch"] else "iteration"}={c["stop"]}'
    env = dict(
        PYTHONPATH=os.pathsep.join(
            p for p in (osp.join(REPO_ROOT, 'tests'), os.environ.get('PYTHONPATH')) if p))

    def train(work_dir, *args):
        proc = run_tool('train.py', cfg, '--work-dir', work_dir, *args, cwd=tiny_workdir, env=env)
        return proc.stdout + proc.stderr

    whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
    train(whole, '--cfg-options', *options)
    train(split, '--cfg-options', *options, stop)
    # it ended at that checkpoint
    assert sorted(
        f for f in os.listdir(split)
        if f.endswith('.pth') and not f.startswith('best_')) == [f'{unit}_{c["stop"]}.pth']
    log = train(split, '--resume', '--cfg-options', *options)
    assert 'Restored the random states of rank 0 of the checkpoint' in log
    if not c['by_epoch']:
        assert f'after the {c["stop"]} batches the loop skips' in log

    ((uninterrupted, validated), ) = runs(whole)
    (first, validated_first), (resumed, validated_resumed) = runs(split)
    # both validated between the save and the resume point
    assert validated == validated_first + validated_resumed == [c['stop'], c['total']]
    iters_per_epoch = 2 if c['by_epoch'] else 1  # 2 images, batch 1
    assert len(uninterrupted) == c['total'] * iters_per_epoch
    assert len(first) == c['stop'] * iters_per_epoch
    assert first + resumed == uninterrupted  # exact float equality, iteration by iteration

    final = f'{unit}_{c["total"]}.pth'
    expected, got = state_dict(osp.join(whole, final)), state_dict(osp.join(split, final))
    assert list(got) == list(expected)
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []

    where = f'epoch {c["stop"]}' if c['by_epoch'] else f'iteration {c["stop"]}'
    fault_report(
        'resume',
        fault=f'{c["what"]}: stopped after {where} and resumed with --resume '
        '(validation in between)',
        happened=f'{len(uninterrupted)} of {len(uninterrupted)} logged losses and all '
        f'{len(expected):,} state-dict tensors of the final checkpoint bitwise equal to the '
        'uninterrupted run',
        lost='nothing')
