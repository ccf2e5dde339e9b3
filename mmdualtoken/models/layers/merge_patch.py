"""LightViT's residual merge-patch block between stages."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from .token_grid import sizes_are_concrete, tokens_to_nchw


class ResidualMergePatch(nn.Module):
    """Halve the token map and change its width, as LightViT does (paper).

    Main path: each 2x2 neighbourhood is concatenated (4C) -> LayerNorm -> Linear(4C -> C').
    Residual path: 2x2 max-pool -> Linear(C -> C'). Odd sizes are padded (zeros for the
    concatenation; the max-pool uses ceil mode, so padding never wins a max), giving
    ceil(H/2) x ceil(W/2).

    Args:
        in_channels (int): C.
        out_channels (int): C'.
        norm_cfg (dict): Norm on the concatenated neighbourhood. Defaults to ``dict(type='LN')``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict = dict(type='LN')):
        super().__init__()
        self.norm = build_norm_layer(norm_cfg, 4 * in_channels)[1]
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)
        self.shortcut = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C')."""
        H, W = x.shape[1:3]
        nchw = tokens_to_nchw(x)
        pad = (0, W % 2, 0, H % 2)
        if sizes_are_concrete():
            pooled = F.max_pool2d(nchw, 2, 2, ceil_mode=True)
            if H % 2 or W % 2:
                nchw = F.pad(nchw, pad)
        else:
            # exporting: ONNX's ceil-mode pooling needs static sizes, so pad explicitly;
            # -inf never wins a max, which is what ceil mode computes
            pooled = F.max_pool2d(F.pad(nchw, pad, value=float('-inf')), 2, 2)
            nchw = F.pad(nchw, pad)
        merged = F.pixel_unshuffle(nchw, 2).permute(0, 2, 3, 1)
        return self.reduction(self.norm(merged)) + self.shortcut(pooled.permute(0, 2, 3, 1))
