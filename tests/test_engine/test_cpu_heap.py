"""CPU training keeps freed memory in glibc's heap (mmdualtoken/engine/cpu_heap.py)."""
import logging
import platform
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, tool_env

from mmdualtoken import launch
from mmdualtoken.engine import cpu_heap

# 64 MiB: above glibc's largest mmap threshold (32 MiB), so by default it is mmap'ed on every
# allocation and unmapped on free. With the heap kept, the first few allocations may still
# grow it: the tensor is allocated aligned (posix_memalign), whose split-off remainders and
# the small allocations in between leave the freed block just too small or not yet merged;
# measured in 60 fresh processes, the 5th allocation at the latest was the last to fault,
# after which every one reused freed memory. A training run reaches that steady state in its
# first iterations (docs/benchmark.md counts the faults per RetinaNet iteration after two).
FAULTS_OF_REALLOCATIONS = f'''
import resource, sys
sys.path.insert(0, {REPO_ROOT!r})
import torch
from mmdualtoken.engine.cpu_heap import keep_freed_cpu_memory
if sys.argv[1] == 'kept':
    assert keep_freed_cpu_memory(logger='silent')

def faults_of_one_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensor = torch.ones(64 * 2 ** 20 // 4)
    del tensor
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

for _ in range(8):  # to the steady state, in any mode
    faults_of_one_tensor()
print(*(faults_of_one_tensor() for _ in range(4)))
'''


def faults_of_reallocations(mode: str) -> list:
    """Page faults of each of 4 allocations of a 64 MiB tensor, each freed before the
    next, after 8 such allocations."""
    out = subprocess.run([sys.executable, '-c', FAULTS_OF_REALLOCATIONS, mode],
                         capture_output=True,
                         text=True,
                         check=True,
                         timeout=300,
                         env=tool_env())
    return [int(n) for n in out.stdout.split()[-4:]]


@pytest.mark.slow
def test_kept_heap_reuses_freed_memory_without_page_faults():
    """In the steady state, a freed 64 MiB tensor comes back without faulting its 16384
    pages in again, every time; with glibc's defaults every allocation faults them all."""
    pages = 64 * 2**20 // 4096
    assert min(faults_of_reallocations('released')) >= pages
    assert max(faults_of_reallocations('kept')) < pages // 20


class FakeMallopt:
    """Records mallopt calls; refuses the parameters in ``refuse``."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], refuse

    def __call__(self, param, value):
        self.calls.append((param, value))
        return 0 if param in self.refuse else 1


@pytest.fixture
def log(caplog):
    logger = logging.getLogger('test_cpu_heap')
    caplog.set_level(logging.INFO, logger='test_cpu_heap')
    return logger, caplog


def test_keep_sets_no_mmap_and_no_trimming(monkeypatch, log):
    logger, caplog = log
    mallopt = FakeMallopt()
    monkeypatch.setattr(cpu_heap, 'glibc_mallopt', lambda: mallopt)
    assert cpu_heap.keep_freed_cpu_memory(logger) is True
    assert mallopt.calls == [(cpu_heap.M_MMAP_MAX, 0), (cpu_heap.M_TRIM_THRESHOLD, -1)]
    assert '--release-cpu-memory turns this off' in caplog.text


def test_a_refused_setting_leaves_the_defaults(monkeypatch, log):
    logger, caplog = log
    mallopt = FakeMallopt(refuse=(cpu_heap.M_TRIM_THRESHOLD, ))
    monkeypatch.setattr(cpu_heap, 'glibc_mallopt', lambda: mallopt)
    assert cpu_heap.keep_freed_cpu_memory(logger) is False
    # M_MMAP_MAX went back to glibc's default: nothing is left half-applied
    assert mallopt.calls[-1] == (cpu_heap.M_MMAP_MAX, cpu_heap.DEFAULT_MMAP_MAX)
    assert 'glibc refused mallopt(M_TRIM_THRESHOLD, -1): malloc keeps its defaults' in caplog.text


def test_other_c_libraries_keep_their_defaults(monkeypatch, log):
    logger, caplog = log
    monkeypatch.setattr(platform, 'libc_ver', lambda *a, **k: ('', ''))
    assert cpu_heap.glibc_mallopt() is None
    assert cpu_heap.keep_freed_cpu_memory(logger) is False
    assert 'the C library is not glibc' in caplog.text and 'keeps its defaults' in caplog.text


def test_glibc_mallopt_is_found_on_this_linux():
    """The machines the suite runs on (Debian, CI) have glibc: the setting applies here."""
    assert platform.libc_ver()[0] == 'glibc' and callable(cpu_heap.glibc_mallopt())


class StopBeforeData(Exception):
    pass


@pytest.mark.parametrize('cuda, flag, kept', [(False, False, True), (False, True, False),
                                              (True, False, False)])
def test_train_keeps_freed_memory_only_on_the_cpu_and_unless_asked(monkeypatch, tmp_path, cuda,
                                                                   flag, kept):
    """tools/train.py: on the CPU by default; never with a CUDA device (GPU runs keep
    mmengine's standard set-up), nor with --release-cpu-memory."""
    calls = []
    monkeypatch.setattr(cpu_heap, 'keep_freed_cpu_memory', lambda: calls.append(1))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)

    def stop(*args):
        raise StopBeforeData

    monkeypatch.setattr(launch, 'check_dataset_paths', stop)
    argv = [f'{REPO_ROOT}/configs/tiny/dualtoken_s_in1k_tiny.py', '--work-dir', str(tmp_path)]
    with pytest.raises(StopBeforeData):
        launch.train_main(argv + ['--release-cpu-memory'] * flag)
    assert calls == [1] * kept
