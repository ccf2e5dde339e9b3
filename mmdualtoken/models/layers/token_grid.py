"""Resizing a grid of tokens (the position-aware global tokens)."""
from typing import Sequence

import torch
import torch.nn.functional as F


def resize_token_grid(tokens: torch.Tensor, size: Sequence[int],
                      mode: str = 'bicubic') -> torch.Tensor:
    """Resize tokens laid out as (B, h, w, C) to (B, size[0], size[1], C).

    Our choice (ARCHITECTURE.md): bicubic, align_corners=False, as ViT position embeddings are
    resized. Returns the input itself when the size already matches, so nothing is
    interpolated at the model's native resolution.
    """
    h, w = int(size[0]), int(size[1])
    if tokens.shape[1] == h and tokens.shape[2] == w:
        return tokens
    nchw = tokens.permute(0, 3, 1, 2)
    out = F.interpolate(nchw, size=(h, w), mode=mode, align_corners=False)
    return out.permute(0, 2, 3, 1)
