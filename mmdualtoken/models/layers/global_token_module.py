"""The paper's Position-aware Token Module, and the "normal" global tokens it replaces."""
import functools
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from .attention import MultiheadCrossAttention, MultiheadSelfAttention
from .mlp import MixMlp, TokenMlp
from .onednn_fusion import ConvNormAct
from .token_grid import (average_pool_token_grid, resize_token_grid, sizes_are_concrete,
                         tokens_to_nchw)


def fit_token_budget(h, w, max_tokens: int) -> tuple:
    """The largest grid with the aspect ratio of (h, w) that holds at most ``max_tokens``.

    gh = floor(h * s), gw = floor(w * s) with s = sqrt(max_tokens / (h * w)), at least 1; the
    larger side then shrinks to fit where the other was clamped to 1 (thin inputs). Takes
    ints, or the 0-d size tensors TorchScript tracing records (ONNX export with
    dynamo=False): the grid is then computed inside the graph, in the same float64
    arithmetic, at every input size.
    """
    if isinstance(h, torch.Tensor) and isinstance(w, torch.Tensor):
        return _fit_token_budget(torch.stack([h, w]), max_tokens)
    return _fit_token_budget_ints(int(h), int(w), max_tokens)


@functools.lru_cache(maxsize=1024)
def _fit_token_budget_ints(h: int, w: int, max_tokens: int) -> tuple:
    gh, gw = _fit_token_budget(torch.tensor([h, w]), max_tokens)
    return int(gh), int(gw)


def _fit_token_budget(size: torch.Tensor, max_tokens: int) -> tuple:
    size = size.to(torch.float64)
    scale = torch.sqrt(max_tokens / (size[0] * size[1]))
    grid = torch.floor(size * scale).clamp(min=1).long()
    gh, gw = grid[0], grid[1]
    # only a side clamped to 1 can push the product over the budget: shrink the other one
    larger = torch.minimum(torch.maximum(gh, gw), max_tokens // torch.minimum(gh, gw))
    rows_larger = gh >= gw
    return torch.where(rows_larger, larger, gh), torch.where(rows_larger, gw, larger)


class TokenDownsample(nn.Module):
    """Step 1 of the module: downsample X_local to the global-token grid (paper).

    Paper: "local information is extracted by convolution and downsampled twice, and the
    process is repeated M times". Our choices (ARCHITECTURE.md): each step is a dense 3x3
    conv, stride 2, padding 1, then BN, so any size works (ceil division). ``'one_step'`` (the
    paper's ablation) is a single 3x3 conv with stride 2**M from the stage map straight to
    the grid. With ``max_global_tokens`` set, a map that still holds more tokens is
    average-pooled to the largest grid of the same aspect ratio that fits (the token budget
    for dense inputs; off by default).

    Args:
        channels (int): Token width C.
        steps (int): M, the number of stride-2 steps (0 keeps the map as it is).
        mode (str): ``'step_wise'`` or ``'one_step'``. Defaults to ``'step_wise'``.
        max_global_tokens (int, optional): Token budget. Defaults to None (no budget).
        conv_norm_cfg (dict): Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels: int, steps: int, mode: str = 'step_wise',
                 max_global_tokens: Optional[int] = None, conv_norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.max_global_tokens = max_global_tokens

        def conv(stride):
            return ConvNormAct(channels, channels, 3, stride=stride, padding=1,
                               norm_cfg=conv_norm_cfg, act_cfg=None)

        if steps == 0:
            self.convs = nn.Sequential()
        elif mode == 'step_wise':
            self.convs = nn.Sequential(*[conv(2) for _ in range(steps)])
        else:
            self.convs = nn.Sequential(conv(2**steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, h, w, C)."""
        if len(self.convs):
            x = self.convs(tokens_to_nchw(x)).permute(0, 2, 3, 1)
        if self.max_global_tokens is None:
            return x
        h, w = x.shape[1:3]
        if sizes_are_concrete():
            if h * w <= self.max_global_tokens:
                return x
            return average_pool_token_grid(x, fit_token_budget(h, w, self.max_global_tokens))
        # while exporting: no branch on the size; a map within the budget is pooled to its
        # own size, which leaves it unchanged. TorchScript tracing records the sizes as
        # tensors, so the grid is computed in the graph; torch.export with symbolic sizes
        # cannot express it (the float square root) and is used at a fixed size.
        gh, gw = fit_token_budget(h, w, self.max_global_tokens)
        if isinstance(gh, torch.Tensor):
            gh, gw = torch.minimum(gh, h), torch.minimum(gw, w)
        else:
            gh, gw = min(gh, h), min(gw, w)
        return average_pool_token_grid(x, (gh, gw))


class GlobalTokenModule(nn.Module):
    """The Position-aware Token Module of a Dual Token Block (paper, four steps).

    1. X_ds  = downsample(X_local)                       (:class:`TokenDownsample`)
    2. X_ga  = X_ds + MSA(LN(X_ds))                      global aggregation
    3. G'    = a * X_ga + b * G      (``fusion='weighted_sum'``, position-aware tokens)
       G_new = G' + MLP(LN(G'))      (or MixMLP)
    4. X_glob = Proj(Attn(q=LN(X_local), k=v=LN(G_new)))  global broadcast

    Paper: position-aware global tokens G have as many tokens as X_ga and are fused by
    weighted summation. Our choices: a and b are learnable per channel, initialised to 1;
    when G's grid differs from X_ds's (other input sizes), G is resized to it (bicubic) and
    the resized tokens flow on; keys/values get their own LayerNorm.

    ``fusion='attention'`` is the paper's "normal" global tokens (ablation, LightViT style):
    a small set of tokens with no grid, fused as G' = G + Attn(q=LN(G), k=v=LN(X_ga)), which
    costs more projection weights than the weighted sum.

    Args:
        channels (int): Token width C.
        num_heads (int): Heads of the three attentions.
        downsample_steps (int): M.
        downsample (str): ``'step_wise'`` or ``'one_step'``.
        fusion (str): ``'weighted_sum'`` or ``'attention'``.
        token_mlp (str): ``'mlp'`` or ``'mix'``.
        mlp_ratio (float): Token MLP ratio.
        grid_size (tuple): Canonical grid of the global tokens (MixMLP mixes there).
        max_global_tokens (int, optional): Token budget of the downsampling.
        drop_path (float): Drop-path rate of the module's residual branches.
        norm_cfg, conv_norm_cfg, act_cfg (dict): Layer configs.
    """

    def __init__(self, channels: int, num_heads: int, downsample_steps: int,
                 downsample: str = 'step_wise', fusion: str = 'weighted_sum',
                 token_mlp: str = 'mlp', mlp_ratio: float = 4., grid_size: tuple = (7, 7),
                 max_global_tokens: Optional[int] = None, drop_path: float = 0.,
                 norm_cfg: dict = dict(type='LN'), conv_norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.fusion = fusion
        self.downsample = TokenDownsample(channels, downsample_steps, downsample,
                                          max_global_tokens, conv_norm_cfg)
        self.aggregate_norm = build_norm_layer(norm_cfg, channels)[1]
        self.aggregate = MultiheadSelfAttention(channels, num_heads)
        if fusion == 'weighted_sum':
            self.weight_aggregated = nn.Parameter(torch.ones(channels))
            self.weight_tokens = nn.Parameter(torch.ones(channels))
        else:
            self.fuse_norm_tokens = build_norm_layer(norm_cfg, channels)[1]
            self.fuse_norm_image = build_norm_layer(norm_cfg, channels)[1]
            self.fuse = MultiheadCrossAttention(channels, num_heads)
        mlp_cls = MixMlp if token_mlp == 'mix' else TokenMlp
        self.token_mlp = mlp_cls(channels, mlp_ratio, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                 grid_size=grid_size)
        self.query_norm = build_norm_layer(norm_cfg, channels)[1]
        self.context_norm = build_norm_layer(norm_cfg, channels)[1]
        self.broadcast = MultiheadCrossAttention(channels, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x_local: torch.Tensor, tokens: torch.Tensor) -> tuple:
        """x_local: (B, H, W, C); tokens G: (B or 1, gh, gw, C).

        Returns:
            tuple: X_glob (B, H, W, C), the broadcast branch, and G_new (B, h, w, C).
        """
        B, H, W, C = x_local.shape
        x_ds = self.downsample(x_local)
        h, w = x_ds.shape[1:3]
        seq = x_ds.reshape(B, h * w, C)
        x_ga = seq + self.drop_path(self.aggregate(self.aggregate_norm(seq)))
        if self.fusion == 'weighted_sum':
            tokens = resize_token_grid(tokens, (h, w))
            fused = x_ga.view(B, h, w, C) * self.weight_aggregated + tokens * self.weight_tokens
        else:
            grid = tokens.shape[1:3]
            queries = self.fuse_norm_tokens(tokens).reshape(-1, grid[0] * grid[1], C)
            queries = queries.expand(B, -1, -1)
            update = self.fuse(queries, self.fuse_norm_image(x_ga)).view(B, *grid, C)
            fused = tokens + self.drop_path(update)
        new_tokens = fused + self.drop_path(self.token_mlp(fused))
        gh, gw = new_tokens.shape[1:3]
        context = self.context_norm(new_tokens).reshape(B, gh * gw, C)
        x_global = self.broadcast(self.query_norm(x_local).reshape(B, H * W, C), context)
        return x_global.view(B, H, W, C), new_tokens
