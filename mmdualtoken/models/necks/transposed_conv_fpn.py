"""FPN over DualToken-ViT's stride 8/16/32 maps plus a stride-4 level made by upsampling.

Registered in mmengine's root MODELS registry, like the backbone, so that importing
mmdualtoken needs neither mmdet nor mmseg: mmdet's registry finds the class through its
parent. mmdet is imported when the neck is built (Mask R-CNN configs), not before.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS


@MODELS.register_module()
class TransposedConvFPN(BaseModule):
    """An FPN whose first level is a transposed-conv upsampling of the stride-8 map.

    DualToken-ViT (like LightViT) has no stride-4 stage, while Mask R-CNN's RPN and RoI heads
    expect P2..P6. LightViT's detection code adds such a level with a transposed convolution;
    ours: ConvTranspose2d(C0 -> C0, 2x2, stride 2) + norm + activation on the first input,
    then mmdet's FPN over [that, *inputs].

    Args:
        in_channels (Sequence[int]): Channels of the backbone outputs (stride 8, 16, 32).
        out_channels (int): FPN width.
        num_outs (int): Outputs (P2 upwards). Defaults to 5.
        norm_cfg (dict): Norm after the transposed conv. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation after it. Defaults to ``dict(type='GELU')``.
        **fpn_kwargs: Passed on to :class:`mmdet.models.necks.FPN`.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int = 5,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg=None,
                 **fpn_kwargs):
        super().__init__(init_cfg=init_cfg)
        try:
            from mmdet.models.necks import FPN
        except ImportError as e:
            raise ImportError('TransposedConvFPN builds on mmdet\'s FPN: install mmdet '
                              f'(pip install "mmdualtoken[det]"); importing it failed: {e}') from e
        first = in_channels[0]
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(first, first, kernel_size=2, stride=2),
            build_norm_layer(norm_cfg, first)[1], build_activation_layer(act_cfg))
        self.fpn = FPN([first, *in_channels], out_channels, num_outs, **fpn_kwargs)

    def forward(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return self.fpn([self.upsample(inputs[0]), *inputs])
