"""mmdualtoken.launch.run_tool, the wrapper of tools/train.py, tools/test.py, the ONNX exporter
and the demo: a LaunchError or RunFault becomes one ``error:`` line and exit code 1, and the
process ends without the interpreter's final garbage collection, on either path (outside a
distributed run)."""
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


def test_a_distributed_run_leaves_its_process_group_and_is_collected_as_usual(unfrozen):
    """In a process group the exit keeps its last collection (it ends gloo's threads, which
    otherwise abort the exit); the group is left once main ended well."""
    import torch.distributed as dist
    from helpers import free_port
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    try:
        run_tool(lambda: dist.barrier())
        assert not dist.is_initialized()
        assert gc.get_freeze_count() == 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
