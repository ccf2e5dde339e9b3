"""mmdualtoken: DualToken-ViT as an OpenMMLab backbone (mmpretrain, mmdet, mmseg)."""
from .version import __version__

__all__ = ['__version__']
