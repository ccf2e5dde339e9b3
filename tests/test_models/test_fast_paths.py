"""Each inference optimisation leaves the outputs unchanged (same weights, fp32 tolerance)."""
import pytest
import torch
import torch.nn as nn

from helpers import OpRecorder

from mmdualtoken.models import DualTokenViT
from mmdualtoken.models.layers import (ConvNormAct, OneDNNLinear, fusion_applies,
                                       fusion_disabled)

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])
FP32 = dict(atol=1e-5, rtol=1e-4)  # two fp32 GEMM libraries summing in different orders


def randomise_batch_norms(model: nn.Module):
    """Give every BatchNorm non-trivial statistics and affine parameters to fold."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + .5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))


def fused_and_plain(module: nn.Module, *inputs):
    with torch.no_grad():
        counter = OpRecorder()
        with counter:
            fused = module(*inputs)
        with fusion_disabled():
            plain = module(*inputs)
    return fused, plain, counter


@pytest.mark.parametrize('act', [None, nn.GELU(), nn.GELU(approximate='tanh'), nn.ReLU()])
@pytest.mark.parametrize('bias', [True, False])
def test_onednn_linear_matches_linear_then_activation(act, bias):
    torch.manual_seed(0)
    linear = OneDNNLinear(24, 40, bias=bias)
    x = torch.randn(2, 5, 7, 24)
    fused, plain, counter = fused_and_plain(lambda t: linear(t, act), x)
    assert counter.count('mkldnn._linear_pointwise') == 1 and counter.count('addmm') == 0
    torch.testing.assert_close(fused, plain, **FP32)
    reference = nn.functional.linear(x, linear.weight, linear.bias)
    torch.testing.assert_close(plain, reference if act is None else act(reference))


def test_unsupported_activation_takes_the_plain_path():
    linear = OneDNNLinear(8, 8)
    x = torch.randn(3, 8)
    with torch.no_grad(), OpRecorder() as counter:
        out = linear(x, nn.SiLU())
    assert counter.count('mkldnn') == 0
    torch.testing.assert_close(
        out, nn.functional.silu(nn.functional.linear(x, linear.weight, linear.bias)))


@pytest.mark.parametrize('groups,stride,act', [(1, 2, None), (8, 1, dict(type='GELU')),
                                              (8, 2, dict(type='ReLU')), (1, 1, dict(type='GELU'))])
def test_conv_norm_act_folds_batch_norm(groups, stride, act):
    torch.manual_seed(0)
    layer = ConvNormAct(8, 8, 3, stride=stride, padding=1, groups=groups,
                        norm_cfg=dict(type='BN'), act_cfg=act)
    randomise_batch_norms(layer)
    layer.eval()
    x = torch.randn(2, 8, 13, 10).contiguous(memory_format=torch.channels_last)
    fused, plain, counter = fused_and_plain(layer, x)
    assert counter.count('mkldnn._convolution_pointwise') == 1
    assert counter.count('batch_norm') == 0
    torch.testing.assert_close(fused, plain, **FP32)


def test_conv_norm_act_trains_with_batch_statistics():
    layer = ConvNormAct(4, 4, 3, padding=1, norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU'))
    x = torch.randn(2, 4, 6, 6)
    with OpRecorder() as counter:
        layer(x).sum().backward()
    assert counter.count('mkldnn') == 0 and counter.count('batch_norm') > 0
    assert layer.conv.weight.grad is not None


def test_fusion_only_where_no_gradient_is_needed():
    x = torch.randn(2, 8)
    weight = nn.Parameter(torch.randn(4, 8))
    with torch.no_grad():
        assert fusion_applies(x, weight)
        assert not fusion_applies(x.double(), weight)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not fusion_applies(x, weight)
        with fusion_disabled():
            assert not fusion_applies(x, weight)
    assert not fusion_applies(x, weight)  # grad mode and a trainable weight
    assert fusion_applies(x, weight.detach())  # grad mode, nothing to differentiate


@pytest.mark.parametrize('variant', [dict(arch=ARCH), dict(arch='tiny'),
                                     dict(arch='small-mix'),
                                     dict(arch=ARCH, global_tokens='normal'),
                                     dict(arch=ARCH, local_branch='window'),
                                     dict(arch=ARCH, max_global_tokens=12)])
@pytest.mark.parametrize('size', [(64, 64), (75, 131)])
def test_backbone_outputs_unchanged_by_the_fused_kernels(variant, size):
    torch.manual_seed(0)
    model = DualTokenViT(**variant)
    randomise_batch_norms(model)
    model.eval()
    fused, plain, counter = fused_and_plain(model, torch.rand(2, 3, *size))
    assert counter.count('addmm') == 0 and counter.count('batch_norm') == 0
    assert counter.count('mkldnn._linear_pointwise') > 0
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f, p, atol=1e-4, rtol=1e-3)


def test_training_forward_and_backward_use_the_plain_modules():
    torch.manual_seed(0)
    model = DualTokenViT(arch=ARCH).train()
    with OpRecorder() as counter:
        sum(o.mean() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert counter.count('mkldnn._linear_pointwise') == 0
    assert counter.count('mkldnn._convolution_pointwise') == 0
