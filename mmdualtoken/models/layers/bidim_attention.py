"""LightViT's bi-dimensional (channel + spatial) attention, applied after the FFN."""
import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer


class BiDimAttention(nn.Module):
    """Gate the FFN output by a channel gate and a spatial gate (LightViT, used by the paper).

    y = LN(x); g = GELU(Linear(C, C/4)(mean_tokens(y))); l = GELU(Linear(C, C/4)(y));
    channel gate = sigmoid(Linear(C/4, C)(g)); spatial gate = sigmoid(Linear(C/2, 1)([l, g]));
    output = x * channel gate * spatial gate.

    The spatial gate's Linear over the concatenation [l, g] is computed as two halves (its
    weight split into the local and the global part), so the global vector is never copied
    to every token; the maths is the same.

    Args:
        channels (int): Token width C.
        reduction (int): C / reduction hidden width. Defaults to 4.
        norm_cfg (dict): Defaults to ``dict(type='LN')``.
        act_cfg (dict): Defaults to ``dict(type='GELU')``.
    """

    def __init__(self,
                 channels: int,
                 reduction: int = 4,
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = channels // reduction
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.global_reduce = nn.Linear(channels, hidden)
        self.local_reduce = nn.Linear(channels, hidden)
        self.act = build_activation_layer(act_cfg)
        self.channel_select = nn.Linear(hidden, channels)
        self.spatial_select = nn.Linear(2 * hidden, 1)  # used through its split weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        y = self.norm(x)
        g = self.act(self.global_reduce(y.mean(dim=(1, 2), keepdim=True)))  # (B, 1, 1, C/4)
        local = self.act(self.local_reduce(y))  # (B, H, W, C/4)
        channel_gate = torch.sigmoid(self.channel_select(g))
        w_local, w_global = self.spatial_select.weight.chunk(2, dim=1)
        spatial_logit = (local @ w_local.t()) + (g @ w_global.t() + self.spatial_select.bias)
        return x * channel_gate * torch.sigmoid(spatial_logit)
