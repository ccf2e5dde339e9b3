"""The torch features newer than torch 2.1 that the package uses, each with its fallback.

mmdualtoken supports torch >= 2.1 (README, "Supported environments"). Every call into a torch
API that 2.1 lacks goes through this module: a feature test picks the modern API where it
exists and a fallback with the same meaning where it does not. The fallbacks are plain
functions, so the tests run them on any torch (tests/test_compat.py), and the matrix in
tools/compat_matrix.sh runs the whole backbone suite on torch 2.1.

====================================  ===============================================
feature (absent in torch 2.1)         fallback
====================================  ===============================================
torch.compiler.is_compiling()         torch._dynamo.is_compiling()
torch.compiler.is_exporting()         is_compiling(): torch.export traces with dynamo
torch.is_autocast_enabled(device)     torch.is_autocast_cpu_enabled() for 'cpu'
torch.serialization.add_safe_globals  nothing to allow-list: torch.load has no
                                      allow-list there and defaults to full unpickling
====================================  ===============================================
"""
import torch

__all__ = [
    'is_compiling', 'is_exporting', 'is_tracing', 'cpu_autocast_enabled', 'has_safe_globals',
    'add_safe_globals'
]


# ---------------------------------------------------------------- compilation and export
def _is_compiling_dynamo() -> bool:
    """Fallback where torch.compiler.is_compiling is missing: dynamo's own flag, which
    dynamo itself evaluates to True while it traces (no getattr/hasattr here: dynamo 2.1
    cannot trace those on a module)."""
    return bool(torch._dynamo.is_compiling())


def _select_is_compiling(compiler=getattr(torch, 'compiler', None)):
    modern = getattr(compiler, 'is_compiling', None)
    return modern if modern is not None else _is_compiling_dynamo


is_compiling = _select_is_compiling()


def _select_is_exporting(compiler=getattr(torch, 'compiler', None)):
    modern = getattr(compiler, 'is_exporting', None)
    return modern if modern is not None else is_compiling


is_exporting = _select_is_exporting()


def is_tracing() -> bool:
    """True while a graph meant for every input size is recorded: TorchScript tracing or
    scripting (torch.onnx.export with dynamo=False, the exporter mmdeploy uses) and
    torch.export (torch.onnx.export with dynamo=True).

    Shape-dependent Python shortcuts must not run then: TorchScript tracing bakes the branch
    taken at the example size into the graph, torch.export turns it into a guard. (Under
    ``torch.compile(dynamic=False)`` sizes are concrete and a new size compiles a new graph.)
    """
    return torch.jit.is_tracing() or torch.jit.is_scripting() or is_exporting()


# ---------------------------------------------------------------- autocast
def _cpu_autocast_enabled_legacy() -> bool:
    """Fallback where is_autocast_enabled() takes no device (torch 2.1)."""
    return bool(torch.is_autocast_cpu_enabled())


def _cpu_autocast_enabled_device() -> bool:
    return bool(torch.is_autocast_enabled('cpu'))


def _select_cpu_autocast_enabled(probe=torch.is_autocast_enabled):
    try:
        probe('cpu')
    except TypeError:  # no device argument (torch 2.1)
        return _cpu_autocast_enabled_legacy
    return _cpu_autocast_enabled_device


cpu_autocast_enabled = _select_cpu_autocast_enabled()


# ---------------------------------------------------------------- safe loading
def has_safe_globals(serialization=torch.serialization) -> bool:
    """Whether torch's weights-only unpickler takes an allow-list (not in torch 2.1)."""
    return hasattr(serialization, 'add_safe_globals')


def add_safe_globals(entries: list, serialization=torch.serialization) -> bool:
    """Allow-list ``entries`` for weights-only loading; False where torch has no allow-list.

    Where torch has no allow-list there is nothing to extend: ``torch.load`` defaults to
    full unpickling there, which is how mmengine loads its checkpoints on such torch.
    """
    if not has_safe_globals(serialization):
        return False
    serialization.add_safe_globals(entries)
    return True
