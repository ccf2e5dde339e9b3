"""A training process killed (SIGKILL) at any moment resumes to the uninterrupted result.

The tiny detection config resumes bit for bit (test_resume.py): 4 images, batch 2, three
epochs of two iterations, a checkpoint every epoch and only the newest kept
(``max_keep_ckpts=1``, mmengine's worst case: it removed the old checkpoint before writing
the new one). The configs' AtomicCheckpointHook writes checkpoint and ``last_checkpoint``
atomically and removes the outdated checkpoint last.
"""
import os
import os.path as osp
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO_ROOT, config, kill_tree, run_tool, tool_env
from mmengine.config import Config

import mmdualtoken  # noqa: F401  (weights_only loading of mmengine checkpoints)

pytestmark = pytest.mark.slow  # fault injections in Runner trainings

CONFIG = config('tiny/retinanet_dualtoken_s_tiny.py')
OPTIONS = [
    'randomness.seed=0',
    'randomness.deterministic=True',
    'train_dataloader.dataset.indices=4',
    'train_dataloader.batch_size=2',
    'val_dataloader.dataset.indices=2',
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1',
    'default_hooks.checkpoint.max_keep_ckpts=1',
    # no validation before the end: it draws random numbers (test_resume.py)
    'train_cfg.max_epochs=3',
    'train_cfg.val_interval=3'
]
TESTS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
HOOKS_ENV = dict(PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get('PYTHONPATH', '')]))


def train(work_dir, *extra, cfg=CONFIG, **kwargs):
    return run_tool('train.py', cfg, '--work-dir', str(work_dir), *extra, '--cfg-options', *OPTIONS,
                    **kwargs)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def pointer(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def assert_same_weights(path, reference):
    final = weights(path)
    assert final.keys() == reference.keys()
    different = [k for k in final if not torch.equal(final[k], reference[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'
    return len(final)


@pytest.fixture(scope='module')
def uninterrupted(tiny_workdir, tmp_path_factory):
    """The final weights of the run without a fault."""
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    train(work_dir, cwd=tiny_workdir)
    return weights(osp.join(work_dir, 'epoch_3.pth'))


def resume_and_compare(tiny_workdir, work_dir, uninterrupted):
    proc = train(work_dir, '--resume', cwd=tiny_workdir)
    log = proc.stdout + proc.stderr
    assert 'Restored the random states of rank 0 of the checkpoint' in log
    return log, assert_same_weights(osp.join(work_dir, 'epoch_3.pth'), uninterrupted)


def test_kill_at_a_random_moment(tiny_workdir, tmp_path, uninterrupted, fault_report):
    work_dir = tmp_path / 'killed'
    delay = random.uniform(0.0, 3.0)  # after the first checkpoint: inside epoch 2 or 3
    with open(tmp_path / 'killed.log', 'w') as log:
        proc = subprocess.Popen([
            sys.executable,
            osp.join(REPO_ROOT, 'tools', 'train.py'), CONFIG, '--work-dir',
            str(work_dir), '--cfg-options', *OPTIONS
        ],
                                cwd=tiny_workdir,
                                env=tool_env(),
                                stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not (osp.isfile(work_dir / 'last_checkpoint')
                       and pointer(work_dir) == 'epoch_1.pth'):
                assert proc.poll() is None, f'the run ended before its first checkpoint ' \
                    f'({proc.returncode}):\n{open(tmp_path / "killed.log").read()[-4000:]}'
                assert time.monotonic() < deadline, 'no first checkpoint in 600 s'
                time.sleep(0.05)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            kill_tree(proc.pid)
            proc.wait()
    # the kill came before the end, or the test proves nothing
    assert not osp.exists(work_dir / 'epoch_3.pth'), \
        f'the run finished within {delay:.2f} s of its first checkpoint: nothing was killed'
    named = pointer(work_dir)
    assert named in ('epoch_1.pth', 'epoch_2.pth')
    assert weights(work_dir / named)  # complete: it loads

    log, count = resume_and_compare(tiny_workdir, work_dir, uninterrupted)
    assert f'Auto resumed from the latest checkpoint {work_dir / named}' in log
    fault_report(
        'kill',
        fault='tools/train.py killed (SIGKILL) at a random moment after its first checkpoint '
        '(tiny detection config, a checkpoint every epoch, max_keep_ckpts=1)',
        happened='last_checkpoint named a complete checkpoint; `--resume` continued from it; '
        f'final weights bitwise equal to the uninterrupted run (all {count} tensors)',
        lost='the iterations since the last checkpoint (re-run)')


@pytest.mark.parametrize('target', ['epoch_2.pth', 'last_checkpoint'])
def test_kill_while_saving(tiny_workdir, tmp_path, uninterrupted, fault_report, target):
    # the tiny config plus the hook that kills the process during the save of epoch 2
    base = Config.fromfile(CONFIG).to_dict()
    cfg = tmp_path / 'kill_during_save.py'
    cfg.write_text(
        f'_base_ = {CONFIG!r}\n'
        f"custom_imports = dict(imports={base['custom_imports']['imports'] + ['fault_hooks']!r})\n"
        f"custom_hooks = {base['custom_hooks']!r} + "
        f"[dict(type='KillDuringSaveHook', epoch=2, target={target!r})]\n")
    work_dir = tmp_path / 'killed'
    proc = train(work_dir, cfg=str(cfg), cwd=tiny_workdir, env=HOOKS_ENV, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-4000:]

    # the kill happened mid-save: the half-written file is there under its temporary name
    left = sorted(os.listdir(work_dir))
    temp = [f for f in left if f.startswith(target + '.tmp-')]
    assert len(temp) == 1, left
    with pytest.raises(Exception):
        torch.load(work_dir / temp[0], map_location='cpu', weights_only=True)
    # what --resume reads is intact: the pointer names the previous, complete checkpoint
    assert pointer(work_dir) == 'epoch_1.pth'
    assert torch.load(
        work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)['meta']['epoch'] == 1
    # killed while writing the checkpoint, there is no epoch_2.pth; while writing the
    # pointer, epoch_2.pth is complete and epoch_1.pth not yet removed
    assert (target == 'last_checkpoint') == osp.isfile(work_dir / 'epoch_2.pth')
    if target == 'last_checkpoint':
        assert weights(work_dir / 'epoch_2.pth')

    log, count = resume_and_compare(tiny_workdir, work_dir, uninterrupted)
    assert f'Auto resumed from the latest checkpoint {work_dir / "epoch_1.pth"}' in log
    assert 'Removed 1 temporary file(s) of a save that did not finish' in log
    assert not any('.tmp-' in f for f in os.listdir(work_dir))
    written = ('epoch_2.pth (the file half written)' if target == 'epoch_2.pth' else
               'last_checkpoint, after epoch_2.pth was complete (the file half written)')
    fault_report(
        'kill',
        fault=f'tools/train.py killed (SIGKILL) while writing {written}',
        happened='epoch_1.pth and last_checkpoint (naming it) intact, the half-written file '
        'only under a temporary name; `--resume` removed it and continued from '
        f'epoch_1.pth; final weights bitwise equal to the uninterrupted run (all '
        f'{count} tensors)',
        lost='the iterations since epoch_1.pth (re-run)')


def test_resume_pointer_to_missing_checkpoint(tiny_workdir, tmp_path, fault_report):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(b'')  # what is there is listed, not loaded
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_2.pth'))
    proc = train(work_dir, '--resume', cwd=tiny_workdir, check=False)
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error == (f"error: --resume: {work_dir / 'last_checkpoint'} names "
                     f"'{work_dir / 'epoch_2.pth'}', which does not exist; checkpoints in "
                     f"{work_dir}: epoch_1.pth; resume from one of them explicitly (--resume "
                     f"{work_dir / 'epoch_1.pth'}) or delete {work_dir / 'last_checkpoint'} "
                     'to start over')
    fault_report(
        'kill',
        fault='`--resume` with a last_checkpoint naming a checkpoint that no longer exists '
        '(removed by hand)',
        happened='stopped before building anything with: ' +
        error.replace(str(work_dir), '<work_dir>'),
        lost='nothing')
