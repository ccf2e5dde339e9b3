"""Two CPU processes (tools/dist_train.sh ... 2): one rank dies or hangs, the launch ends.

A rank that dies is noticed by torchrun's agent, which ends the others and reports the
failed rank. A rank that hangs (here: SIGSTOP) is not: the other waits in its next gloo
collective until the process-group timeout, which ``--dist-timeout`` sets
(env_cfg.dist_cfg.timeout; torch's default is 30 minutes), then stops with one error line, and
torchrun's agent sends the hung rank SIGTERM. A stopped process holds that signal until it
continues (torchrun would SIGKILL it after a 30 s grace); the test lets it continue.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT, alive, config, free_port, kill_tree, worker_pids

pytestmark = pytest.mark.slow  # fault injections in Runner trainings

DIST_TIMEOUT = 10  # seconds
SLACK = 60  # start-up of the error path, a loaded machine


def launch(tiny_workdir, tmp_path, *extra):
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(free_port()),
        OMP_NUM_THREADS='1',
        PYTHONWARNINGS='ignore',
        PYTHONUNBUFFERED='1')
    log = open(tmp_path / 'launch.log', 'w')
    cmd = [
        osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
        config('tiny/retinanet_dualtoken_s_tiny.py'),
        '2',
        '--work-dir',
        str(tmp_path / 'work'),
        *extra,
        '--cfg-options',
        # 2 processes x batch 1 x 16 images: 8 iterations per epoch, longer than the test
        'train_dataloader.dataset.indices=16',
        'train_dataloader.batch_size=1',
        'val_dataloader.dataset.indices=2',
        'train_cfg.max_epochs=4',
        'default_hooks.logger.interval=1'
    ]
    proc = subprocess.Popen(cmd, cwd=tiny_workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log
    return proc


def output(tmp_path):
    with open(tmp_path / 'launch.log') as f:
        return f.read()


def wait_for_training(proc, tmp_path, timeout=600):
    """Both ranks are inside the training loop (the first iteration was logged)."""
    deadline = time.monotonic() + timeout
    while 'Epoch(train) [1][1/' not in output(tmp_path):
        assert proc.poll() is None, f'the launch ended ({proc.returncode}):\n' \
            f'{output(tmp_path)[-4000:]}'
        assert time.monotonic() < deadline, f'no training in {timeout} s'
        time.sleep(0.1)
    ranks = worker_pids(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    return ranks


class Tracker:
    """The launches a test started and the workers seen below them: a worker whose torchrun
    has gone is no longer below it, so the pids are kept."""

    def __init__(self):
        self.procs, self.pids = [], set()

    def add(self, proc):
        self.procs.append(proc)

    def workers(self, ranks: dict) -> dict:
        self.pids.update(ranks.values())
        return ranks

    def end_all(self):
        for proc in self.procs:
            kill_tree(proc.pid)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)  # also ends a stopped process
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait()
            proc.log_file.close()


@pytest.fixture
def tracker():
    """End every process started by the test, whatever happened."""
    started = Tracker()
    yield started
    started.end_all()


def test_killed_rank_ends_the_launch(tiny_workdir, tmp_path, fault_report, tracker):
    proc = launch(tiny_workdir, tmp_path)
    tracker.add(proc)
    ranks = tracker.workers(wait_for_training(proc, tmp_path))
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    bound = SLACK
    try:
        returncode = proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the launch did not end within {bound} s of the kill:\n'
                    f'{output(tmp_path)[-4000:]}')
    waited = time.monotonic() - killed
    assert not alive(ranks[0])
    log = output(tmp_path)
    assert returncode == 1
    # torchrun's report: the root cause is rank 1, killed by SIGKILL
    root_cause = log.split('Root Cause (first observed failure):', 1)[1]
    assert re.search(r'rank\s+: 1 \(local_rank: 1\)\s+exitcode\s+: -9 \(pid: \d+\)\s+\(SIGKILL\)',
                     root_cause), root_cause
    print(f'launch ended {waited:.1f} s after the kill')
    fault_report(
        'distributed',
        fault='rank 1 of 2 killed (SIGKILL) during training (tools/dist_train.sh, CPU, gloo)',
        happened=f'torchrun stopped rank 0 (SIGTERM) and exited 1 within {bound} s; its report '
        "names the root cause: 'rank : 1 (local_rank: 1) exitcode : -9 (SIGKILL)'",
        lost='the iterations since the last checkpoint (`--resume` continues)')


def test_stopped_rank_times_out(tiny_workdir, tmp_path, fault_report, tracker):
    proc = launch(tiny_workdir, tmp_path, '--dist-timeout', str(DIST_TIMEOUT))
    tracker.add(proc)
    ranks = tracker.workers(wait_for_training(proc, tmp_path))
    os.kill(ranks[1], signal.SIGSTOP)  # hangs without dying: torchrun does not notice
    stopped = time.monotonic()
    survivor_bound = DIST_TIMEOUT + SLACK
    while alive(ranks[0]):
        assert time.monotonic() - stopped < survivor_bound, \
            f'rank 0 still waits {survivor_bound} s after rank 1 stopped:\n' \
            f'{output(tmp_path)[-4000:]}'
        time.sleep(0.1)
    survivor = time.monotonic() - stopped
    # torchrun's agent saw rank 0 fail and sends rank 1 SIGTERM, which it acts on once it
    # continues
    closing = f'Sending process {ranks[1]} closing signal SIGTERM'
    while closing not in output(tmp_path):
        assert time.monotonic() - stopped < survivor_bound + SLACK, \
            f'torchrun did not signal rank 1:\n{output(tmp_path)[-4000:]}'
        time.sleep(0.1)
    os.kill(ranks[1], signal.SIGCONT)
    try:
        returncode = proc.wait(timeout=SLACK)
    except subprocess.TimeoutExpired:
        pytest.fail(f'the launch did not end within {SLACK} s of rank 1 continuing:\n'
                    f'{output(tmp_path)[-4000:]}')
    total = time.monotonic() - stopped
    assert returncode == 1
    assert not alive(ranks[1])
    assert survivor >= DIST_TIMEOUT * 0.9  # it did wait for the timeout, not die of the stop
    errors = [line for line in output(tmp_path).splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, errors
    expected = ('error: rank 0 of 2: another process did not join a collective operation '
                f'within the distributed timeout ({DIST_TIMEOUT} s, --dist-timeout / '
                'env_cfg.dist_cfg.timeout): it hangs, was stopped or died. Look at the other '
                "ranks' output; raise --dist-timeout if a step can legitimately take longer.")
    assert errors[0].startswith(expected + ' ('), errors[0]
    print(f'rank 0 exited {survivor:.1f} s after rank 1 stopped, the launch {total:.1f} s')
    fault_report(
        'distributed',
        fault=f'rank 1 of 2 stopped (SIGSTOP: hangs without dying) during training, '
        f'`--dist-timeout {DIST_TIMEOUT}` (tools/dist_train.sh, CPU, gloo)',
        happened=f'rank 0 exited 1 within {survivor_bound} s with: {expected} (followed by '
        f"torch's message); torchrun then sent rank 1 SIGTERM and, once the stopped rank "
        'continued (SIGCONT) and acted on it, exited 1',
        lost='the iterations since the last checkpoint (`--resume` continues)')
