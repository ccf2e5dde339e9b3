"""Resizing a grid of tokens (the position-aware global tokens)."""
from typing import Sequence

import torch
import torch.nn.functional as F

from ...compat import is_tracing


def sizes_are_concrete() -> bool:
    """False while a graph for every input size is recorded (both ONNX exporters).

    Shape-dependent shortcuts (skip a no-op resize or pad) would then be baked into the
    graph (TorchScript tracing) or become guards that pin it to one size (torch.export);
    the branch-free path computes the same values at every size.
    """
    return not is_tracing()


def sizes_are_static(*sizes) -> bool:
    """True when every size is a plain int, also while exporting: torch.export without
    dynamic shapes (a graph for one input size), where a test on them records no guard.
    TorchScript tracing gives tensors and dynamic shapes give SymInts: False for those."""
    return all(type(s) is int for s in sizes)


def use_matrix_form() -> bool:
    """Whether the bicubic resize and the adaptive average pooling of a token grid run as
    two matrix products, one per axis (:func:`apply_per_axis`), instead of ``F.interpolate``
    and ``F.adaptive_avg_pool2d``. The same values (tests/test_models/test_layers.py), in two
    cases:

    * exporting: ONNX Runtime cannot run a bicubic Resize that shrinks a (B, h, w, C) map
      (its layout optimiser moves the resize onto the token layout, where cubic mode only
      enlarges), and ONNX's pooling cannot take an output size computed in the graph;
    * torch's deterministic algorithms are on (``randomness.deterministic=True``): on CUDA
      the backward kernels of bicubic interpolation and adaptive average pooling have no
      deterministic form (torch raises), a matrix product's backward is one. On every device
      alike, so that the computation does not depend on where it runs.
    """
    return not sizes_are_concrete() or torch.are_deterministic_algorithms_enabled()


def tokens_to_nchw(tokens: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) tokens as the NCHW tensor that convolutions and pools take.

    A free view with channels-last strides: CPU convolutions and pools keep that layout,
    so permuting their output back to tokens is free too (measured faster than NCHW copies).
    """
    return tokens.permute(0, 3, 1, 2)


def resize_token_grid(tokens: torch.Tensor,
                      size: Sequence[int],
                      mode: str = 'bicubic') -> torch.Tensor:
    """Resize tokens laid out as (B, h, w, C) to (B, size[0], size[1], C).

    Our choice (docs/architecture.md): bicubic, align_corners=False, as ViT position embeddings are
    resized. Returns the input itself when the size already matches, so nothing is
    interpolated at the model's native resolution.
    """
    h, w = size[0], size[1]  # may be symbolic while exporting: no int()
    if sizes_are_concrete() or sizes_are_static(tokens.shape[1], tokens.shape[2], h, w):
        if tokens.shape[1] == h and tokens.shape[2] == w:
            return tokens
    if mode == 'bicubic' and use_matrix_form():
        return apply_per_axis(tokens, (h, w), bicubic_matrix)
    nchw = tokens_to_nchw(tokens)
    out = F.interpolate(nchw, size=(h, w), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1)


def apply_per_axis(tokens: torch.Tensor, size: Sequence, axis_matrix) -> torch.Tensor:
    """(B, h, w, C) -> (B, size[0], size[1], C) by a separable map: ``axis_matrix(n, m,
    dtype, device)`` gives the (m, n) matrix of one axis (the exporters' form of a resize or
    pooling whose output size is computed in the graph)."""
    rows = axis_matrix(tokens.shape[1], size[0], tokens.dtype, tokens.device)
    cols = axis_matrix(tokens.shape[2], size[1], tokens.dtype, tokens.device)
    # two broadcast matmuls (ONNX MatMul, every opset; no einsum, which opset 11 lacks):
    # (j, w) @ (B, h, w, C) -> (B, h, j, C), then (i, h) @ (B, j, h, C) -> (B, j, i, C)
    by_cols = torch.matmul(cols, tokens)
    return torch.matmul(rows, by_cols.transpose(1, 2)).transpose(1, 2)


def bicubic_matrix(size_in,
                   size_out,
                   dtype: torch.dtype,
                   device: torch.device,
                   a: float = -0.75) -> torch.Tensor:
    """(size_out, size_in) matrix of ``F.interpolate(mode='bicubic', align_corners=False)``
    along one axis: output i reads source position (i + 0.5) * size_in / size_out - 0.5
    through the cubic convolution kernel (a = -0.75, torch's) at its four neighbours, which
    are clamped to the border. Sizes may be ints or the size tensors of an export."""
    source = (torch.arange(size_out, device=device).to(torch.float32) + 0.5) * (size_in /
                                                                                size_out) - 0.5
    floor = torch.floor(source)
    t = (source - floor)[:, None]
    offsets = torch.tensor([1., 0., -1., -2.], device=device)  # distance to each neighbour
    x = (t + offsets).abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    weights = torch.where(x <= 1, near, far)  # (size_out, 4)
    index = floor.long()[:, None] + torch.arange(-1, 3, device=device)
    upper = size_in - 1
    # where, not clamp: an int64 Clip is not valid ONNX at opset 11 (mmdeploy's default)
    index = torch.where(index > upper, upper, torch.where(index < 0, 0, index))
    hits = index[:, :, None] == torch.arange(size_in, device=device)
    return (weights[:, :, None] * hits.to(torch.float32)).sum(1).to(dtype)


def average_pool_matrix(size_in, size_out, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    """(size_out, size_in) matrix whose row i averages the input positions of bin i of
    adaptive average pooling: [floor(i * n / m), ceil((i + 1) * n / m))."""
    bins = torch.arange(size_out, device=device)
    start = (bins * size_in) // size_out
    end = ((bins + 1) * size_in + size_out - 1) // size_out
    positions = torch.arange(size_in, device=device)
    inside = (positions >= start[:, None]) & (positions < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def average_pool_token_grid(tokens: torch.Tensor, size: Sequence) -> torch.Tensor:
    """Adaptive average pooling of (B, h, w, C) tokens to (B, size[0], size[1], C).

    ``F.adaptive_avg_pool2d``, or the same bins averaged by two small matrix products where
    :func:`use_matrix_form` says so (the TorchScript exporter refuses adaptive pooling unless
    the output divides the input).
    """
    if not use_matrix_form():
        pooled = F.adaptive_avg_pool2d(tokens_to_nchw(tokens), (int(size[0]), int(size[1])))
        return pooled.permute(0, 2, 3, 1)
    return apply_per_axis(tokens, size, average_pool_matrix)
