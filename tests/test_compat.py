"""Every torch feature newer than torch 2.1 has a fallback, and the fallbacks work.

The fallbacks are what torch 2.1 runs (tools/compat_matrix.sh runs the backbone suite there);
here each one is exercised on the installed torch, and each feature test is shown to pick
the fallback when the modern API is missing (a stand-in module without the attribute).
"""
from types import SimpleNamespace

import torch

from mmdualtoken import compat

WITHOUT_ANYTHING = SimpleNamespace()


def test_is_compiling_falls_back_to_dynamo():
    assert compat._select_is_compiling(WITHOUT_ANYTHING) is compat._is_compiling_dynamo
    modern = getattr(torch.compiler, 'is_compiling', None)
    assert compat.is_compiling is (modern or compat._is_compiling_dynamo)
    assert compat._is_compiling_dynamo() is False
    seen = []

    def probe(x):
        seen.append(compat._is_compiling_dynamo())
        return x + 1

    torch.compile(probe, backend='eager')(torch.ones(2))
    assert seen == [True]  # dynamo's own flag, seen while compiling


def test_is_exporting_falls_back_to_is_compiling():
    assert compat._select_is_exporting(WITHOUT_ANYTHING) is compat.is_compiling
    seen = []

    class Probe(torch.nn.Module):

        def forward(self, x):
            seen.append((compat.is_compiling(), compat.is_exporting(), compat.is_tracing()))
            return x * 2

    torch.export.export(Probe(), (torch.ones(2), ))
    # torch.export traces with dynamo: the fallback (is_compiling) sees it too
    assert seen and all(all(flags) for flags in seen)


def test_is_tracing_sees_the_torchscript_tracer():
    seen = []

    def probe(x):
        seen.append(compat.is_tracing())
        return x + 1

    torch.jit.trace(probe, torch.ones(2), check_trace=False)
    assert seen == [True] and compat.is_tracing() is False


def torch_takes_autocast_device() -> bool:
    try:
        torch.is_autocast_enabled('cpu')
    except TypeError:
        return False
    return True


def test_cpu_autocast_readers_see_autocast():
    readers = [compat._cpu_autocast_enabled_legacy]
    if torch_takes_autocast_device():  # the modern form exists on this torch
        readers.append(compat._cpu_autocast_enabled_device)
    assert compat.cpu_autocast_enabled is readers[-1]
    for reader in readers:
        assert reader() is False
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert reader() is True


def test_cpu_autocast_falls_back_without_the_device_argument():

    def without_device(*args):  # torch 2.1's signature
        if args:
            raise TypeError('is_autocast_enabled() takes 0 positional arguments')
        return False

    assert compat._select_cpu_autocast_enabled(without_device) is \
        compat._cpu_autocast_enabled_legacy
    assert compat._select_cpu_autocast_enabled(lambda device: False) is \
        compat._cpu_autocast_enabled_device


def test_without_an_allow_list_nothing_is_registered():
    """torch < 2.4 has no add_safe_globals: nothing to register, importing still works."""
    assert compat.has_safe_globals(WITHOUT_ANYTHING) is False
    assert compat.add_safe_globals([object], WITHOUT_ANYTHING) is False


def test_allow_list_is_registered_where_torch_has_one():
    from mmengine.logging import HistoryBuffer

    from mmdualtoken.safe_loading import allow_mmengine_checkpoints
    has_allow_list = hasattr(torch.serialization, 'add_safe_globals')
    assert compat.has_safe_globals() is has_allow_list
    assert allow_mmengine_checkpoints() is has_allow_list
    if has_allow_list:
        assert HistoryBuffer in torch.serialization.get_safe_globals()
