"""--resume repeats an uninterrupted run bit for bit on CPU (tiny detection config).

The tiny classification config does not yet: its first resumed loss differs (1.3668 vs
1.3378 in one run) although the generators are restored; something in mmpretrain's
RandAugment / Mixup / CutMix path keeps state outside them (open on the reliability issue).

Iteration-based runs (the segmentation configs) do not: on resume mmengine's
IterBasedTrainLoop fetches and discards the already-trained batches, which runs their random
augmentations again after the hook has restored the generators; no hook runs between that
skip and the next batch.
"""
import json
import os
import os.path as osp

import pytest
from helpers import config, run_tool

DETERMINISTIC = ['randomness.seed=0', 'randomness.deterministic=True',
                 'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
                 'val_dataloader.dataset.indices=2', 'default_hooks.logger.interval=1',
                 'default_hooks.checkpoint.interval=1',
                 'default_hooks.checkpoint.max_keep_ckpts=3',
                 # validation draws from the generators too: only after the last epoch
                 'train_cfg.val_interval=2']


def losses_per_run(work_dir):
    runs = sorted(d for d in os.listdir(work_dir) if osp.isfile(
        osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    result = []
    for run in runs:
        with open(osp.join(work_dir, run, 'vis_data', 'scalars.json')) as f:
            result.append([(r['iter'], r['loss']) for r in map(json.loads, f) if 'loss' in r])
    return result


@pytest.mark.parametrize('name', ['tiny/retinanet_dualtoken_s_tiny.py'])
def test_resumed_run_repeats_uninterrupted_losses(tiny_workdir, tmp_path, name):
    whole = str(tmp_path / 'whole')
    run_tool('train.py', config(name), '--work-dir', whole, '--cfg-options', *DETERMINISTIC,
             'train_cfg.max_epochs=2', cwd=tiny_workdir)
    split = str(tmp_path / 'split')
    run_tool('train.py', config(name), '--work-dir', split, '--cfg-options', *DETERMINISTIC,
             'train_cfg.max_epochs=1', cwd=tiny_workdir)
    proc = run_tool('train.py', config(name), '--work-dir', split, '--resume',
                    '--cfg-options', *DETERMINISTIC, 'train_cfg.max_epochs=2',
                    cwd=tiny_workdir)
    assert 'Restored the random states of rank 0 of the checkpoint' in proc.stdout + proc.stderr

    (uninterrupted, ) = losses_per_run(whole)
    first, resumed = losses_per_run(split)
    assert len(uninterrupted) == 4 and len(first) == 2 and len(resumed) == 2
    assert first + resumed == uninterrupted  # exact float equality, iteration by iteration
