"""The data checks before training run once per machine; every rank learns the outcome.

Two processes in a gloo process group stand in for the ranks of a distributed job; their
host names are set per test: both on one machine, or one on each of two machines. The
check writes a marker file, so the test sees which ranks ran it. The end-to-end form
(tools/dist_train.sh with bad data) is test_bad_data.py's.
"""
import os
import os.path as osp
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port

from mmdualtoken.datasets.checks import missing_files, once_per_node
from mmdualtoken.errors import BadDataError, LaunchError


def check(folder, rank, failing):
    """The stand-in check: leaves ``checked-<rank>``; fails the way ``failing[rank]`` says."""
    open(os.path.join(folder, f'checked-{rank}'), 'w').close()
    if failing.get(rank) == 'bad data':
        raise BadDataError('Bad data in train_dataloader.dataset (meta/train.txt): ...')
    if failing.get(rank) == 'bug':
        raise KeyError('an unexpected failure')


def rank_process(rank, folder, port, hosts, failing, nccl=False):
    socket.gethostname = lambda: hosts[rank]  # the machine this rank runs on
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=len(hosts))
    if nccl:  # stand-in for a job on GPUs: its default group is NCCL's
        dist.get_backend = lambda group=None: 'nccl'
        new_group = dist.new_group

        def recorded_new_group(**kwargs):
            with open(os.path.join(folder, f'group-{rank}'), 'w') as f:
                f.write(f"{kwargs['backend']} {kwargs['timeout'].total_seconds():g}")
            return new_group(**kwargs)

        dist.new_group = recorded_new_group
    try:
        once_per_node(check, folder, rank, failing)
        outcome = 'ok'
    except Exception as error:
        outcome = f'{type(error).__name__}: {error}'
    finally:
        dist.destroy_process_group()
    with open(os.path.join(folder, f'outcome-{rank}'), 'w') as f:
        f.write(outcome)


def run_ranks(folder, hosts, failing=None, nccl=False):
    mp.spawn(
        rank_process,
        args=(str(folder), free_port(), hosts, failing or {}, nccl),
        nprocs=len(hosts))
    checked = sorted(int(f.split('-')[1]) for f in os.listdir(folder) if f.startswith('checked'))
    outcomes = []
    for rank in range(len(hosts)):
        with open(folder / f'outcome-{rank}') as f:
            outcomes.append(f.read())
    return checked, outcomes


def test_one_machine_checks_once_and_every_rank_stops_with_its_error(tmp_path):
    checked, outcomes = run_ranks(tmp_path, ['node0', 'node0'], {0: 'bad data'})
    assert checked == [0]
    assert outcomes == [
        'BadDataError: Bad data in train_dataloader.dataset (meta/train.txt): '
        '...'
    ] * 2


def test_each_machine_checks_and_a_failure_anywhere_stops_every_rank(tmp_path):
    checked, outcomes = run_ranks(tmp_path, ['node0', 'node1'], {1: 'bug'})
    assert checked == [0, 1]  # node-local data is checked on every machine
    assert outcomes[1] == "KeyError: 'an unexpected failure'"  # its own, with its traceback
    assert outcomes[0] == ('LaunchError: the checks before training failed in rank 1 (node1): '
                           "KeyError: 'an unexpected failure'")


def test_under_nccl_the_ranks_wait_in_a_gloo_group_of_two_hours(tmp_path):
    """NCCL's watchdog would end a rank that waits longer than its timeout (10 minutes):
    the outcome goes through a gloo group made for it."""
    checked, outcomes = run_ranks(tmp_path, ['node0', 'node0'], {0: 'bad data'}, nccl=True)
    assert checked == [0] and all(o.startswith('BadDataError: ') for o in outcomes)
    for rank in range(2):
        assert (tmp_path / f'group-{rank}').read_text() == 'gloo 7200'


def test_good_data_lets_every_rank_go_on(tmp_path):
    assert run_ranks(tmp_path, ['node0', 'node0']) == ([0], ['ok', 'ok'])


def test_without_a_process_group_the_check_just_runs(tmp_path):
    with pytest.raises(BadDataError):
        once_per_node(check, str(tmp_path), 0, {0: 'bad data'})
    assert os.listdir(tmp_path) == ['checked-0']
    assert issubclass(BadDataError, LaunchError)


def test_missing_files_answers_as_isfile_does(tmp_path):
    """One listing per folder; what it does not show is asked of osp.isfile."""
    (tmp_path / 'a').mkdir()
    (tmp_path / 'a' / 'x.jpg').write_bytes(b'')
    (tmp_path / 'a' / 'dir.jpg').mkdir()  # a folder is not a file
    (tmp_path / 'a' / 'link.jpg').symlink_to(tmp_path / 'a' / 'x.jpg')
    (tmp_path / 'top.jpg').write_bytes(b'')
    # absolute names are kept as osp.join keeps them, a file at the root among them
    names = [
        'a/x.jpg', 'a/dir.jpg', 'a/link.jpg', 'a/gone.jpg', 'b/y.jpg', 'top.jpg',
        str(tmp_path / 'a' / 'x.jpg'), '/no-such-file-at-the-root.jpg'
    ]
    expected = [
        str(tmp_path / 'a' / 'dir.jpg'),
        str(tmp_path / 'a' / 'gone.jpg'),
        str(tmp_path / 'b' / 'y.jpg'), '/no-such-file-at-the-root.jpg'
    ]
    assert missing_files(str(tmp_path), names) == expected
    assert expected == [
        osp.join(str(tmp_path), n) for n in names if not osp.isfile(osp.join(str(tmp_path), n))
    ]  # the per-file answer
