"""Counting parameters and multiply-accumulates (MACs), attention included.

"FLOPs" in the efficient-ViT papers are multiply-accumulates of convolutions, linear layers
and matrix products, as fvcore counts them. torch's FlopCounterMode counts those (as 2 FLOPs
per MAC) but has no formula for the CPU kernel of scaled_dot_product_attention
(``aten._scaled_dot_product_flash_attention_for_cpu``) and counts it as 0; mmengine's
counter skips it too. We register the standard formula for that op (Q @ K^T plus attn @ V:
B * heads * Nq * Nk * (d_qk + d_v) MACs) and report the attention part separately. The
oneDNN kernels that a model converted by :func:`mmdualtoken.deploy.fuse_for_cpu` runs
(``torch.ops.mkldnn._linear_pointwise`` and ``_convolution_pointwise``) get the formulas of
the linear layer and the convolution they compute, so a converted model counts the same as
the plain one.
"""
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

aten = torch.ops.aten
# the CPU kernel of scaled_dot_product_attention: its own op since torch 2.2; torch 2.1 runs
# the flash op on CPU (counted with the same formula)
_SDPA_CPU_OPS = [
    getattr(aten, name) for name in ('_scaled_dot_product_flash_attention_for_cpu',
                                     '_scaled_dot_product_flash_attention') if hasattr(aten, name)
]


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # Called with shapes (FlopCounterMode wraps custom formulas with its shape wrapper).
    return sdpa_flop_count(query, key, value)


def _linear_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * w_shape[0] * w_shape[1]


def _convolution_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


def _custom_formulas() -> dict:
    formulas = {op: _sdpa_cpu_flops for op in _SDPA_CPU_OPS}
    mkldnn = torch.ops.mkldnn
    if hasattr(mkldnn, '_linear_pointwise') and hasattr(mkldnn, '_convolution_pointwise'):
        formulas[mkldnn._linear_pointwise] = _linear_pointwise_flops
        formulas[mkldnn._convolution_pointwise] = _convolution_pointwise_flops
    return formulas


@dataclass
class Complexity:
    """Parameters and MACs of one forward pass."""
    params: int
    macs: int
    attention_macs: int


def count_complexity(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> Complexity:
    """Params and MACs of ``model`` on a zero tensor of ``input_shape`` (eval, no grad), made
    on the model's device. On the ``meta`` device nothing is computed: the same MACs, but
    attention is counted in its matrix products (``attention_macs`` is 0)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    counter = FlopCounterMode(display=False, custom_mapping=_custom_formulas())
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(*input_shape, device=device))
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts().get('Global', {})  # absent when nothing counted
    flops = sum(counts.values())
    attention_flops = sum(v for op, v in counts.items()
                          if op in _SDPA_CPU_OPS or 'scaled_dot_product' in str(op))
    params = sum(p.numel() for p in model.parameters())
    return Complexity(params=params, macs=flops // 2, attention_macs=attention_flops // 2)
