"""Multi-head attention through torch's scaled_dot_product_attention."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    B, N, C = x.shape
    return x.view(B, N, num_heads, C // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


class MultiheadSelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, C).

    Args:
        channels (int): Token width C.
        num_heads (int): Heads; C must divide by it.
        qkv_bias (bool): Bias on the q, k, v projection. Defaults to True.
    """

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'channels ({channels}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class MultiheadCrossAttention(nn.Module):
    """Multi-head attention with queries from ``x`` and keys/values from ``context``.

    Args:
        channels (int): Token width C of both inputs.
        num_heads (int): Heads; C must divide by it.
        qkv_bias (bool): Bias on the q and k/v projections. Defaults to True.
    """

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'channels ({channels}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) queries; context: (B or 1, M, C) -> (B, N, C)."""
        B, M, C = context.shape
        q = _split_heads(self.q(x), self.num_heads)
        kv = self.kv(context).view(B, M, 2, self.num_heads, C // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        # a context shared by the batch (B = 1) is broadcast as a view; no branch on the
        # batch size, so an exported graph takes any batch
        k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
