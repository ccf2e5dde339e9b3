"""mmdualtoken.launch.run_tool, the wrapper of tools/train.py, tools/test.py, the ONNX exporter
and the demo: a LaunchError or RunFault becomes one ``error:`` line and exit code 1; outside
a distributed run the process ends without the interpreter's final garbage collection, on
either path; a distributed run's process group is destroyed before the exit."""
import gc

import pytest
from helpers import config

from mmdualtoken.errors import BadConfigError, LaunchError, RunFault
from mmdualtoken.launch import run_tool


@pytest.fixture
def unfrozen():
    """run_tool freezes this test process's objects: hand them back to the collector."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_tool_that_ends_well_leaves_its_objects_to_the_system(unfrozen):
    ran = []
    run_tool(lambda: ran.append(True))
    assert ran == [True]
    assert gc.get_freeze_count() > 0


@pytest.mark.parametrize('error', [BadConfigError('unknown arch'), RunFault('diverged')])
def test_a_launch_error_or_run_fault_is_one_line_and_exit_code_1(unfrozen, error):
    assert isinstance(error, (LaunchError, RunFault))

    def main():
        raise error

    with pytest.raises(SystemExit) as stopped:
        run_tool(main)
    assert stopped.value.code == f'error: {error}'  # printed to stderr, exit code 1
    assert gc.get_freeze_count() > 0


def test_other_exceptions_pass_through_with_their_traceback(unfrozen):

    def main():
        raise ValueError('a bug, not a user error')

    with pytest.raises(ValueError, match='a bug'):
        run_tool(main)


def test_a_distributed_run_destroys_its_process_group_before_the_exit(unfrozen):
    """In a process group the exit is not frozen, and once main ended well the group is
    destroyed before run_tool returns, even though a reference cycle (as the runner's DDP
    wrapper makes) still held it: left to the interpreter's finalization, gloo can abort."""
    import weakref

    import torch.distributed as dist
    from helpers import free_port
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    group = weakref.ref(dist.group.WORLD)

    def main():
        runner = dict(group=dist.group.WORLD)
        runner['self'] = runner  # freed only by a collection
        dist.barrier()

    gc.disable()  # no collection but the ones run_tool makes
    try:
        run_tool(main)
        assert not dist.is_initialized()
        assert group() is None
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_launch_error_in_a_process_group_destroys_it_before_the_exit(unfrozen):
    """The data checks run in the process group (once per machine): a LaunchError there exits
    with the group destroyed, as a run that ended well does, not left to finalization."""
    import torch.distributed as dist
    from helpers import free_port
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)

    def main():
        raise BadConfigError('bad data')

    try:
        with pytest.raises(SystemExit, match='error: bad data'):
            run_tool(main)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_default_timeouts_are_torchs_per_backend():
    """30 minutes on gloo; NCCL's own default (10 minutes since torch 2.2) where torch has
    one: what a run without --dist-timeout waits."""
    from torch.distributed import constants

    from mmdualtoken.launch import default_timeout
    assert default_timeout('gloo') == 1800
    nccl = getattr(constants, 'default_pg_nccl_timeout', None)
    assert default_timeout('nccl') == (1800 if nccl is None else nccl.total_seconds())
    if nccl is not None:
        assert default_timeout('nccl') == 600


def test_a_gloo_timeout_without_dist_timeout_names_the_backends_default():
    """The one-line fault of a waiting gloo rank (the error as torch 2.14's gloo raises it)."""
    import torch.distributed as dist
    from helpers import free_port
    from mmengine.config import Config

    from mmdualtoken.errors import DistributedTimeoutError
    from mmdualtoken.launch import distributed_timeout_as_fault
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    try:
        with pytest.raises(DistributedTimeoutError) as fault:
            with distributed_timeout_as_fault(Config()):
                raise RuntimeError('[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:'
                                   '78] Timed out waiting 1800000ms for recv operation to '
                                   'complete')
        message = str(fault.value)
        assert '\n' not in message and message.startswith('rank 0 of 1: another process')
        assert "(torch's default on gloo, 1800 s, --dist-timeout" in message
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('name, split, cpus', [('dualtoken_s_in1k.py', 'train', 9),
                                               ('dualtoken_s_in1k.py', 'test', 9),
                                               ('retinanet_dualtoken_s.py', 'train', 3),
                                               ('tiny/dualtoken_s_in1k_tiny.py', 'train', 1)])
def test_cpus_per_task_are_the_process_and_its_loader_workers(name, split, cpus):
    from mmdualtoken.launch import cpus_per_task
    assert cpus_per_task(config(name), split) == cpus


def test_on_gpus_the_process_group_is_mmengines_init_dist(monkeypatch):
    """join_process_group, which the data checks need before the Runner, on a GPU node
    (stand-in: torch.cuda.is_available True, mmengine's init_dist recorded): the Runner's own
    call, init_dist(launcher, **env_cfg.dist_cfg); nothing for launcher none."""
    import mmengine.dist
    import torch
    from mmengine.config import Config

    from mmdualtoken.launch import join_process_group
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(mmengine.dist, 'init_dist', lambda launcher, **kwargs: calls.append(
        (launcher, kwargs)))
    dist_cfg = dict(backend='nccl', timeout=600)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dist_cfg)))
    join_process_group(cfg)
    assert calls == [('pytorch', dist_cfg)]
    assert 'model_wrapper_cfg' not in cfg  # mmengine's DDP wrapper stays
    join_process_group(Config(dict(launcher='none')))
    assert len(calls) == 1
