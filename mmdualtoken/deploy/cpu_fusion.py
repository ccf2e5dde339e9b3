"""``fuse_for_cpu``: an explicit inference conversion for fp32 CPU speed.

The model itself is plain PyTorch. For CPU inference, this conversion (in the spirit of
mmpretrain's ``switch_to_deploy()`` and timm's ``reparameterize_model()``) rewrites it once:

* every conv -> eval BatchNorm (-> GELU/ReLU) of mmcv's ``ConvModule`` becomes one conv whose
  weights hold the BatchNorm (:class:`FoldedConv`);
* every ``nn.Linear`` becomes a :class:`FusedLinear`; where the blocks apply a GELU or ReLU
  right after it (the MLPs' first layer, the Conv Encoder's, BiDim attention's reductions),
  that activation moves into it and the block's own activation becomes ``nn.Identity``.

On float32 CPU tensors, outside autograd, tracing, compilation and autocast, the converted
modules run oneDNN's kernels with weights packed once into oneDNN's layout and the
activation as the kernel's post-op (``torch.ops.mkldnn``, feature-tested: where a torch lacks
them they are never called). Everywhere else (CUDA, gradients, export) they compute the same
maths with the plain ops. Convert after the weights are loaded; the converted model is for
inference (its parameters keep their values; a later ``load_state_dict`` re-packs them).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..compat import cpu_autocast_enabled, is_compiling, is_tracing
from ..models.layers import BiDimAttention, ConvEncoder, Mlp

# The (Linear, activation) attribute pairs of our blocks whose activation follows the Linear
# directly: the activation can run as the Linear kernel's post-op.
LINEAR_ACTIVATION_PAIRS = {
    Mlp: (('fc1', 'act'), ),
    ConvEncoder: (('fc1', 'act'), ),
    BiDimAttention: (('global_reduce', 'act'), ('local_reduce', 'act')),
}
# Below this many rows (tokens x batch) a Linear stays on the BLAS: oneDNN's fixed cost per
# call outweighs its faster GEMM there (BiDim attention's one-row-per-image global vector).
MIN_ROWS = 16


def _onednn_ops_present() -> bool:
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, '_linear_pointwise')
            and hasattr(mkldnn, '_convolution_pointwise')
            and hasattr(mkldnn, '_reorder_linear_weight')
            and hasattr(torch._C._nn, 'mkldnn_reorder_conv2d_weight'))


ONEDNN_PRESENT = _onednn_ops_present()


def _post_op(act: Optional[nn.Module]) -> Optional[tuple]:
    """(attr, algorithm) of oneDNN's post-op equal to ``act``; None if there is none."""
    if act is None or isinstance(act, nn.Identity):
        return 'none', None
    if type(act) is nn.GELU:
        return 'gelu', act.approximate  # 'none': the exact erf GELU
    if type(act) is nn.ReLU:
        return 'relu', None
    return None


def _runs_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN may run this call: eager fp32 CPU inference."""
    return (ONEDNN_PRESENT and x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.device.type == 'cpu' and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not (is_tracing() or is_compiling() or cpu_autocast_enabled()))


class _PackedWeight:
    """Mixin: a weight in oneDNN's layout, made on first use, dropped on copy, pickle,
    ``load_state_dict`` and device moves (oneDNN tensors have no storage to copy)."""

    def _packed(self):
        packed = self.__dict__.get('_packed_weight')
        if packed is None:
            with torch.no_grad():
                packed = self.__dict__['_packed_weight'] = self.pack_weight()
        return packed

    def _drop_packed(self, *args):
        self.__dict__.pop('_packed_weight', None)

    def _apply(self, fn, *args, **kwargs):
        self._drop_packed()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop('_packed_weight', None)
        return state


class FusedLinear(_PackedWeight, nn.Linear):
    """``act(linear(x))`` in one oneDNN call on fp32 CPU inference; the plain ops elsewhere.

    Same parameters and state-dict keys as the ``nn.Linear`` it replaces."""

    def __init__(self, linear: nn.Linear, act: Optional[nn.Module] = None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.act = act if act is not None else nn.Identity()
        self.post_op = _post_op(act)
        if self.post_op is None:
            raise ValueError(f'FusedLinear fuses GELU or ReLU, got {type(act).__name__}')
        self.register_load_state_dict_post_hook(self._drop_packed)

    def pack_weight(self) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() < MIN_ROWS * x.shape[-1] or not _runs_onednn(x, self.weight):
            return self.act(F.linear(x, self.weight, self.bias))
        attr, algorithm = self.post_op
        return torch.ops.mkldnn._linear_pointwise(x, self._packed(), self.bias, attr, [], algorithm)


class FoldedConv(_PackedWeight, nn.Module):
    """conv -> eval BatchNorm -> activation as one conv (BatchNorm folded into its weights);
    on fp32 CPU inference one oneDNN call with the activation as its post-op."""

    def __init__(self, conv: nn.Conv2d, bn: Optional[_BatchNorm], act: Optional[nn.Module]):
        super().__init__()
        with torch.no_grad():
            weight, bias = fold_batch_norm(conv.weight, conv.bias, bn)
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            True,
            device=weight.device,
            dtype=weight.dtype)
        self.conv.weight.data.copy_(weight)
        self.conv.bias.data.copy_(bias)
        self.act = act if act is not None else nn.Identity()
        self.post_op = _post_op(act)
        self.register_load_state_dict_post_hook(self._drop_packed)

    def pack_weight(self) -> torch.Tensor:
        c = self.conv
        return torch._C._nn.mkldnn_reorder_conv2d_weight(c.weight.detach().to_mkldnn(),
                                                         list(c.padding), list(c.stride),
                                                         list(c.dilation), c.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs_onednn(x, self.conv.weight):
            return self.act(self.conv(x))
        c = self.conv
        attr, algorithm = self.post_op
        return torch.ops.mkldnn._convolution_pointwise(x, self._packed(), c.bias, list(c.padding),
                                                       list(c.stride), list(c.dilation), c.groups,
                                                       attr, [], algorithm)


def fold_batch_norm(weight: torch.Tensor, bias: Optional[torch.Tensor],
                    bn: Optional[_BatchNorm]) -> tuple:
    """(weight, bias) of ``bn(conv(x))`` as one conv, from the running statistics."""
    if bn is None:
        return weight, bias if bias is not None else weight.new_zeros(weight.shape[0])
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift


def _foldable(module: ConvModule) -> bool:
    norm = module.norm if module.with_norm else None
    return (module.order == ('conv', 'norm', 'act') and type(module.conv) is nn.Conv2d
            and not module.with_explicit_padding and not isinstance(module.conv.padding, str)
            and (norm is None or (isinstance(norm, _BatchNorm) and norm.track_running_stats))
            and _post_op(module.activate if module.with_activation else None) is not None)


def fuse_for_cpu(model: nn.Module) -> nn.Module:
    """Convert an eval-mode model in place for fp32 CPU inference; returns it.

    Outputs equal the plain model's up to fp32 rounding (tests/test_deploy). Idempotent.
    Models in training mode are refused: BatchNorm statistics would be frozen into the convs.
    """
    if model.training:
        raise ValueError('fuse_for_cpu converts a model for inference: call model.eval() '
                         'first (BatchNorm is folded from its running statistics)')
    for module in list(model.modules()):
        pairs = LINEAR_ACTIVATION_PAIRS.get(type(module), ())
        # an activation shared by several Linears moves into all of them, or stays
        if pairs and all(
                type(getattr(module, linear)) is nn.Linear
                and _post_op(getattr(module, act)) is not None for linear, act in pairs):
            for linear, act in pairs:
                setattr(module, linear, FusedLinear(getattr(module, linear), getattr(module, act)))
            for _, act in pairs:
                setattr(module, act, nn.Identity())
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, FusedLinear(child))
            elif isinstance(child, ConvModule) and _foldable(child):
                setattr(
                    module, name,
                    FoldedConv(child.conv, child.norm if child.with_norm else None,
                               child.activate if child.with_activation else None))
    return model
