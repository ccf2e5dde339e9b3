"""Resizing a grid of tokens (the position-aware global tokens)."""
from typing import Sequence

import torch
import torch.nn.functional as F


def sizes_are_concrete() -> bool:
    """False while torch.export traces the model with symbolic sizes (ONNX export).

    Shape-dependent shortcuts (skip a no-op resize or pad) would then become guards that
    pin the exported graph to one size; the branch-free path computes the same values.
    """
    return not torch.compiler.is_exporting()


def tokens_to_nchw(tokens: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) tokens as the NCHW tensor that convolutions and pools take.

    A free view with channels-last strides: oneDNN's convolutions and pools keep that layout,
    so permuting their output back to tokens is free too (measured faster than NCHW copies).
    """
    return tokens.permute(0, 3, 1, 2)


def resize_token_grid(tokens: torch.Tensor, size: Sequence[int],
                      mode: str = 'bicubic') -> torch.Tensor:
    """Resize tokens laid out as (B, h, w, C) to (B, size[0], size[1], C).

    Our choice (ARCHITECTURE.md): bicubic, align_corners=False, as ViT position embeddings are
    resized. Returns the input itself when the size already matches, so nothing is
    interpolated at the model's native resolution.
    """
    h, w = size[0], size[1]  # may be symbolic while exporting: no int()
    if sizes_are_concrete() and tokens.shape[1] == h and tokens.shape[2] == w:
        return tokens
    nchw = tokens_to_nchw(tokens)
    out = F.interpolate(nchw, size=(h, w), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1)
