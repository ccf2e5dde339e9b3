from .transposed_conv_fpn import TransposedConvFPN

__all__ = ['TransposedConvFPN']
