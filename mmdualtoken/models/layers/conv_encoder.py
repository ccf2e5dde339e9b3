"""The local branch: a ConvNeXt block (paper: "Conv Encoder")."""
import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer

from .token_grid import tokens_to_nchw


class ConvEncoder(nn.Module):
    """ConvNeXt block without its residual: DW 7x7 -> LN -> Linear(C, rC) -> GELU -> Linear(rC, C).

    The paper says the Conv Encoder "has the same structure as the ConvNeXt block". Our
    choice: no layer scale (docs/architecture.md); the caller adds the residual and
    drop path, as for every other branch.

    Args:
        channels (int): Token width C.
        mlp_ratio (float): Hidden width ratio r. Defaults to 4.
        kernel_size (int): Depthwise kernel. Defaults to 7.
        norm_cfg (dict): Defaults to ``dict(type='LN')``.
        act_cfg (dict): Defaults to ``dict(type='GELU')``.
    """

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 kernel_size: int = 7,
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.dwconv = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.fc1 = nn.Linear(channels, hidden)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        x = self.dwconv(tokens_to_nchw(x)).permute(0, 2, 3, 1)
        return self.fc2(self.act(self.fc1(self.norm(x))))
