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
fully by default there, as mmengine expects (its Runner's --resume, load_from).

Our own code that reads a checkpoint (the backbone's ``init_cfg=Pretrained`` for a local
file, the ONNX exporter, the checkpoint converter) loads with :func:`load_checkpoint_safely`.
On torch < 2.4, torch's weights-only unpickler has no allow-list to extend and refuses every
mmengine checkpoint; there the same allow-list (torch's weights-only globals plus
:data:`MMENGINE_CHECKPOINT_GLOBALS`) is enforced by :class:`AllowListUnpickler`, the
standard restriction of ``pickle.Unpickler.find_class``.
"""
import _compat_pickle
import codecs
import pickle

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from .compat import add_safe_globals, has_safe_globals


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
    entries += sorted(
        {type(np.dtype(code))
         for code in numeric} - {np.dtype}, key=lambda cls: cls.__name__)
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


def _global_name(entry) -> tuple:
    """(object, 'module.name') of an allow-list entry: an object or (object, name)."""
    if isinstance(entry, tuple):
        return entry
    return entry, f'{entry.__module__}.{entry.__qualname__}'


class AllowListUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals: torch's own weights-only list
    (``torch._weights_only_unpickler._get_allowed_globals``, present in the torch releases
    that need this class) and :data:`MMENGINE_CHECKPOINT_GLOBALS`. Any other global raises
    ``pickle.UnpicklingError`` naming it, before anything of it runs. torch.load passes
    storages to its own wrapper before this ``find_class`` is asked."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed = _allow_list()

    def find_class(self, module: str, name: str):
        # protocol 2 (torch.save's) names builtins the Python 2 way: __builtin__.getattr
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f'{module}.{name}'
        if key not in self.allowed:
            raise pickle.UnpicklingError(f'Unsupported global: GLOBAL {key} is not in the '
                                         'allow-list of mmdualtoken.safe_loading')
        return self.allowed[key]


def _allow_list() -> dict:
    from torch import _weights_only_unpickler
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    # protocol 2 writes bytes (numpy scalars' data) as _codecs.encode(str, 'latin1'); torch's
    # own allow-list has it from 2.4 on
    allowed['_codecs.encode'] = codecs.encode
    HistoryBuffer()  # registers the default statistics (min, max, current, mean)
    allowed.update((name, obj) for obj, name in map(_global_name, MMENGINE_CHECKPOINT_GLOBALS))
    return allowed


class _AllowListPickleModule:
    """What torch.load needs of a ``pickle_module``."""
    Unpickler = AllowListUnpickler
    __name__ = 'mmdualtoken.safe_loading'

    @staticmethod
    def load(file, **kwargs):
        return AllowListUnpickler(file, **kwargs).load()


def allow_list_fallback_available() -> bool:
    """torch exposes its weights-only allow-list (every torch release we support does)."""
    from torch import _weights_only_unpickler
    return callable(getattr(_weights_only_unpickler, '_get_allowed_globals', None))


def load_with_allow_list(path, map_location='cpu'):
    """torch.load through :class:`AllowListUnpickler` (the fallback of
    :func:`load_checkpoint_safely`; tested on every torch)."""
    return torch.load(
        path, map_location=map_location, pickle_module=_AllowListPickleModule, weights_only=False)


def load_checkpoint_safely(path, map_location='cpu'):
    """Load a checkpoint file with torch's weights-only unpickler; where torch has no
    allow-list (< 2.4) and refuses the file, with the same allow-list in
    :class:`AllowListUnpickler`. Never a full unpickle: a pickle naming any other global
    raises ``pickle.UnpicklingError`` ("Unsupported global: GLOBAL <name>")."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if has_safe_globals() or not allow_list_fallback_available():
            raise
    return load_with_allow_list(path, map_location)
