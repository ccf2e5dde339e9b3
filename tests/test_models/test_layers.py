"""Blocks against straightforward formulations of what the paper describes."""
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
