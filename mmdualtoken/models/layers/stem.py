"""LightViT's convolutional stem (overall stride 8)."""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer


class ConvStem(nn.Module):
    """The stem of LightViT, which DualToken-ViT uses unchanged (paper).

    conv3x3 s2 (in -> C/2) + BN + GELU; two depthwise conv3x3 s1, each + BN + GELU;
    depthwise conv3x3 s2 + BN + GELU; conv3x3 s2 (C/2 -> C); LayerNorm. Every stride uses
    padding 1, so an H x W image becomes a ceil(H/8) x ceil(W/8) map.

    Args:
        in_channels (int): Image channels.
        out_channels (int): Channels C of the first stage.
        conv_norm_cfg (dict): Norm after the convolutions. Defaults to ``dict(type='BN')``.
        norm_cfg (dict): Norm on the output tokens. Defaults to ``dict(type='LN')``.
        act_cfg (dict): Activation. Defaults to ``dict(type='GELU')``.

    Returns (forward):
        Tensor: tokens in channels-last layout, shape (B, H/8, W/8, C).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 conv_norm_cfg: dict = dict(type='BN'),
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = out_channels // 2

        def conv(cin, cout, stride, groups=1):
            return ConvModule(
                cin,
                cout,
                3,
                stride=stride,
                padding=1,
                groups=groups,
                norm_cfg=conv_norm_cfg,
                act_cfg=act_cfg)

        self.layers = nn.Sequential(
            conv(in_channels, hidden, 2),
            conv(hidden, hidden, 1, groups=hidden),
            conv(hidden, hidden, 1, groups=hidden),
            conv(hidden, hidden, 2, groups=hidden),
            nn.Conv2d(hidden, out_channels, 3, stride=2, padding=1),
        )
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x.contiguous(memory_format=torch.channels_last))
        # channels_last NCHW permuted to NHWC is a contiguous view: no copy.
        return self.norm(x.permute(0, 2, 3, 1))
