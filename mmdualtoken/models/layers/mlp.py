"""Channel MLPs: the FFN, the token MLP, and the paper's MixMLP."""
import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer

from .token_grid import resize_token_grid


class Mlp(nn.Module):
    """Linear(C, rC) -> activation -> Linear(rC, C) on the last axis."""

    def __init__(self, channels: int, mlp_ratio: float = 4., act_cfg: dict = dict(type='GELU')):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenMlp(nn.Module):
    """Pre-norm residual channel MLP on the global tokens G' (paper: "normal MLP").

    G_new = G' + MLP(LN(G')); the residual and its drop path are applied by the caller.
    """

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = Mlp(channels, mlp_ratio, act_cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, h, w, C) -> the residual branch, same shape."""
        return self.mlp(self.norm(tokens))


class MixMlp(nn.Module):
    """Paper's MixMLP: a token-mixing MLP over the spatial axis, then a channel MLP.

    Paper: token-mixing (MLP-Mixer) plus the channel MLP; the normal MLP is +0.1% top-1 with
    "a little" more FLOPs and params. Our choices: token mixing runs on the canonical grid
    (``grid_size``, tokens resized there and back when G' has another size), hidden width
    2x the token count; the channel MLP uses ratio ``mlp_ratio - 1`` (3 by default), which
    gives MixMLP fewer params and MACs than the normal MLP, as the paper reports.
    Returns the sum of both residual branches (the caller adds G').
    """

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 norm_cfg: dict = dict(type='LN'),
                 act_cfg: dict = dict(type='GELU'),
                 grid_size: tuple = (7, 7),
                 token_mix_ratio: float = 2.):
        super().__init__()
        self.grid_size = tuple(grid_size)
        num_tokens = self.grid_size[0] * self.grid_size[1]
        self.token_norm = build_norm_layer(norm_cfg, channels)[1]
        self.token_mix = Mlp(num_tokens, token_mix_ratio, act_cfg)
        self.channel_norm = build_norm_layer(norm_cfg, channels)[1]
        self.channel_mlp = Mlp(channels, mlp_ratio - 1, act_cfg)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, h, w, C) -> the residual branch, same shape."""
        B, h, w, C = tokens.shape
        y = resize_token_grid(self.token_norm(tokens), self.grid_size)
        gh, gw = self.grid_size
        # mix along the token axis: (B, C, N) @ Linear(N -> N)
        y = self.token_mix(y.reshape(B, gh * gw, C).transpose(1, 2)).transpose(1, 2)
        mixed = resize_token_grid(y.reshape(B, gh, gw, C), (h, w))
        tokens = tokens + mixed
        return mixed + self.channel_mlp(self.channel_norm(tokens))
