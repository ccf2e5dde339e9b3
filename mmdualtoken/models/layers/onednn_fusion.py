"""Inference fast paths: oneDNN kernels that fuse a Linear or a Conv with what follows it.

On CPU, an activation or an eval-mode BatchNorm on its own is a full pass over memory, and
in this small model those passes cost as much as the matrix products around them (kernel
timings in docs/benchmark.md). oneDNN, which PyTorch already uses for convolutions, runs the
activation as a post-op of the same kernel; an eval BatchNorm folds into the conv weights.
The maths is unchanged (same erf GELU; tests compare both paths on the same weights).

The kernels are the oneDNN operators PyTorch registers for its compiler
(``torch.ops.mkldnn``), called here in eager mode. They have no autograd formula, so the
fused paths run only when nothing needs a gradient, on float32 CPU tensors, outside
autocast, tracing, export and compilation; every other case takes the plain modules.
Training gets one of them through an autograd function (:class:`OneDNNLinearFunction`):
the Linear's forward and its input gradient run on oneDNN's GEMM, which serves the model's
token-by-channel shapes better than the BLAS behind ``addmm``/``mm``; the weight gradient
stays on the BLAS, which was the faster of the two for it on the shapes profiled for issue 16.
``set_fusion_enabled(False)`` turns all of them off globally.
"""
import functools
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from torch.nn.modules.batchnorm import _BatchNorm

from ...compat import cpu_autocast_enabled, is_compiling, is_tracing

_ONEDNN_OPS = (torch.backends.mkldnn.is_available()
               and hasattr(torch.ops.mkldnn, '_linear_pointwise')
               and hasattr(torch.ops.mkldnn, '_convolution_pointwise'))
_enabled = True
# Inference: below this many rows (tokens x batch) a Linear stays on the BLAS. With its
# weight packed once (below), oneDNN's fixed cost per call is small enough that every token
# matrix of the model goes to it at batch 1, 224 (49 rows and up: the fused GELU saves a
# pass, and the call replaces view -> t -> addmm -> view); BiDim attention's global vector
# (one row per image) stays on the BLAS. Whole-model A/B at batch 1: issue 16's notes.
INFERENCE_MIN_ROWS = 16
# Training: below this many rows a Linear stays on the BLAS. oneDNN's fixed cost per call
# without a packed weight (~12-14 us more than addmm, e.g. 31 vs 17 us for 49 rows,
# 56 -> 224) outweighs its faster GEMM there; batch 32 has >= 1568 rows everywhere but the
# global vector.
TRAINING_MIN_ROWS = 256


def set_fusion_enabled(enabled: bool):
    """Switch the fused inference kernels on or off for the whole process."""
    global _enabled
    _enabled = bool(enabled)


@contextmanager
def fusion_disabled():
    """Run the plain modules inside this block (the reference path of the tests)."""
    previous = _enabled
    set_fusion_enabled(False)
    try:
        yield
    finally:
        set_fusion_enabled(previous)


def _onednn_usable(x: torch.Tensor) -> bool:
    """oneDNN may run ``x`` (float32 on the CPU, eager, no autocast, switched on)."""
    if not (_enabled and _ONEDNN_OPS) or x.device.type != 'cpu' or x.dtype != torch.float32:
        return False
    return not (is_tracing() or is_compiling() or cpu_autocast_enabled())


def _needs_grad(x: torch.Tensor, *params: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(
        p is not None and p.requires_grad for p in params))


def fusion_applies(x: torch.Tensor, *params: Optional[torch.Tensor]) -> bool:
    """True when a fused kernel may replace the plain modules for input ``x``."""
    return _onednn_usable(x) and not _needs_grad(x, *params)


def training_kernel_applies(x: torch.Tensor, weight: torch.Tensor,
                            bias: Optional[torch.Tensor]) -> bool:
    """True when :class:`OneDNNLinearFunction` may run a Linear that needs gradients."""
    return (_onednn_usable(x) and _needs_grad(x, weight, bias) and x.dim() >= 2
            and weight.dtype == torch.float32 and weight.device.type == 'cpu')


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], None)


class OneDNNLinearFunction(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` with oneDNN's GEMM for the output and for x's gradient.

    Same maths as ``F.linear`` and its autograd formula (fp32, summation order aside):
    dx = dy W, dW = dy^T x (BLAS), db = the sum of dy over the tokens. No double backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.with_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dy W, with W^T as the "weight"; both dense (a no-op for dy as it usually comes)
            grad_x = _onednn_linear(grad.contiguous(), weight.t().contiguous(), None)
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = rows.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.with_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


def onednn_post_op(act: Optional[nn.Module]) -> Optional[tuple]:
    """(attr, scalars, algorithm) of oneDNN's post-op for ``act``; None if it has none."""
    if act is None or isinstance(act, nn.Identity):
        return 'none', [], ''
    if type(act) is nn.GELU:
        return 'gelu', [], act.approximate  # 'none' is the exact erf GELU
    if type(act) is nn.ReLU:
        return 'relu', [], ''
    return None


@functools.lru_cache(maxsize=None)
def weight_packing_supported() -> bool:
    """oneDNN takes weights packed ahead of time into its own blocked layout (what inductor's
    freezing does): feature-tested once, on a tiny Linear and a tiny conv, against the plain
    ops. Present from torch 2.1 on the builds we know; where it is missing or fails, the
    kernels take the dense weights (same results, a reorder per call)."""
    if not _ONEDNN_OPS:
        return False
    try:
        x, weight = torch.ones(3, 4), torch.eye(4)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        linear_ok = torch.equal(torch.ops.mkldnn._linear_pointwise(x, packed, None, 'none',
                                                                   [], None), x)
        image, kernel = torch.ones(1, 2, 3, 3), torch.ones(2, 1, 1, 1)
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(kernel.to_mkldnn(), [0, 0], [1, 1],
                                                           [1, 1], 2, None)
        conv_ok = torch.equal(torch.ops.mkldnn._convolution_pointwise(
            image, packed, None, [0, 0], [1, 1], [1, 1], 2, 'none', [], None), image)
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
    return linear_ok and conv_ok


def _source_key(*tensors: Optional[torch.Tensor]) -> tuple:
    """Identifies the contents of ``tensors``: a new tensor, new storage or an in-place
    update (an optimizer step, load_state_dict) gives another key."""
    return tuple(None if t is None else (id(t), t.data_ptr(), t._version, t.dtype)
                 for t in tensors)


class InferenceWeightCache:
    """Mixin of the fused modules: inference weights derived from the parameters (folded
    BatchNorm, weights packed for oneDNN) are computed once and kept until a tensor they come
    from changes (:func:`_source_key`). ``train()``/``eval()`` drop them, and so do pickling
    and deep copies (oneDNN's packed tensors have no storage to copy; EMA hooks deep-copy
    models), so a copy rebuilds its own on first use. Not in the state dict."""

    def cached_weights(self, name: str, key: tuple, make):
        cache = self.__dict__.setdefault('_inference_weights', {})
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            hit = cache[name] = (key, make())
        return hit[1]

    def train(self, mode: bool = True):
        self.__dict__.pop('_inference_weights', None)
        return super().train(mode)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop('_inference_weights', None)
        return state


class OneDNNLinear(InferenceWeightCache, nn.Linear):
    """nn.Linear whose inference runs through oneDNN, fused with an optional activation.

    Where gradients are needed (training) the product runs through
    :class:`OneDNNLinearFunction` and the activation after it, unfused.

    ``forward(x, act)`` computes ``act(linear(x))`` on tokens of any rank. In inference the
    weight is packed once into oneDNN's layout (:class:`InferenceWeightCache`), which takes
    the weight reorder out of every call; inputs of fewer than ``INFERENCE_MIN_ROWS`` rows
    (``TRAINING_MIN_ROWS`` in training) take the plain module. Measured on our machines (AMD
    EPYC, docs/benchmark.md): oneDNN's fp32 GEMM runs the model's token-by-channel products
    faster than the BLAS (MKL) behind ``addmm``, and the fused GELU saves a pass over the
    4C-wide hidden tokens. Same parameters and state-dict keys as nn.Linear.
    """

    def forward(self, x: torch.Tensor, act: Optional[nn.Module] = None) -> torch.Tensor:
        post_op = onednn_post_op(act)
        rows = x.numel() // max(x.shape[-1], 1)
        if post_op is None or rows < INFERENCE_MIN_ROWS or not fusion_applies(
                x, self.weight, self.bias):
            if rows >= TRAINING_MIN_ROWS and training_kernel_applies(x, self.weight, self.bias):
                y = OneDNNLinearFunction.apply(x, self.weight, self.bias)
            else:
                y = super().forward(x)
            return y if act is None else act(y)
        attr, scalars, algorithm = post_op
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight(), self.bias, attr,
                                                  scalars, algorithm or None)

    def packed_weight(self) -> torch.Tensor:
        """The weight in oneDNN's layout (the dense one where packing is unsupported)."""
        if not weight_packing_supported():
            return self.weight
        return self.cached_weights(
            'packed', _source_key(self.weight),
            lambda: torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None))


class ConvNormAct(InferenceWeightCache, ConvModule):
    """mmcv's ConvModule (conv -> norm -> act), with a fused inference path.

    With an eval-mode BatchNorm (running statistics), the norm is folded into the conv's
    weight and bias, and the activation runs as the conv kernel's post-op: one pass over
    memory instead of three. Training, other norms and other layer orders use ConvModule's
    own forward. State-dict keys are ConvModule's. The folded weight, packed into oneDNN's
    layout, and the bias are kept between calls (:class:`InferenceWeightCache`: about seven
    small ops and a weight reorder fewer per layer and call, which is what batch-1 latency
    pays for). BatchNorm updates its running statistics inside its kernel, which bumps no
    version counter: every batch in training mode bumps ``num_batches_tracked``, which is in
    the key, and ``train()``/``eval()`` drop the cached weights as well.
    """

    def forward(self, x: torch.Tensor, activate: bool = True, norm: bool = True):
        post_op = onednn_post_op(self.activate if self.with_activation and activate else None)
        bn = self.norm if self.with_norm and norm else None
        foldable = bn is None or (isinstance(bn, _BatchNorm) and not bn.training
                                  and bn.track_running_stats)
        if (post_op is None or not foldable or self.order != ('conv', 'norm', 'act')
                or self.with_explicit_padding or type(self.conv) is not nn.Conv2d
                or isinstance(self.conv.padding, str)
                or not fusion_applies(x, self.conv.weight, self.conv.bias,
                                      *(() if bn is None else (bn.weight, bn.bias)))):
            return super().forward(x, activate=activate, norm=norm)
        weight, bias = self._folded_weights(bn)
        attr, scalars, algorithm = post_op
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups, attr,
            scalars, algorithm or None)

    def _folded_weights(self, bn: Optional[_BatchNorm]) -> tuple:
        """(weight, bias) with ``bn`` folded in and the weight packed for oneDNN, recomputed
        only when a source tensor changed."""
        conv = self.conv
        sources = (conv.weight, conv.bias)
        if bn is not None:
            sources += (bn.weight, bn.bias, bn.running_mean, bn.running_var,
                        bn.num_batches_tracked)

        def make():
            with torch.no_grad():
                weight, bias = ((conv.weight, conv.bias) if bn is None else
                                fold_batch_norm(conv.weight, conv.bias, bn))
                if weight_packing_supported():
                    weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
                        weight.to_mkldnn(), list(conv.padding), list(conv.stride),
                        list(conv.dilation), conv.groups, None)
            return weight, bias

        key = _source_key(*sources) + (None if bn is None else bn.eps, bn is None)
        return self.cached_weights('conv', key, make)


def fold_batch_norm(weight: torch.Tensor, bias: Optional[torch.Tensor],
                    bn: _BatchNorm) -> tuple:
    """Weight and bias of ``bn(conv(x))`` as one conv, from the running statistics."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift
