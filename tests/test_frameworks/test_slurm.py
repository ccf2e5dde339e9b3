"""tools/slurm_train.sh and slurm_test.sh on a real Slurm: a single-node cluster (munge,
slurmctld, slurmd; tests/slurm_cluster.py) started by the test, 2 tasks through srun,
``--launcher slurm``, gloo on CPU.

The packages are installed when missing (as root, with apt-get); where they cannot be, the
tests fail in one line saying what to install, and ``-m "not slurm"`` leaves them out.
"""
import json
import os
import os.path as osp
import re
import stat
import subprocess
import sys

import pytest
import slurm_cluster
import torch
from helpers import (REPO_ROOT, checkpoints, config, free_port, run_process_tree, scalars,
                     why_it_failed)
from mmengine.config import Config

import mmdualtoken  # noqa: F401  (weights_only loading of the mmengine checkpoint)

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TINY = 'tiny/dualtoken_s_in1k_tiny.py'


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
    """A running single-node Slurm cluster (:class:`slurm_cluster.SlurmCluster`)."""
    slurm_cluster.ensure_slurm_installed()
    cluster = slurm_cluster.SlurmCluster(str(tmp_path_factory.mktemp('slurm')))
    try:
        cluster.start()
    except slurm_cluster.ClusterError as e:
        cluster.stop()
        pytest.fail(str(e), pytrace=False)
    yield cluster
    cluster.stop()


def test_slurm_train_and_test_two_tasks(slurm, tiny_workdir, tmp_path):
    work_dir = str(tmp_path / 'train')
    # the tiny classification config plus the hook with which every rank saves its
    # parameters and records its DDP wrapper (lists replace their base's: written out again)
    base = Config.fromfile(config(TINY))
    imports = [*base.custom_imports.imports, 'rank_weights_hook']
    hooks = [*base.get('custom_hooks', []), dict(type='SaveRankWeightsHook')]
    cfg = tmp_path / 'slurm_config.py'
    cfg.write_text(f'_base_ = {config(TINY)!r}\n'
                   f'custom_imports = dict(imports={imports!r})\n'
                   f'custom_hooks = {[dict(h) for h in hooks]!r}\n')
    # 2 tasks of 1 CPU each, no GPU asked for; --label prefixes each line with its task
    env = dict(
        slurm.env,
        PYTHON=sys.executable,
        GPUS='2',
        GPUS_PER_NODE='2',
        CPUS_PER_TASK='1',
        GRES='none',
        SRUN_ARGS='--label --time=10',
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS='1',
        PYTHONWARNINGS='ignore',
        PYTHONPATH=osp.dirname(osp.dirname(osp.abspath(__file__))))

    cmd = [
        osp.join(REPO_ROOT, 'tools', 'slurm_train.sh'), slurm_cluster.PARTITION, 'dualtoken-train',
        str(cfg), work_dir, '--cfg-options', 'train_dataloader.dataset.indices=8',
        'train_dataloader.batch_size=2', 'val_dataloader.dataset.indices=4',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1'
    ]
    proc = run_process_tree(cmd, cwd=tiny_workdir, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{why_it_failed(proc)}\n{slurm.logs()}'
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log, log[-8000:]
    # both ranks joined one gloo process group: each wrapped its model for DDP, and after
    # training they hold the same parameters
    ranks = {}
    for rank in range(2):
        with open(osp.join(work_dir, f'rank{rank}_ddp.json')) as f:
            ranks[rank] = json.load(f)
        assert ranks[rank] == dict(
            wrapper='CPUDistributedDataParallel', find_unused_parameters=False)
    rank0 = torch.load(osp.join(work_dir, 'rank0.pth'), weights_only=True)
    rank1 = torch.load(osp.join(work_dir, 'rank1.pth'), weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    # 8 images, 2 tasks x batch 2: 2 iterations
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == 2
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert 'epoch_1.pth' in checkpoints(work_dir)
    states = torch.load(checkpoint, map_location='cpu', weights_only=True)['random_states']
    assert len(states['ranks']) == 2  # gathered from both ranks by rank 0

    cmd = [
        osp.join(REPO_ROOT, 'tools', 'slurm_test.sh'), slurm_cluster.PARTITION, 'dualtoken-test',
        str(cfg), checkpoint, '--work-dir',
        str(tmp_path / 'test'), '--cfg-options', 'test_dataloader.dataset.indices=4'
    ]
    proc = run_process_tree(cmd, cwd=tiny_workdir, env=env, timeout=300)
    test_log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{why_it_failed(proc)}\n{slurm.logs()}'
    assert 'Distributed launcher: slurm' in test_log and 'GPU number: 2' in test_log
    metric = re.search(r'accuracy/top1: (\d+\.\d+)', test_log)
    assert metric and 0 <= float(metric.group(1)) <= 100, test_log[-8000:]

    print('\n'.join(line for line in log.splitlines() if re.search(
        r'Distributed launcher|Distributed training|GPU number|Saving checkpoint', line)))
    print(f'ranks: {ranks}; identical parameters after training: {len(rank0)} tensors')
    print(f'checkpoint: {checkpoint} (random states of {len(states["ranks"])} ranks)')
    print(next(line for line in test_log.splitlines() if 'accuracy/top1' in line))


def test_without_slurm_and_no_way_to_install_it_says_what_to_install(monkeypatch):
    monkeypatch.setattr(slurm_cluster, 'missing_programs', lambda: ['slurmctld', 'srun'])
    monkeypatch.setattr(slurm_cluster.os, 'geteuid', lambda: 1000)
    with pytest.raises(pytest.fail.Exception) as failed:
        slurm_cluster.ensure_slurm_installed()
    message = str(failed.value)
    assert '\n' not in message
    assert 'slurmctld, srun not found' in message and 'not root' in message
    assert 'apt-get install munge slurmctld slurmd slurm-client' in message
    assert '-m "not slurm"' in message


@pytest.mark.parametrize('script, fourth', [('slurm_train.sh', 'work_dir'),
                                            ('slurm_test.sh', 'ckpt.pth')])
def test_scripts_ask_for_gpus_unless_gres_none(tmp_path, script, fourth):
    """srun gets --gres and every task GPUS (the tools then stop where torch sees no GPU),
    or with GRES=none no --gres and MMDUALTOKEN_CPU=1, the CPU on purpose. CPUS_PER_TASK is
    by default the ImageNet config's 8 loader workers + 1, or what the user sets."""
    # an srun that prints its arguments, one a line, and on stderr what the tasks would get
    fake = tmp_path / 'srun'
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n'
                    'echo "GPUS=${GPUS-unset} MMDUALTOKEN_CPU=${MMDUALTOKEN_CPU-unset}" >&2\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    path = f'{tmp_path}{os.pathsep}{os.environ["PATH"]}'
    run = [
        osp.join(REPO_ROOT, 'tools', script), 'gpu', 'job',
        config('dualtoken_s_in1k.py'), fourth, '--cfg-options', 'a=1 2'
    ]
    unset = ('GPUS', 'MMDUALTOKEN_CPU', 'CPUS_PER_TASK')
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ['PYTHON'] = sys.executable
    done = subprocess.run(
        run, env=dict(environ, PATH=path), capture_output=True, text=True, check=True)
    default = done.stdout.splitlines()
    assert done.stderr.strip() == 'GPUS=8 MMDUALTOKEN_CPU=unset'
    assert default[:7] == [
        '--partition=gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
        '--cpus-per-task=9', '--kill-on-bad-exit=1'
    ]
    assert default[-3:] == ['--launcher=slurm', '--cfg-options', 'a=1 2']
    done = subprocess.run(
        run,
        env=dict(
            environ,
            PATH=path,
            GRES='none',
            GPUS='4',
            GPUS_PER_NODE='2',
            CPUS_PER_TASK='5',
            SRUN_ARGS='--time=5 -l'),
        capture_output=True,
        text=True,
        check=True)
    cpu = done.stdout.splitlines()
    assert done.stderr.strip() == 'GPUS=4 MMDUALTOKEN_CPU=1'
    assert not any(arg.startswith('--gres') for arg in cpu)
    assert cpu[2:8] == [
        '--ntasks=4', '--ntasks-per-node=2', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        '--time=5', '-l'
    ]
