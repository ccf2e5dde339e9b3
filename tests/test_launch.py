"""mmdualtoken.launch.run_tool, the wrapper of tools/train.py, tools/test.py, the ONNX exporter
and the demo: a LaunchError or RunFault becomes one ``error:`` line and exit code 1; outside
a distributed run the process ends without the interpreter's final garbage collection, on
either path; a distributed run's process group is destroyed before the exit."""
import gc

import pytest

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
