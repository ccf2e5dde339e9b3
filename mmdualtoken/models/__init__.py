from .backbones import DualTokenViT
from .necks import TransposedConvFPN

__all__ = ['DualTokenViT', 'TransposedConvFPN']
