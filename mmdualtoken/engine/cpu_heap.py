"""CPU training: glibc's malloc keeps the memory one training step frees for the next.

A training iteration allocates and frees the same large tensors every time: the activations
kept for the backward, their gradients, the detector's feature maps. glibc's malloc serves
a request above its mmap threshold (128 KiB, raised up to 32 MiB as such blocks are freed)
with a fresh ``mmap`` that it unmaps on free, and it trims free memory off the top of its
heap. Each iteration then faults all that memory in again, page by page, zero-filled by the
kernel. :func:`keep_freed_cpu_memory` switches both off through ``mallopt`` (``M_MMAP_MAX``
= 0 and ``M_TRIM_THRESHOLD`` = -1, the values glibc documents as "no mmap" and "no
trimming"): freed memory stays in the heap; once the heap has grown to what an iteration
uses (in the first few iterations), each iteration reuses it without a fault.
The page faults, the speed-up and the memory it costs are measured by
tools/analysis/benchmark.py (docs/benchmark.md, the RetinaNet section).

It changes no result; it is process-wide and stays on. The price: the process stays at the
peak memory it has reached, which glibc would otherwise partly give back between steps.
PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) goes the same way by preloading
jemalloc or tcmalloc; this needs no extra library. Only glibc has ``mallopt`` with these
meanings: elsewhere (musl, macOS) nothing changes and the log says why. tools/train.py calls
it when training on the CPU (no CUDA device), unless ``--release-cpu-memory`` is given.
"""
import ctypes
import ctypes.util
import platform
from typing import Optional

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's default M_MMAP_MAX


def glibc_mallopt() -> Optional[ctypes._CFuncPtr]:
    """glibc's ``int mallopt(int param, int value)``, or None where the C library is not
    glibc or does not export it."""
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return None
    name = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return None
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_cpu_memory(logger: str = 'current') -> bool:
    """Make glibc's malloc keep freed memory for reuse (module docstring). True when both
    settings took effect; otherwise nothing is changed, the reason is logged, and False."""
    from mmengine.logging import print_log
    mallopt = glibc_mallopt()
    if mallopt is None:
        print_log(
            f'CPU memory: the C library is not glibc ({platform.system()}, '
            f'{platform.libc_ver()[0] or "unknown"}): malloc keeps its defaults.',
            logger=logger)
        return False
    # mallopt returns 1 on success, 0 on error; a refusal leaves the defaults in place
    refused = None
    if not mallopt(M_MMAP_MAX, 0):
        refused = 'M_MMAP_MAX, 0'
    elif not mallopt(M_TRIM_THRESHOLD, -1):
        refused = 'M_TRIM_THRESHOLD, -1'
        mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    if refused:
        print_log(
            f'CPU memory: glibc refused mallopt({refused}): malloc keeps its defaults.',
            logger=logger)
        return False
    print_log(
        'CPU memory: freed memory stays in the heap for the next iteration (glibc malloc, '
        'no mmap, no trimming): faster steps, the process stays at its peak memory; '
        '--release-cpu-memory turns this off.',
        logger=logger)
    return True
