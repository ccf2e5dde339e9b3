"""mmdualtoken: DualToken-ViT as an OpenMMLab backbone (mmpretrain, mmdet, mmseg).

Importing the package registers :class:`DualTokenViT` in mmengine's root MODELS registry
(visible from the mmpretrain, mmdet and mmseg scopes alike) and allow-lists the types of
mmengine's checkpoints for torch's safe (weights_only) loading.
"""
from .safe_loading import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import engine  # noqa: E402,F401  (CPU DDP wrapper, RandomStateHook)
from .models import *  # noqa: E402,F401,F403

__all__ = ['__version__', 'allow_mmengine_checkpoints']
