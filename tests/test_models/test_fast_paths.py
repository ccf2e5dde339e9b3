"""Each inference optimisation leaves the outputs unchanged (same weights, fp32 tolerance)."""
import pytest
import torch
import torch.nn as nn

from helpers import OpRecorder

from mmdualtoken.models import DualTokenViT
from mmdualtoken.models.layers import onednn_fusion
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


@pytest.fixture(autouse=True)
def packing_probed():
    """The one-off feature test of weight packing runs oneDNN ops itself: run it before the
    tests' op recorders start."""
    onednn_fusion.weight_packing_supported()


@pytest.fixture
def every_row_on_onednn(monkeypatch):
    """No row threshold: the kernels themselves are compared, at any input size."""
    monkeypatch.setattr(onednn_fusion, 'INFERENCE_MIN_ROWS', 1)
    monkeypatch.setattr(onednn_fusion, 'TRAINING_MIN_ROWS', 1)


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
def test_onednn_linear_matches_linear_then_activation(act, bias, every_row_on_onednn):
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


def test_conv_norm_act_folds_once_until_a_source_tensor_changes():
    """The folded weights are reused between calls and refolded after every kind of change:
    in-place (an optimizer step, load_state_dict), training statistics, a new parameter."""
    torch.manual_seed(0)
    layer = ConvNormAct(8, 8, 3, padding=1, groups=8, norm_cfg=dict(type='BN'),
                        act_cfg=dict(type='GELU'))
    randomise_batch_norms(layer)
    layer.eval()
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)

    def check(folds: int):
        fused, plain, counter = fused_and_plain(layer, x)
        assert counter.count('rsqrt') == folds
        torch.testing.assert_close(fused, plain, **FP32)

    check(folds=1)
    check(folds=0)  # reused
    with torch.no_grad():
        layer.conv.weight.mul_(2)
    check(folds=1)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state['bn.running_var'] += 1
    layer.load_state_dict(state)
    check(folds=1)
    layer.train()
    layer(x)  # batch statistics update the running ones in place (no version bump)
    layer.eval()
    check(folds=1)
    layer.bn.train()  # the same, with only the BatchNorm switched
    layer(x)
    layer.bn.eval()
    check(folds=1)
    layer.bn.bias = nn.Parameter(torch.randn(8))
    check(folds=1)
    layer.bn.eps = 1e-3
    check(folds=1)
    check(folds=0)


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
def test_backbone_outputs_unchanged_by_the_fused_kernels(variant, size, every_row_on_onednn):
    torch.manual_seed(0)
    model = DualTokenViT(**variant)
    randomise_batch_norms(model)
    model.eval()
    fused, plain, counter = fused_and_plain(model, torch.rand(2, 3, *size))
    assert counter.count('addmm') == 0 and counter.count('batch_norm') == 0
    assert counter.count('mkldnn._linear_pointwise') > 0
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f, p, atol=1e-4, rtol=1e-3)


def test_training_runs_no_fused_inference_kernel(every_row_on_onednn):
    """Training keeps BatchNorm and the activations as separate ops (batch statistics);
    only the Linear products run on oneDNN, through the autograd function."""
    torch.manual_seed(0)
    model = DualTokenViT(arch=ARCH).train()
    with OpRecorder() as counter:
        sum(o.mean() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert counter.count('mkldnn._convolution_pointwise') == 0
    assert counter.count('batch_norm') > 0 and counter.count('gelu') > 0
    assert counter.count('mkldnn._linear_pointwise') > 0 and counter.count('addmm') == 0


def linear_and_gradients(linear: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list:
    x = x.detach().requires_grad_(x.requires_grad)
    linear.zero_grad()
    y = linear(x)
    y.backward(grad)
    return [y, x.grad, linear.weight.grad, linear.bias.grad if linear.bias is not None else None]


@pytest.mark.parametrize('shape', [(40, 24), (2, 5, 7, 24), 'permuted'])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('input_grad', [True, False])
def test_onednn_linear_function_matches_linear_and_its_gradients(shape, bias, input_grad,
                                                                every_row_on_onednn):
    """Forward, dx, dW and db of OneDNNLinearFunction against F.linear's autograd on the
    same weights (fp32 tolerance), twice in a row; non-contiguous inputs and gradients."""
    torch.manual_seed(0)
    linear = OneDNNLinear(24, 40, bias=bias)
    if shape == 'permuted':  # channels-last view, as the conv encoder gives its tokens
        x = torch.randn(2, 24, 5, 7).permute(0, 2, 3, 1)
        grad = torch.randn(2, 40, 5, 7).permute(0, 2, 3, 1)
    else:
        x, grad = torch.randn(shape), torch.randn(*shape[:-1], 40)
    x.requires_grad_(input_grad)
    for _ in range(2):
        with OpRecorder() as counter:
            fast = linear_and_gradients(linear, x, grad)
        assert counter.count('mkldnn._linear_pointwise') == 1 + input_grad
        assert counter.count('addmm') == 0
        with fusion_disabled():
            plain = linear_and_gradients(linear, x, grad)
        for f, p in zip(fast, plain):
            assert (f is None) == (p is None)
            if f is not None:
                torch.testing.assert_close(f, p, **FP32)


@pytest.mark.parametrize('grad', [False, True])
def test_few_rows_stay_on_the_blas(grad):
    """Under INFERENCE_MIN_ROWS rows (TRAINING_MIN_ROWS where gradients are needed) the plain
    module runs; at the threshold oneDNN does. Same results either way."""
    torch.manual_seed(0)
    linear = OneDNNLinear(24, 40)
    threshold = onednn_fusion.TRAINING_MIN_ROWS if grad else onednn_fusion.INFERENCE_MIN_ROWS
    for rows, onednn in ((1, False), (threshold - 1, False), (threshold, True)):
        x = torch.randn(rows, 1, 1, 24, requires_grad=grad)
        with torch.set_grad_enabled(grad), OpRecorder() as counter:
            out = linear(x, nn.GELU())
        assert (counter.count('mkldnn') > 0) == onednn
        expected = nn.functional.gelu(nn.functional.linear(x, linear.weight, linear.bias))
        torch.testing.assert_close(out, expected, **FP32)


def test_batch_one_runs_every_token_product_on_onednn():
    """At batch 1, 224 every Linear of the token matrices (stage 3's 49 tokens and the 49
    global tokens included) runs on oneDNN with its packed weight and no reshapes around it;
    only BiDim attention's global vector (1 row) stays on the BLAS."""
    rows = {'mkldnn._linear_pointwise': [], 'aten.addmm': []}

    class RowRecorder(OpRecorder):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            if name in rows:
                x = args[0] if name.startswith('mkldnn') else args[1]
                rows[name].append(x.numel() // x.shape[-1])
                if name.startswith('mkldnn'):
                    assert args[1].is_mkldnn == onednn_fusion.weight_packing_supported()
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = DualTokenViT(arch='tiny', out_indices=(2, )).eval()
    with torch.no_grad(), RowRecorder():
        model(torch.rand(1, 3, 224, 224))
    threshold = onednn_fusion.INFERENCE_MIN_ROWS
    assert min(rows['mkldnn._linear_pointwise']) == 49
    assert rows['aten.addmm'] and max(rows['aten.addmm']) < threshold


@pytest.mark.parametrize('packing', [True, False])
def test_packed_and_dense_weights_give_the_same_outputs(packing, monkeypatch):
    """The packed-weight kernels and their fallback (torch builds without weight packing:
    the dense weights go to the same kernels) against the plain modules."""
    if packing and not onednn_fusion.weight_packing_supported():
        pytest.fail('oneDNN weight packing is expected on the supported torch builds')
    monkeypatch.setattr(onednn_fusion, 'weight_packing_supported', lambda: packing)
    torch.manual_seed(0)
    model = DualTokenViT(arch=ARCH)
    randomise_batch_norms(model)
    model.eval()
    fused, plain, counter = fused_and_plain(model, torch.rand(1, 3, 96, 64))
    assert counter.count('mkldnn._linear_pointwise') > 0
    assert counter.count('mkldnn._convolution_pointwise') > 0
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f, p, atol=1e-4, rtol=1e-3)


def test_packed_weights_follow_the_parameters_and_stay_out_of_copies():
    """A packed weight is reused until its parameter changes (optimizer step, load), dropped
    by train()/eval(), and neither deep copies (EMA hooks) nor pickles carry it."""
    import copy
    import io
    torch.manual_seed(0)
    linear = OneDNNLinear(24, 40)
    x = torch.randn(32, 24)

    def packs() -> int:
        with torch.no_grad(), OpRecorder() as counter:
            out = linear(x)
        torch.testing.assert_close(out, nn.functional.linear(x, linear.weight, linear.bias),
                                   **FP32)
        return counter.count('_reorder_linear_weight')

    expected = int(onednn_fusion.weight_packing_supported())
    assert packs() == expected and packs() == 0
    with torch.no_grad():
        linear.weight.mul_(2)
    assert packs() == expected
    linear.load_state_dict({'weight': torch.randn(40, 24), 'bias': torch.randn(40)})
    assert packs() == expected
    linear.eval()
    assert packs() == expected
    clone = copy.deepcopy(linear)
    assert '_inference_weights' not in clone.__dict__ and '_inference_weights' in linear.__dict__
    torch.save(linear, io.BytesIO())
    with torch.no_grad():
        torch.testing.assert_close(clone(x), linear(x))


def test_onednn_linear_function_only_where_onednn_applies(every_row_on_onednn):
    linear = OneDNNLinear(8, 4)
    x = torch.randn(40, 8)
    with OpRecorder() as counter:
        linear.double()(x.double()).sum().backward()  # float64: the plain module
        linear.float()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            linear(x).float().sum().backward()
        with fusion_disabled():
            linear(x).sum().backward()
    assert counter.count('mkldnn') == 0


@pytest.mark.parametrize('variant', [dict(arch=ARCH), dict(arch='small-mix', with_cp=True),
                                     dict(arch=ARCH, global_tokens='normal', frozen_stages=1)])
def test_backbone_training_gradients_unchanged_by_the_onednn_linear(variant,
                                                                    every_row_on_onednn):
    """One training forward and backward, oneDNN Linear against the plain modules: the
    outputs and every parameter's gradient agree (fp32 tolerance; BatchNorm in training
    mode on both paths)."""
    torch.manual_seed(0)
    model = DualTokenViT(**variant).train()
    x = torch.rand(2, 3, 64, 96)

    def run():
        model.zero_grad()
        outs = model(x)
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        return [o.detach() for o in outs], {n: p.grad.clone() for n, p in
                                            model.named_parameters() if p.grad is not None}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast_outs, fast_grads = run()
    model.load_state_dict(state)  # BatchNorm running statistics back as they were
    with fusion_disabled():
        plain_outs, plain_grads = run()
    for f, p in zip(fast_outs, plain_outs):
        torch.testing.assert_close(f, p, atol=1e-4, rtol=1e-3)
    assert fast_grads.keys() == plain_grads.keys() and len(fast_grads) > 0
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], atol=1e-4, rtol=1e-3,
                                   msg=lambda m: f'{name}: {m}')
