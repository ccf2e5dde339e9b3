"""Blocks against straightforward formulations of what the paper describes."""
import pytest
import torch
import torch.nn.functional as F

from mmdualtoken.models.layers import (BiDimAttention, ResidualMergePatch, fit_token_budget,
                                       resize_token_grid)


def test_bidim_attention_matches_the_concatenation_form():
    """The split-weight spatial gate equals Linear(C/2 -> 1) on [local, global]."""
    torch.manual_seed(0)
    layer = BiDimAttention(32).eval()
    x = torch.randn(2, 5, 7, 32)
    y = layer.norm(x)
    g = F.gelu(layer.global_reduce(y.mean(dim=(1, 2), keepdim=True)))
    local = F.gelu(layer.local_reduce(y))
    both = torch.cat([local, g.expand_as(local)], dim=-1)
    expected = x * torch.sigmoid(layer.channel_select(g)) * torch.sigmoid(
        layer.spatial_select(both))
    torch.testing.assert_close(layer(x), expected)


def test_merge_patch_sizes_and_padding():
    layer = ResidualMergePatch(8, 16)
    for h, w in [(6, 8), (7, 9), (1, 1)]:
        out = layer(torch.randn(2, h, w, 8))
        assert out.shape == (2, (h + 1) // 2, (w + 1) // 2, 16)


def test_resize_is_a_no_op_at_the_same_size_and_bicubic_otherwise():
    tokens = torch.randn(1, 7, 7, 4)
    assert resize_token_grid(tokens, (7, 7)) is tokens
    out = resize_token_grid(tokens, (25, 42))
    expected = F.interpolate(
        tokens.permute(0, 3, 1, 2), size=(25, 42), mode='bicubic',
        align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected)


def test_token_budget_keeps_aspect_and_fits():
    assert fit_token_budget(25, 42, 196) == (10, 18)
    for h, w, budget in [(25, 42, 196), (1, 500, 10), (100, 3, 7), (7, 7, 49)]:
        gh, gw = fit_token_budget(h, w, budget)
        assert 1 <= gh * gw <= budget


def test_bicubic_matrix_is_torchs_bicubic_resize():
    """The export path of resize_token_grid (matrix products) equals F.interpolate."""
    from mmdualtoken.models.layers.token_grid import bicubic_matrix
    for size_in, size_out in [(7, 5), (7, 9), (7, 25), (42, 18), (1, 3), (3, 1)]:
        x = torch.randn(2, 3, size_in, 4)
        expected = F.interpolate(x, size=(size_out, 4), mode='bicubic', align_corners=False)
        got = torch.einsum('ih,bchw->bciw', bicubic_matrix(size_in, size_out, x.dtype, x.device), x)
        torch.testing.assert_close(got, expected)


def test_token_budget_int_and_traced_forms_agree():
    """The int form (eager, torch.export) and the tensor form (TorchScript tracing) of the
    budget rule give the same grid."""
    import random

    from mmdualtoken.models.layers.global_token_module import _fit_token_budget
    rng = random.Random(0)
    for _ in range(3000):
        h, w, budget = rng.randint(1, 400), rng.randint(1, 400), rng.randint(1, 400)
        gh, gw = _fit_token_budget(torch.tensor([h, w]), budget)
        assert fit_token_budget(h, w, budget) == (int(gh), int(gw)), (h, w, budget)


@pytest.fixture
def deterministic_algorithms():
    """Turns torch's deterministic algorithms on as mmengine's randomness.deterministic does,
    and back to what they were after the test."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    yield lambda on: torch.use_deterministic_algorithms(on)
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize('function, size_in, size_out', [('resize', (7, 7), (25, 42)),
                                                         ('resize', (10, 18), (7, 7)),
                                                         ('resize', (3, 5), (5, 3)),
                                                         ('pool', (25, 42), (10, 18)),
                                                         ('pool', (13, 7), (4, 3))])
def test_token_grid_matrix_forms_equal_the_plain_ops_forward_and_backward(
        deterministic_algorithms, function, size_in, size_out):
    """resize_token_grid and average_pool_token_grid with deterministic algorithms on (the
    matrix products) against off (F.interpolate, F.adaptive_avg_pool2d): outputs and input
    gradients, enlarging, shrinking and mixed, in float32."""
    from mmdualtoken.models.layers.token_grid import average_pool_token_grid
    resize = dict(resize=resize_token_grid, pool=average_pool_token_grid)[function]
    torch.manual_seed(0)
    tokens = torch.randn(2, *size_in, 8)
    weight = torch.randn(2, *size_out, 8)
    results = []
    for on in (False, True):
        deterministic_algorithms(on)
        x = tokens.clone().requires_grad_()
        out = resize(x, size_out)
        (out * weight).sum().backward()
        results.append((out.detach(), x.grad))
    (plain, plain_grad), (matrix, matrix_grad) = results
    assert matrix.shape == (2, *size_out, 8)
    torch.testing.assert_close(matrix, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(matrix_grad, plain_grad, atol=1e-5, rtol=1e-5)


def test_deterministic_algorithms_take_the_matrix_forms_with_the_same_values(
        deterministic_algorithms):
    """With deterministic algorithms on (randomness.deterministic=True) the backbone runs
    neither bicubic interpolation nor adaptive average pooling, whose CUDA backward kernels are
    nondeterministic (torch raises there), but the token grid's matrix products: the same
    outputs and gradients, at a non-square size with the token budget. In float64,
    so that rounding (which the gradients of the first layers sum over thousands of terms)
    does not hide a difference; the matrices themselves are computed in float32."""
    from helpers import OpRecorder

    from mmdualtoken.models import DualTokenViT
    torch.manual_seed(0)
    model = DualTokenViT(arch='tiny', out_indices=(0, 1, 2), max_global_tokens=20)
    model = model.eval().double()
    image = torch.randn(1, 3, 267, 160, dtype=torch.float64)  # resized and pooled grids

    def step():
        model.zero_grad()
        with OpRecorder() as recorder:
            outs = model(image)
            weights = [torch.linspace(0, 1, o.numel(), dtype=o.dtype).view_as(o) for o in outs]
            sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return [o.detach() for o in outs], grads, recorder

    deterministic_algorithms(False)
    plain_outs, plain_grads, plain = step()
    assert plain.count('upsample_bicubic2d') and plain.count('adaptive_avg_pool2d')
    deterministic_algorithms(True)
    outs, grads, recorder = step()
    assert not recorder.count('upsample_bicubic2d') and not recorder.count('adaptive_avg_pool')

    def relative_error(got, expected):
        return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-12))

    for got, expected in zip(outs, plain_outs):
        assert relative_error(got, expected) < 1e-5
    assert grads.keys() == plain_grads.keys()
    errors = {name: relative_error(grads[name], plain_grads[name]) for name in grads}
    assert max(errors.values()) < 1e-5, max(errors.items(), key=lambda item: item[1])
