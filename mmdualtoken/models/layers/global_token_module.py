"""The paper's Position-aware Token Module, and the "normal" global tokens it replaces."""
import functools
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer

from .attention import MultiheadCrossAttention, MultiheadSelfAttention
from .drop_path import ResidualDropPath
from .mlp import MixMlp, TokenMlp
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
    """The same rule in Python floats (IEEE double, as the tensor form's float64): no torch
    op, so torch.export at a fixed size records nothing here."""
    scale = math.sqrt(max_tokens / (h * w))
    gh, gw = max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    larger = min(max(gh, gw), max_tokens // min(gh, gw))
    return (larger, gw) if gh >= gw else (gh, larger)


def _fit_token_budget(size: torch.Tensor, max_tokens: int) -> tuple:
    size = size.to(torch.float64)
    scale = torch.sqrt(max_tokens / (size[0] * size[1]))
    grid = torch.floor(size * scale)
    grid = torch.where(grid < 1, 1, grid).long()  # ONNX Runtime has no float64 Clip at opset 11
    gh, gw = grid[0], grid[1]
    # only a side clamped to 1 can push the product over the budget: shrink the other one
    larger = torch.minimum(torch.maximum(gh, gw), max_tokens // torch.minimum(gh, gw))
    rows_larger = gh >= gw
    return torch.where(rows_larger, larger, gh), torch.where(rows_larger, gw, larger)


def budget_grid(h, w, max_tokens: Optional[int]) -> tuple:
    """(h, w), or the largest grid of its aspect ratio within ``max_tokens`` when it holds more.

    Branch-free while exporting (:func:`sizes_are_concrete` is False): the budget grid is
    computed and clipped to (h, w), which leaves a grid within the budget unchanged.
    TorchScript tracing records the sizes as tensors, so the grid is computed in the graph;
    torch.export with symbolic sizes cannot express it (the float square root) and is used at
    a fixed size.
    """
    if max_tokens is None:
        return h, w
    if sizes_are_concrete():
        return (h, w) if h * w <= max_tokens else fit_token_budget(h, w, max_tokens)
    gh, gw = fit_token_budget(h, w, max_tokens)
    if isinstance(gh, torch.Tensor):
        return torch.minimum(gh, h), torch.minimum(gw, w)
    return min(gh, h), min(gw, w)


class TokenDownsample(nn.Module):
    """Step 1 of the module: downsample X_local to the global-token grid (paper).

    Paper: "local information is extracted by convolution and downsampled twice, and the
    process is repeated M times"; one-step downsampling (its Table 9 ablation) retains less
    information and costs 0.03 G FLOPs and 0.1 M params less on S (mix). Our choices
    (docs/architecture.md): each step is a dense 3x3 conv, stride 2, padding 1, then BN, so any
    size works (ceil division). ``'one_step'`` is a single dense conv with kernel = stride =
    2**M, then BN: it reads every input position exactly once and goes straight to the same
    grid (the map is zero-padded at the bottom/right to a multiple of the stride, so the grid
    is ceil(H / 2**M) as with the steps). We prefer it to pooling then a conv, which would
    average positions away before any learnt weight sees them (a weaker baseline than one
    strided conv), and to a 3x3 kernel at stride 4, which never reads 7 of every 16
    positions. It costs less than the steps (S (mix): -0.027 G MACs, -0.39 M params; the
    paper: -0.03 G, -0.1 M): at M = 1 the 2x2 kernel has 4/9 of the 3x3's weights, which is
    where most of our larger params delta comes from; the paper does not give its kernels.
    With ``max_global_tokens`` set, a map that still holds more tokens is average-pooled to
    the largest grid of the same aspect ratio that fits (the token budget for dense inputs;
    off by default).

    Args:
        channels (int): Token width C.
        steps (int): M, the number of stride-2 steps (0 keeps the map as it is).
        mode (str): ``'step_wise'`` or ``'one_step'``. Defaults to ``'step_wise'``.
        max_global_tokens (int, optional): Token budget. Defaults to None (no budget).
        conv_norm_cfg (dict): Defaults to ``dict(type='BN')``.
    """

    def __init__(self,
                 channels: int,
                 steps: int,
                 mode: str = 'step_wise',
                 max_global_tokens: Optional[int] = None,
                 conv_norm_cfg: dict = dict(type='BN')):
        super().__init__()
        self.max_global_tokens = max_global_tokens
        self.stride = 2**steps

        def conv(kernel, stride, padding):
            return ConvModule(
                channels,
                channels,
                kernel,
                stride=stride,
                padding=padding,
                norm_cfg=conv_norm_cfg,
                act_cfg=None)

        self.pad_to_stride = steps > 0 and mode == 'one_step'
        if steps == 0:
            self.convs = nn.Sequential()
        elif mode == 'step_wise':
            self.convs = nn.Sequential(*[conv(3, 2, 1) for _ in range(steps)])
        else:
            self.convs = nn.Sequential(conv(self.stride, self.stride, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, h, w, C)."""
        if len(self.convs):
            nchw = tokens_to_nchw(x)
            if self.pad_to_stride:
                H, W = x.shape[1:3]
                pad_h, pad_w = (-H) % self.stride, (-W) % self.stride
                if not sizes_are_concrete() or pad_h or pad_w:
                    nchw = F.pad(nchw, (0, pad_w, 0, pad_h))
            x = self.convs(nchw).permute(0, 2, 3, 1)
        if self.max_global_tokens is None:
            return x
        h, w = x.shape[1:3]
        grid = budget_grid(h, w, self.max_global_tokens)
        if sizes_are_concrete() and grid == (h, w):
            return x
        return average_pool_token_grid(x, grid)


class GlobalTokenModule(nn.Module):
    """The Position-aware Token Module of a Dual Token Block (paper, four steps).

    1. X_ds  = downsample(X_local)                       (:class:`TokenDownsample`)
    2. X_ga  = X_ds + MSA(LN(X_ds))                      global aggregation
    3. G'    = a * X_ga + b * G      (``fusion='weighted_sum'``, position-aware tokens)
       G_new = G' + MLP(LN(G'))      (or MixMLP)
    4. X_glob = Proj(Attn(q=LN(X_local), k=v=LN(G_new)))  global broadcast

    Paper: position-aware global tokens G are fused with X_ga by weighted summation; the
    paper sets them to 7x7 "to prevent the complexity of the model from being too large" and
    finds other counts worse because of "the interpolation method". Our reading
    (docs/architecture.md): G works on X_ds's grid scaled by ``grid_size /
    reference_grid`` (``reference_grid`` is X_ds's grid at 224, 7x7 in every stage by
    default), ceil-rounded and capped by the token budget. At 224 with the default nothing
    is interpolated. With another ``grid_size`` X_ga is interpolated (bicubic) to G's grid for
    the weighted sum, and G_new and the broadcast have that many tokens, so the count
    changes the cost. G arriving on another grid (the parameter, at another input size, or a
    stage whose X_ds differs) is resized to it (bicubic) once and the resized tokens flow
    on. a and b are learnable per channel, initialised to 1; keys/values get their own
    LayerNorm (our choices).

    ``fusion='attention'`` is the paper's "normal" global tokens (Figure 3(c): "fuse X and G
    via multi-head self-attention and broadcast"), LightViT style: a small set of tokens with
    no grid, fused by multi-head self-attention over the union of X_ga and G, of which G's
    outputs are kept: G' = G + Attn(q=LN(G), k=v=LN([X_ga; G])) (X_ga's outputs would be
    unused, so they are not computed). It costs an attention's projection weights where the
    weighted sum has 2C. Measured on S, position-aware vs normal is -1.5 M params (paper
    -1.1 M) and about +0.13 G MACs (paper +0.06 G): the MACs gap comes from the token count
    (LightViT's 8 normal tokens against 49), which the paper does not give; we do not tune it.

    Args:
        channels (int): Token width C.
        num_heads (int): Heads of the three attentions.
        downsample_steps (int): M.
        downsample (str): ``'step_wise'`` or ``'one_step'``.
        fusion (str): ``'weighted_sum'`` or ``'attention'``.
        token_mlp (str): ``'mlp'`` or ``'mix'``.
        mlp_ratio (float): Token MLP ratio.
        grid_size (tuple): Global-token grid at 224 (MixMLP mixes there).
        reference_grid (tuple): X_ds's grid at 224. Defaults to ``grid_size``.
        max_global_tokens (int, optional): Token budget of X_ds and of G's grid.
        drop_path (float): Drop-path rate of the module's residual branches.
        norm_cfg, conv_norm_cfg, act_cfg (dict): Layer configs.
    """

    def __init__(self,
                 channels: int,
                 num_heads: int,
                 downsample_steps: int,
                 downsample: str = 'step_wise',
                 fusion: str = 'weighted_sum',
                 token_mlp: str = 'mlp',
                 mlp_ratio: float = 4.,
                 grid_size: tuple = (7, 7),
                 reference_grid: Optional[tuple] = None,
                 max_global_tokens: Optional[int] = None,
                 drop_path: float = 0.,
                 norm_cfg: dict = dict(type='LN'),
                 conv_norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.fusion = fusion
        self.grid_size = tuple(grid_size)
        self.reference_grid = tuple(reference_grid) if reference_grid else self.grid_size
        self.max_global_tokens = max_global_tokens
        self.downsample = TokenDownsample(channels, downsample_steps, downsample, max_global_tokens,
                                          conv_norm_cfg)
        self.aggregate_norm = build_norm_layer(norm_cfg, channels)[1]
        self.aggregate = MultiheadSelfAttention(channels, num_heads)
        if fusion == 'weighted_sum':
            self.weight_aggregated = nn.Parameter(torch.ones(channels))
            self.weight_tokens = nn.Parameter(torch.ones(channels))
        else:
            self.fuse_norm = build_norm_layer(norm_cfg, channels)[1]
            self.fuse = MultiheadCrossAttention(channels, num_heads)
        if token_mlp == 'mix':
            self.token_mlp = MixMlp(channels, mlp_ratio, norm_cfg, act_cfg, grid_size=grid_size)
        else:
            self.token_mlp = TokenMlp(channels, mlp_ratio, norm_cfg, act_cfg)
        self.query_norm = build_norm_layer(norm_cfg, channels)[1]
        self.context_norm = build_norm_layer(norm_cfg, channels)[1]
        self.broadcast = MultiheadCrossAttention(channels, num_heads)
        self.drop_path = ResidualDropPath(drop_path)

    def token_grid(self, h, w) -> tuple:
        """The grid of the position-aware tokens for an X_ds of h x w (ints, or sizes that
        are symbolic while exporting): X_ds's grid scaled by grid_size / reference_grid,
        ceil-rounded, within the token budget."""
        if self.grid_size == self.reference_grid:  # fixed at construction, not a size branch
            return h, w  # X_ds is within the budget already
        (gh, gw), (rh, rw) = self.grid_size, self.reference_grid
        return budget_grid((h * gh + rh - 1) // rh, (w * gw + rw - 1) // rw, self.max_global_tokens)

    def forward(self, x_local: torch.Tensor, tokens: torch.Tensor) -> tuple:
        """x_local: (B, H, W, C); tokens G: (B or 1, gh, gw, C).

        Returns:
            tuple: X_glob (B, H, W, C), the broadcast branch, and G_new (B, gh', gw', C).
        """
        B, H, W, C = x_local.shape
        x_ds = self.downsample(x_local)
        h, w = x_ds.shape[1:3]
        seq = x_ds.reshape(B, h * w, C)
        x_ga = self.drop_path(seq, self.aggregate(self.aggregate_norm(seq)))
        if self.fusion == 'weighted_sum':
            grid = self.token_grid(h, w)
            tokens = resize_token_grid(tokens, grid)
            x_ga = resize_token_grid(x_ga.view(B, h, w, C), grid)
            fused = torch.addcmul(tokens * self.weight_tokens, x_ga, self.weight_aggregated)
        else:
            grid = tokens.shape[1:3]
            queries = self.fuse_norm(tokens).reshape(-1, grid[0] * grid[1], C)
            context = torch.cat([self.fuse_norm(x_ga), queries.expand(B, -1, -1)], dim=1)
            update = self.fuse(queries.expand(B, -1, -1), context).view(B, *grid, C)
            fused = self.drop_path(tokens, update)
        new_tokens = self.drop_path(fused, self.token_mlp(fused))
        gh, gw = new_tokens.shape[1:3]
        context = self.context_norm(new_tokens).reshape(B, gh * gw, C)
        x_global = self.broadcast(self.query_norm(x_local).reshape(B, H * W, C), context)
        return x_global.view(B, H, W, C), new_tokens
