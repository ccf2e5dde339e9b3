"""Window self-attention: the paper's ablation alternative to the Conv Encoder."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from .attention import MultiheadSelfAttention
from .token_grid import sizes_are_concrete


class WindowSelfAttention(nn.Module):
    """LayerNorm then multi-head self-attention inside non-overlapping windows.

    The paper compares this local branch with its Conv Encoder (-0.8% top-1). Our choice:
    7x7 windows without shift; maps are zero-padded (after the norm) to a multiple of the
    window, as Swin does for its unshifted windows, and cropped back.

    Args:
        channels (int): Token width C.
        num_heads (int): Heads.
        window_size (int): Window side. Defaults to 7.
        norm_cfg (dict): Defaults to ``dict(type='LN')``.
    """

    def __init__(self,
                 channels: int,
                 num_heads: int,
                 window_size: int = 7,
                 norm_cfg: dict = dict(type='LN')):
        super().__init__()
        self.window_size = window_size
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.attn = MultiheadSelfAttention(channels, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C) (the branch output, without residual)."""
        B, H, W, C = x.shape
        s = self.window_size
        x = self.norm(x)
        pad_h, pad_w = (-H) % s, (-W) % s
        if not sizes_are_concrete() or pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        windows = x.view(B, Hp // s, s, Wp // s, s, C).transpose(2, 3).reshape(-1, s * s, C)
        out = self.attn(windows).view(B, Hp // s, Wp // s, s, s, C).transpose(2, 3)
        return out.reshape(B, Hp, Wp, C)[:, :H, :W]
