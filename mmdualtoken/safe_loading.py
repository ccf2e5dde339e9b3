"""Keep torch's safe checkpoint loading on, and make mmengine's own checkpoints load with it.

torch >= 2.6 loads with ``weights_only=True``: only tensors, containers and allow-listed
globals are unpickled. Every mmengine checkpoint holds its message hub: HistoryBuffer
objects (numpy arrays inside) and numpy scalars, so ``--resume``, ``tools/test.py CONFIG
CKPT`` and ``load_from`` fail with "Unsupported global". Importing mmdualtoken (which every
config does via ``custom_imports``) allow-lists exactly what those checkpoints contain:

* ``HistoryBuffer`` and numpy's array/scalar reconstruction (``ndarray``, ``dtype`` and
  its per-type classes, ``multiarray._reconstruct``, ``multiarray.scalar``, under numpy 2's
  and numpy 1's names);
* the statistics functions a HistoryBuffer pickles with its state (``HistoryBuffer.mean``
  and friends), which pickle refers to as ``getattr(HistoryBuffer, 'mean')``. Allowing the
  builtin ``getattr`` would let a pickle reach any attribute of anything, so that name is
  bound to :func:`history_buffer_statistic` instead, which returns only those functions.

weights_only is never switched off: a pickle naming any other global is still refused.
Where torch has no allow-list (torch < 2.4) nothing is registered: torch.load unpickles
fully by default there, as mmengine expects.
"""
import pickle

import numpy as np
from mmengine.logging.history_buffer import HistoryBuffer

from .compat import add_safe_globals


def history_buffer_statistic(owner, name: str):
    """``getattr`` restricted to ``HistoryBuffer``'s registered statistics functions."""
    if owner is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return HistoryBuffer._statistics_methods[name]
    raise pickle.UnpicklingError(
        f'Refusing getattr({owner!r}, {name!r}) while loading a checkpoint: only the '
        f'statistics of mmengine HistoryBuffer ({sorted(HistoryBuffer._statistics_methods)}) '
        'are allowed.')


def _numpy_globals() -> list:
    """numpy's reconstruction helpers under the names numpy 2 and numpy 1 pickle them."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    entries = [np.ndarray, np.dtype]
    # a dtype's state is restored on an instance of its class (numpy.dtypes.Float64DType, ...)
    numeric = np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'
    entries += sorted({type(np.dtype(code)) for code in numeric} - {np.dtype},
                      key=lambda cls: cls.__name__)
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries += [(multiarray._reconstruct, f'{module}._reconstruct'),
                    (multiarray.scalar, f'{module}.scalar')]
    return entries


MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer,
    *_numpy_globals(),
    (history_buffer_statistic, 'builtins.getattr'),
]


def allow_mmengine_checkpoints() -> bool:
    """Allow-list what mmengine's checkpoints contain for weights_only loading.

    Returns False where torch has no allow-list to extend (see :mod:`mmdualtoken.compat`).
    """
    HistoryBuffer()  # registers the default statistics (min, max, current, mean)
    return add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
