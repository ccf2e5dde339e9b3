"""The Dual Token Block: local branch, global-token branch, fusion, FFN + BiDim attention."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from .bidim_attention import BiDimAttention
from .conv_encoder import ConvEncoder
from .drop_path import ResidualDropPath
from .global_token_module import GlobalTokenModule
from .mlp import Mlp
from .window_attention import WindowSelfAttention


class DualTokenBlock(nn.Module):
    """One Dual Token Block (paper, Fig. 2), drop path on every residual branch::

        X_local = X + ConvEncoder(X)                  (or window self-attention, ablation)
        X_glob, G_new = GlobalTokenModule(X_local, G) (absent when global_tokens='none')
        X = X_local + X_glob                          fusion by addition (paper)
        X = X + BiDimAttn(FFN(LN(X)))                 BiDim attention after the FFN (paper)

    Args:
        channels (int): Token width C.
        num_heads (int): Attention heads.
        downsample_steps (int): M of the Position-aware Token Module.
        mlp_ratio (float): Ratio of the Conv Encoder, token MLP and FFN. Defaults to 4.
        local_branch (str): ``'conv'`` (paper) or ``'window'`` (ablation). Defaults to 'conv'.
        global_tokens (str): ``'position_aware'`` (paper), ``'normal'`` or ``'none'``
            (ablations). Defaults to 'position_aware'.
        downsample (str): ``'step_wise'`` or ``'one_step'``. Defaults to 'step_wise'.
        token_mlp (str): ``'mlp'`` or ``'mix'``. Defaults to 'mlp'.
        grid_size (tuple): Global-token grid at 224. Defaults to (7, 7).
        reference_grid (tuple, optional): X_ds's grid at 224; None: ``grid_size``.
            Defaults to None.
        max_global_tokens (int, optional): Token budget. Defaults to None.
        drop_path (float): Drop-path rate. Defaults to 0.
        norm_cfg, conv_norm_cfg, act_cfg (dict): Layer configs.
    """

    def __init__(self,
                 channels: int,
                 num_heads: int,
                 downsample_steps: int,
                 mlp_ratio: float = 4.,
                 local_branch: str = 'conv',
                 global_tokens: str = 'position_aware',
                 downsample: str = 'step_wise',
                 token_mlp: str = 'mlp',
                 grid_size: tuple = (7, 7),
                 reference_grid: Optional[tuple] = None,
                 max_global_tokens: Optional[int] = None,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='LN'),
                 conv_norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        if local_branch == 'conv':
            self.local = ConvEncoder(channels, mlp_ratio, norm_cfg=norm_cfg, act_cfg=act_cfg)
        else:
            self.local = WindowSelfAttention(channels, num_heads, norm_cfg=norm_cfg)
        if global_tokens == 'none':
            self.global_module = None
        else:
            self.global_module = GlobalTokenModule(
                channels,
                num_heads,
                downsample_steps,
                downsample=downsample,
                fusion='weighted_sum' if global_tokens == 'position_aware' else 'attention',
                token_mlp=token_mlp,
                mlp_ratio=mlp_ratio,
                grid_size=grid_size,
                reference_grid=reference_grid,
                max_global_tokens=max_global_tokens,
                drop_path=drop_path,
                norm_cfg=norm_cfg,
                conv_norm_cfg=conv_norm_cfg,
                act_cfg=act_cfg)
        self.ffn_norm = build_norm_layer(norm_cfg, channels)[1]
        self.ffn = Mlp(channels, mlp_ratio, act_cfg)
        self.bidim_attn = BiDimAttention(channels, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.drop_path = ResidualDropPath(drop_path)

    def forward(self, x: torch.Tensor, tokens: Optional[torch.Tensor]) -> tuple:
        """x: (B, H, W, C) image tokens; tokens: global tokens or None -> (x, tokens)."""
        x = self.drop_path(x, self.local(x))
        if self.global_module is not None:
            x_global, tokens = self.global_module(x, tokens)
            x = self.drop_path(x, x_global)
        x = self.drop_path(x, self.bidim_attn(self.ffn(self.ffn_norm(x))))
        return x, tokens
