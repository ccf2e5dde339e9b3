"""fuse_for_cpu: the converted model computes what the plain one does (same weights, fp32)."""
import copy
import io
import os
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from helpers import REPO_ROOT, OpRecorder
from mmcv.cnn import ConvModule

from mmdualtoken import compat
from mmdualtoken.deploy import cpu_fusion, fuse_for_cpu
from mmdualtoken.deploy.cpu_fusion import FoldedConv, FusedLinear
from mmdualtoken.models import DualTokenViT
from mmdualtoken.models.layers import BiDimAttention, Mlp

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])
FP32 = dict(atol=1e-5, rtol=1e-4)  # two fp32 GEMM libraries summing in different orders


def randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters to fold; eval mode."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + .5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))
    return model.eval()


def plain_and_fused(**kwargs) -> tuple:
    torch.manual_seed(0)
    plain = randomised(DualTokenViT(**kwargs))
    return plain, fuse_for_cpu(copy.deepcopy(plain))


@pytest.mark.parametrize(
    'variant', [dict(arch=ARCH),
                dict(arch='small'),
                dict(arch='tiny-mix', max_global_tokens=20)])
@pytest.mark.parametrize('size', [(224, 224), (75, 131)])
def test_fused_model_matches_the_plain_one_on_the_same_weights(variant, size):
    plain, fused = plain_and_fused(**variant)
    x = torch.randn(2, 3, *size)
    with torch.no_grad(), OpRecorder() as ops:
        outputs = fused(x)
    with torch.no_grad():
        expected = plain(x)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, **FP32)
    if cpu_fusion.ONEDNN_PRESENT:
        assert ops.count('mkldnn._linear_pointwise') > 0
        assert ops.count('mkldnn._convolution_pointwise') > 0


def test_conversion_replaces_the_modules_and_keeps_the_parameters():
    plain, fused = plain_and_fused(arch=ARCH)
    assert not any(type(m) is nn.Linear for m in fused.modules())
    assert not any(isinstance(m, ConvModule) for m in fused.modules())
    mlp = next(m for m in fused.modules() if isinstance(m, Mlp))
    bidim = next(m for m in fused.modules() if isinstance(m, BiDimAttention))
    assert isinstance(mlp.act, nn.Identity) and type(mlp.fc1.act) is nn.GELU
    assert isinstance(bidim.act, nn.Identity)
    assert type(bidim.local_reduce.act) is nn.GELU and type(bidim.global_reduce.act) is nn.GELU
    # the Linears share their parameters; the folded convs have their own
    plain_linear = sum(p.numel() for m in plain.modules() if type(m) is nn.Linear
                       for p in m.parameters())
    fused_linear = sum(p.numel() for m in fused.modules() if isinstance(m, FusedLinear)
                       for p in m.parameters())
    assert plain_linear == fused_linear
    assert sum(isinstance(m, FoldedConv)
               for m in fused.modules()) == sum(isinstance(m, ConvModule) for m in plain.modules())


def test_conversion_is_idempotent_and_refuses_training_mode():
    plain, fused = plain_and_fused(arch=ARCH)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        once = fused(x)
        twice = fuse_for_cpu(fused)(x)
    for a, b in zip(once, twice):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r'call model\.eval\(\) first'):
        fuse_for_cpu(DualTokenViT(arch=ARCH))


def test_gradients_tracing_and_autocast_take_the_plain_ops():
    """oneDNN's fused kernels have no autograd formula and are not exportable: there the
    converted modules compute the same maths with the plain ops."""
    plain, fused = plain_and_fused(arch=ARCH)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    with OpRecorder() as ops:
        out = fused(x)
    assert ops.count('mkldnn._linear_pointwise') == 0
    out[-1].sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(out[-1], plain(x)[-1], **FP32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), OpRecorder() as ops:
        fused(x.detach())
    assert ops.count('mkldnn._linear_pointwise') == 0
    traced = torch.jit.trace(fused, x.detach(), check_trace=False)
    assert 'mkldnn' not in str(traced.inlined_graph)


def test_autocast_and_compile_checks_use_the_torch_2_1_fallbacks(monkeypatch):
    """With compat's legacy readers (what torch 2.1 runs), autocast and compilation still take
    the plain ops."""
    monkeypatch.setattr(cpu_fusion, 'cpu_autocast_enabled', compat._cpu_autocast_enabled_legacy)
    monkeypatch.setattr(cpu_fusion, 'is_compiling', compat._is_compiling_dynamo)
    linear = FusedLinear(nn.Linear(8, 8), nn.GELU()).eval()
    x = torch.randn(32, 8)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), OpRecorder() as ops:
        y = linear(x)
    assert y.dtype == torch.bfloat16 and ops.count('mkldnn') == 0
    seen = []

    def probe(t):
        seen.append(cpu_fusion._runs_onednn(t, linear.weight))
        return linear(t)

    with torch.no_grad():
        torch.compile(probe, backend='eager')(x)
    assert seen == [False]


def test_without_onednn_ops_the_plain_ops_run(monkeypatch):
    monkeypatch.setattr(cpu_fusion, 'ONEDNN_PRESENT', False)
    plain, fused = plain_and_fused(arch=ARCH)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), OpRecorder() as ops:
        out = fused(x)
    assert ops.count('mkldnn._') == 0
    with torch.no_grad():
        torch.testing.assert_close(out[-1], plain(x)[-1], **FP32)


def test_packed_weights_follow_load_state_dict_and_stay_out_of_copies():
    """Where oneDNN runs, the packed weights are re-made after a load and not copied; on a
    torch without the kernels the same outputs come from the plain ops."""
    plain, fused = plain_and_fused(arch=ARCH)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = fused(x)[-1]
        state = {
            k: v + .01 * torch.randn_like(v) if v.is_floating_point() else v
            for k, v in fused.state_dict().items()
        }
        fused.load_state_dict(state)
        changed = fused(x)[-1]
        copied = copy.deepcopy(fused)(x)[-1]
        buffer = io.BytesIO()
        torch.save(fused, buffer)
    assert not torch.allclose(before, changed)
    assert torch.equal(changed, copied)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x)[-1], changed)


def test_models_package_calls_no_private_torch_op():
    """The model's forward is plain PyTorch: private ops live in mmdualtoken/deploy only."""
    root = osp.join(REPO_ROOT, 'mmdualtoken', 'models')
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith('.py'):
                with open(osp.join(folder, name)) as f:
                    found += [
                        f'{name}: {line.strip()}' for line in f
                        if re.search(r'torch\.ops\.|torch\._C\.', line)
                    ]
    assert found == []
