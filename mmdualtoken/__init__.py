"""mmdualtoken: DualToken-ViT as an OpenMMLab backbone (mmpretrain, mmdet, mmseg).

``import mmdualtoken`` needs torch, mmengine and mmcv only. It registers
:class:`DualTokenViT` and :class:`TransposedConvFPN` in mmengine's root MODELS registry
(visible from the mmpretrain, mmdet and mmseg scopes alike) and allow-lists the types of
mmengine's checkpoints for torch's safe (weights_only) loading. The training pieces
(RandomStateHook, the CPU AMP optim wrapper, CPU distributed training) register with
``import mmdualtoken.engine``, which the configs list in their ``custom_imports``. Inside a
process that has imported mmdeploy (its tools load our configs), it also registers
mmdeploy's export rewriter of :mod:`mmdualtoken.deploy.mmdeploy_rewriters`; elsewhere it
imports no mmdeploy and changes nothing in torch.
"""
import sys

from .safe_loading import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from .models import DualTokenViT, TransposedConvFPN  # noqa: E402

if 'mmdeploy' in sys.modules:
    from .deploy import mmdeploy_rewriters  # noqa: E402, F401

__all__ = ['__version__', 'allow_mmengine_checkpoints', 'DualTokenViT', 'TransposedConvFPN']
