import math
from copy import deepcopy

import pytest
import torch
from helpers import OpRecorder
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.modules.batchnorm import _BatchNorm

from mmdualtoken.models import DualTokenViT

# A small custom arch keeps the tests fast; the zoo archs are built where it matters.
TINY_ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])


def build(**kwargs):
    kwargs.setdefault('arch', TINY_ARCH)
    torch.manual_seed(0)
    return DualTokenViT(**kwargs)


def expected_maps(h, w):
    return [(math.ceil(h / s), math.ceil(w / s)) for s in (8, 16, 32)]


def test_arch_zoo_and_aliases():
    for name in ('t', 'tiny', 's', 'small', 'tiny-mix', 'small-mix', 'SMALL'):
        model = DualTokenViT(arch=name)
        assert len(model.stages) == 3
    assert DualTokenViT(arch='t').embed_dims == DualTokenViT(arch='tiny').embed_dims
    assert DualTokenViT(
        arch='small-mix').stages[0].blocks[0].global_module.token_mlp.__class__.__name__ == 'MixMlp'


@pytest.mark.parametrize('arch, message', [
    ('huge', "Unknown arch 'huge'"),
    (dict(embed_dims=[16, 32, 64], depths=[1, 1, 1]), "missing ['num_heads']"),
    (dict(TINY_ARCH, width=3), "unknown ['width']"),
    (dict(embed_dims=[16, 32], depths=[1, 1], num_heads=[1, 1]), 'needs 3 entries'),
    (dict(embed_dims=[16, 30, 64], depths=[1, 1, 1], num_heads=[1, 4, 4]), 'divide by'),
])
def test_bad_arch(arch, message):
    with pytest.raises(
            ValueError, match=message.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(')):
        DualTokenViT(arch=arch)


@pytest.mark.parametrize('kwargs, message', [
    (dict(out_indices=(0, 3)), r'out_indices entries must be ints in \[-3, 2\]'),
    (dict(out_indices=-4), r'out_indices entries must be ints in \[-3, 2\]'),
    (dict(frozen_stages=4), r'frozen_stages must be in \[-1, 3\]'),
    (dict(frozen_stages=-2), r'frozen_stages must be in \[-1, 3\]'),
    (dict(local_branch='swin'), r"local_branch must be one of \['conv', 'window'\]"),
    (dict(global_tokens='all'),
     r"global_tokens must be one of \['position_aware', 'normal', 'none'\]"),
    (dict(downsample='two_step'), r"downsample must be one of \['step_wise', 'one_step'\]"),
    (dict(token_mlp='mixer'), r"token_mlp must be one of \['mlp', 'mix'\]"),
    (dict(grid_size=0), 'grid_size must be a positive int'),
    (dict(max_global_tokens=0), 'max_global_tokens must be None'),
    (dict(downsample_steps=(2, 1)), 'downsample_steps must be 3 ints'),
    (dict(drop_path_rate=1.), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=-.1), r'drop_path_rate must be in \[0, 1\)'),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_negative_out_indices_count_from_the_last_stage():
    assert build(out_indices=(-1, )).out_indices == (2, )
    assert build(out_indices=(-3, -2)).out_indices == (0, 1)


@pytest.mark.parametrize('size', [(224, 224), (256, 256), (33, 517), (511, 511), (800, 1333)])
def test_output_shapes(size):
    model = build().eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, *size))
    assert len(outs) == 3
    for out, channels, hw in zip(outs, TINY_ARCH['embed_dims'], expected_maps(*size)):
        assert out.shape == (1, channels, *hw)


@pytest.mark.parametrize('out_indices', [(0, ), (1, ), (2, ), (0, 2), -1])
def test_out_indices(out_indices):
    model = build(out_indices=out_indices).eval()
    outs = model(torch.rand(2, 3, 64, 96))
    indices = (out_indices % 3, ) if isinstance(out_indices, int) else out_indices
    assert len(outs) == len(indices)
    maps = expected_maps(64, 96)
    for out, i in zip(outs, indices):
        assert out.shape == (2, TINY_ARCH['embed_dims'][i], *maps[i])
    assert model.num_features == [TINY_ARCH['embed_dims'][i] for i in indices]


def test_zoo_archs_output_shapes():
    for arch in ('tiny', 'small'):
        model = DualTokenViT(arch=arch).eval()
        with torch.no_grad():
            outs = model(torch.rand(1, 3, 224, 224))
        assert [tuple(o.shape[1:])
                for o in outs] == [(c, s, s) for c, s in zip(model.embed_dims, (28, 14, 7))]


def test_gap_before_final_norm():
    model = build(gap_before_final_norm=True, out_indices=(1, 2)).eval()
    outs = model(torch.rand(2, 3, 96, 80))
    assert [tuple(o.shape) for o in outs] == [(2, 32), (2, 64)]


@pytest.mark.parametrize('variant', [
    dict(local_branch='window'),
    dict(global_tokens='normal'),
    dict(global_tokens='none'),
    dict(downsample='one_step'),
    dict(token_mlp='mix'),
    dict(grid_size=5),
    dict(grid_size=(4, 6)),
    dict(max_global_tokens=12),
])
@pytest.mark.parametrize('size', [(224, 224), (97, 161)])
def test_ablation_switches_run_at_any_size(variant, size):
    model = build(**variant).eval()
    outs = model(torch.rand(1, 3, *size))
    assert [tuple(o.shape[2:]) for o in outs] == expected_maps(*size)
    assert all(torch.isfinite(o).all() for o in outs)


def test_no_interpolation_at_224_and_interpolation_elsewhere():
    model = build().eval()
    with torch.no_grad(), OpRecorder() as rec:
        model(torch.rand(1, 3, 224, 224))
    assert not any('upsample' in op for op in rec.ops), rec.ops
    with torch.no_grad(), OpRecorder() as rec:
        model(torch.rand(1, 3, 256, 320))
    assert 'aten.upsample_bicubic2d' in rec.ops


def test_global_tokens_follow_the_downsampled_grid():
    """At 800x1333 X_ds is 25x42 in every stage and the tokens are resized to it."""
    model = build().eval()
    seen = []
    for stage in model.stages:
        stage.blocks[-1].register_forward_hook(lambda m, i, o: seen.append(tuple(o[1].shape)))
    with torch.no_grad():
        model(torch.rand(1, 3, 800, 1333))
    assert seen == [(1, 25, 42, 16), (1, 25, 42, 32), (1, 25, 42, 64)]


def test_token_budget_bounds_the_global_tokens():
    model = build(max_global_tokens=100).eval()
    seen = []
    model.stages[0].blocks[0].register_forward_hook(lambda m, i, o: seen.append(o[1].shape))
    with torch.no_grad():
        model(torch.rand(1, 3, 800, 1333))
    h, w = seen[0][1:3]
    assert h * w <= 100 and (h, w) == (7, 12)
    # below the budget (224) the budget changes nothing
    x = torch.rand(1, 3, 224, 224)
    free = build().eval()
    with torch.no_grad():
        for a, b in zip(free(x), build(max_global_tokens=49).eval()(x)):
            torch.testing.assert_close(a, b)


def test_init_weights():
    model = build()
    model.init_weights()
    linear = model.stages[1].blocks[0].ffn.fc1
    assert abs(linear.weight.std().item() - 0.02) < 0.01
    assert torch.all(linear.bias == 0)
    assert abs(model.global_tokens.std().item() - 0.02) < 0.01


def bn_statistics(model) -> dict:
    """Every BatchNorm buffer (running_mean/var, num_batches_tracked), cloned, by name."""
    return {
        f'{name}.{key}': buf.clone()
        for name, m in model.named_modules() if isinstance(m, _BatchNorm)
        for key, buf in m.named_buffers(recurse=False)
    }


def frozen_prefixes(frozen_stages):
    """ResNet's meaning: 0 = stem + global tokens; k = also stages[0..k-1], norm0..norm{k-1}."""
    if frozen_stages < 0:
        return ()
    return ('stem.', 'global_tokens', *(f'stages.{i}.' for i in range(frozen_stages)),
            *(f'norm{i}.' for i in range(frozen_stages)))


@pytest.mark.parametrize('frozen_stages', [0, 1, 3])
def test_frozen_stages_do_not_change_in_a_training_step(frozen_stages):
    """One AdamW step (weight decay on) in train mode: the frozen parameters and the running
    statistics of the frozen BatchNorms stay bitwise as they were; the rest trains."""
    model = build(frozen_stages=frozen_stages).train()
    torch.manual_seed(1)
    # a tiny trainable head, so that there is a loss to step even with every stage frozen
    head = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.randn(c, 1, 1)) for c in TINY_ARCH['embed_dims']])
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats_before = bn_statistics(model)
    head_before = [p.detach().clone() for p in head]
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()],
                                  lr=1e-2,
                                  weight_decay=0.05)
    outs = model(torch.rand(2, 3, 64, 64))
    sum((o * w).sum() for o, w in zip(outs, head)).backward()
    optimizer.step()

    prefixes = frozen_prefixes(frozen_stages)
    frozen = [n for n in params_before if n.startswith(prefixes)]
    assert 'global_tokens' in frozen and any(n.startswith('stem.') for n in frozen)
    for name, param in model.named_parameters():
        if name.startswith(prefixes):
            assert torch.equal(param, params_before[name]), f'frozen {name} changed'
        else:
            assert not torch.equal(param, params_before[name]), f'{name} did not train'
    frozen_stats = [n for n in stats_before if n.startswith(prefixes)]
    assert frozen_stats  # the stem has BatchNorms
    for name, stat in bn_statistics(model).items():
        if name.startswith(prefixes):
            assert torch.equal(stat, stats_before[name]), f'frozen BN statistic {name} changed'
        else:
            assert not torch.equal(stat, stats_before[name]), f'{name} was not updated'
    assert all(not torch.equal(p, b) for p, b in zip(head, head_before))
    if frozen_stages == 3:  # everything in the backbone is frozen
        assert len(frozen) == len(params_before)


def test_norm_eval_keeps_batch_norm_statistics():
    x = torch.rand(2, 3, 64, 64)
    model = build(norm_eval=True)
    assert model.train() is model and model.eval() is model
    model.train()
    assert model.stages[0].blocks[0].ffn.training  # only the BatchNorms are in eval mode
    before = bn_statistics(model)
    assert before
    for _ in range(2):
        model(x)
    for name, stat in bn_statistics(model).items():
        assert torch.equal(stat, before[name]), name
    # without norm_eval, the same forward passes update every BatchNorm
    model = build(norm_eval=False).train()
    for _ in range(2):
        model(x)
    for name, stat in bn_statistics(model).items():
        assert not torch.equal(stat, before[name]), name


def test_drop_path_rates_increase_linearly():
    model = build(drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, len(rates)))


def test_residual_drop_path_drops_or_scales_each_samples_branch():
    """x + DropPath(branch) in one addcmul, as mmcv's DropPath and the sum: each sample's
    branch dropped or scaled by 1 / (1 - p), about p of them dropped; in evaluation the sum."""
    from mmdualtoken.models.layers import ResidualDropPath
    drop = ResidualDropPath(0.25).train()
    x, branch = torch.randn(4000, 3, 5), torch.randn(4000, 3, 5)
    torch.manual_seed(0)
    out = drop(x, branch)
    kept = torch.isclose(out, x + branch / 0.75, rtol=1e-6, atol=1e-6).flatten(1).all(1)
    dropped = torch.equal(out[~kept], x[~kept])
    assert dropped and abs((~kept).float().mean().item() - 0.25) < 0.03
    assert torch.equal(drop.eval()(x, branch), x + branch)
    with pytest.raises(ValueError, match=r'drop_prob must be in \[0, 1\), got 1.0'):
        ResidualDropPath(1.)


def test_drop_path_is_random_in_training_and_off_in_eval():
    x = torch.rand(2, 3, 64, 64)
    model = build(drop_path_rate=0.5).train()

    def forward(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return model(x)

    first, other, again = forward(1), forward(2), forward(1)
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # eval: exactly the model without drop path, on the same weights
    plain = build(drop_path_rate=0.)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        for a, b in zip(forward(3), plain(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_with_cp_checkpoints_every_block_and_changes_nothing(monkeypatch):
    """Gradient checkpointing is really used, gives the same outputs, gradients (drop path
    replayed with the same mask) and BatchNorm running statistics (updated once per step,
    not again when backward recomputes the block)."""
    import torch.utils.checkpoint as torch_cp

    from mmdualtoken.models.backbones import dualtoken_vit
    calls = []
    original = torch_cp.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(dualtoken_vit.cp, 'checkpoint', counting_checkpoint)
    x = torch.rand(2, 3, 72, 88)
    plain, checkpointed = build(drop_path_rate=0.3), build(drop_path_rate=0.3, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    plain.train(), checkpointed.train()
    torch.manual_seed(5)
    weights = [torch.randn(2, c, 1, 1) for c in TINY_ARCH['embed_dims']]
    outs = []
    for model in (plain, checkpointed):
        torch.manual_seed(7)  # the same drop-path masks in both
        out = model(x)
        sum((o * w).sum() for o, w in zip(out, weights)).backward()
        outs.append(out)
    assert len(calls) == sum(TINY_ARCH['depths'])  # one checkpoint per block, plain: none
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)
    stats, cp_stats = bn_statistics(plain), bn_statistics(checkpointed)
    assert any('.blocks.' in name for name in stats)  # the token downsampling's BNs
    for name, stat in stats.items():
        torch.testing.assert_close(cp_stats[name], stat, rtol=0, atol=0, msg=name)
        if name.endswith('num_batches_tracked'):
            assert int(cp_stats[name]) == 1, name
    # a second step: still once per step
    torch.manual_seed(7)
    sum(o.sum() for o in checkpointed(x)).backward()
    counts = [
        int(v) for n, v in bn_statistics(checkpointed).items() if n.endswith('num_batches_tracked')
    ]
    assert counts and all(c == 2 for c in counts)


@pytest.mark.parametrize(
    'variant',
    [dict(),
     dict(token_mlp='mix'),
     dict(global_tokens='normal'),
     dict(local_branch='window')])
def test_backward_reaches_every_parameter(variant):
    model = build(**variant).train()
    outs = model(torch.rand(2, 3, 96, 128))
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_checkpoint_round_trip_into_another_grid(caplog):
    source = build(grid_size=7)
    target = build(grid_size=9)
    state = source.state_dict()
    target.load_state_dict(deepcopy(state))  # strict: every key arrives
    assert target.global_tokens.shape == (1, 9, 9, 16)
    for key, value in state.items():
        if key != 'global_tokens':
            torch.testing.assert_close(target.state_dict()[key], value)
    # resizing back to the source grid is smooth: close to the original tokens
    back = build(grid_size=7)
    back.load_state_dict(target.state_dict())
    assert (back.global_tokens -
            source.global_tokens).abs().mean() < source.global_tokens.abs().mean()
    out = target.eval()(torch.rand(1, 3, 224, 224))
    assert out[2].shape == (1, 64, 7, 7)


def test_checkpoint_resize_is_logged():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('dualtoken_test_resize')
    messages = []
    handler = __import__('logging').Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    build(grid_size=5).load_state_dict(build(grid_size=7).state_dict())
    assert any('Resized global_tokens from a 7x7 grid to 5x5' in m for m in messages)


@pytest.mark.parametrize('bad, message', [
    (torch.rand(3, 64, 64), r'expects a 4-D image batch \(B, C, H, W\), got \(3, 64, 64\)'),
    (torch.rand(1, 1, 64, 64), 'built for 3-channel images'),
    (torch.rand(1, 3, 31, 64), r'needs H, W >= 32, got \(31, 64\)'),
])
def test_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        build().eval()(bad)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(32, 300), w=st.integers(32, 300), batch=st.integers(1, 2))
def test_any_size_property(h, w, batch):
    model = _PROPERTY_MODEL
    with torch.no_grad():
        outs = model(torch.rand(batch, 3, h, w))
    assert [tuple(o.shape) for o in outs
            ] == [(batch, c, *hw) for c, hw in zip(TINY_ARCH['embed_dims'], expected_maps(h, w))]
    assert all(torch.isfinite(o).all() for o in outs)


_PROPERTY_MODEL = build().eval()


def test_get_layer_depth():
    model = build()
    num_layers = sum(TINY_ARCH['depths']) + 2
    assert model.get_layer_depth('backbone.stem.layers.0.conv.weight',
                                 'backbone.') == (0, num_layers)
    assert model.get_layer_depth('backbone.global_tokens', 'backbone.') == (0, num_layers)
    assert model.get_layer_depth('backbone.stages.0.blocks.0.ffn.fc1.weight',
                                 'backbone.') == (1, num_layers)
    assert model.get_layer_depth('backbone.stages.1.downsample.norm.weight',
                                 'backbone.') == (2, num_layers)
    assert model.get_layer_depth('backbone.stages.1.blocks.1.ffn.fc1.weight',
                                 'backbone.') == (3, num_layers)
    assert model.get_layer_depth('backbone.stages.2.blocks.0.ffn.fc1.weight',
                                 'backbone.') == (4, num_layers)
    assert model.get_layer_depth('backbone.norm2.weight',
                                 'backbone.') == (num_layers - 1, num_layers)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (num_layers - 1, num_layers)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_builds_from_every_framework_scope(scope):
    import importlib

    from mmengine.registry import DefaultScope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='DualTokenViT', arch=TINY_ARCH))
    assert isinstance(model, DualTokenViT)
    # and with no scope at all
    from mmengine.registry import MODELS
    assert isinstance(MODELS.build(dict(type='DualTokenViT', arch=TINY_ARCH)), DualTokenViT)


def test_unused_output_norms_are_frozen_and_classification_state_fits_dense():
    cls = build(out_indices=(2, ), gap_before_final_norm=True)
    assert not any(p.requires_grad for p in cls.norm0.parameters())
    assert all(p.requires_grad for p in cls.norm2.parameters())
    dense = build()
    dense.load_state_dict(cls.state_dict(), strict=True)
    out = cls.train()(torch.rand(2, 3, 64, 64))
    out[0].sum().backward()
    assert all(p.grad is None for p in cls.norm0.parameters())


def test_misspelt_argument_names_the_intended_one():
    with pytest.raises(
            TypeError,
            match=r"unknown argument\(s\) 'archh' \(did you mean 'arch'\?\); "
            r'accepted: arch, in_channels'):
        DualTokenViT(archh='small')
    from mmengine.registry import MODELS
    with pytest.raises(TypeError, match="'drop_path' \\(did you mean 'drop_path_rate'\\?\\)"):
        MODELS.build(dict(type='DualTokenViT', drop_path=0.1))


# ---------------------------------------------------------------- the global-token count
def tokens_per_block(model, size) -> list:
    """The (h, w) grid of G_new after every block, in order."""
    seen = []
    for stage in model.stages:
        for block in stage.blocks:
            block.register_forward_hook(lambda m, i, o: seen.append(tuple(o[1].shape[1:3])))
    with torch.no_grad():
        model(torch.rand(1, 3, *size))
    return seen


@pytest.mark.parametrize('grid', [5, 7, 9, (4, 6)])
def test_grid_size_is_the_token_count_of_every_block_at_224(grid):
    expected = (grid, grid) if isinstance(grid, int) else grid
    model = build(grid_size=grid).eval()
    assert tokens_per_block(model, (224, 224)) == [expected] * sum(TINY_ARCH['depths'])


def test_another_count_interpolates_x_ga_in_every_block_and_never_g_at_224():
    model = build(grid_size=5).eval()
    with torch.no_grad(), OpRecorder() as rec:
        model(torch.rand(1, 3, 224, 224))
    # X_ga (7x7) -> G's 5x5 grid once per block; G is born 5x5 and is never resized
    assert rec.count('upsample_bicubic2d') == sum(TINY_ARCH['depths'])


@pytest.mark.parametrize('grid, expected', [(7, (25, 42)), (9, (33, 54)), (5, (18, 30))])
def test_at_another_size_g_is_resized_once_to_the_scaled_grid(grid, expected):
    """800x1333: X_ds is 25x42 in every stage; G's grid is that scaled by grid / 7 (ceil)."""
    model = build(grid_size=grid).eval()
    assert tokens_per_block(model, (800, 1333)) == [expected] * sum(TINY_ARCH['depths'])
    with torch.no_grad(), OpRecorder() as rec:
        model(torch.rand(1, 3, 800, 1333))
    x_ga_resizes = 0 if grid == 7 else sum(TINY_ARCH['depths'])
    assert rec.count('upsample_bicubic2d') == 1 + x_ga_resizes


def test_token_budget_caps_the_scaled_grid():
    model = build(grid_size=9, max_global_tokens=100).eval()
    grids = tokens_per_block(model, (800, 1333))
    # X_ds is pooled to 7x12, scaled by 9/7 to 9x16 = 144 tokens, capped to 7x13
    assert grids == [(7, 13)] * sum(TINY_ARCH['depths'])


def test_macs_grow_with_the_token_count_and_params_do_not():
    from mmdualtoken.utils import count_complexity
    counts = {g: count_complexity(build(grid_size=g)) for g in (5, 7, 9)}
    assert counts[5].macs < counts[7].macs < counts[9].macs
    channels = TINY_ARCH['embed_dims'][0]
    for g in (5, 9):  # only the token parameter itself differs
        assert counts[g].params - counts[7].params == (g * g - 49) * channels


def test_one_step_downsampling_reads_every_position_once():
    from mmdualtoken.models.layers import TokenDownsample
    for steps in (1, 2):
        layer = TokenDownsample(8, steps, 'one_step').eval()
        conv = layer.convs[0].conv
        assert conv.kernel_size == conv.stride == (2**steps, 2**steps) and conv.padding == (0, 0)
        x = torch.rand(1, 29, 30, 8, requires_grad=True)
        out = layer(x)
        assert out.shape[1:3] == TokenDownsample(8, steps).eval()(x).shape[1:3]  # ceil grid
        out.sum().backward()
        assert (x.grad != 0).all()  # no position skipped


def test_normal_tokens_attend_to_x_ga_and_themselves():
    """Figure 3(c): X and G fused by multi-head self-attention over both."""
    model = build(global_tokens='normal').eval()
    seen = []
    module = model.stages[0].blocks[0].global_module
    module.fuse.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, i[1].shape)))
    with torch.no_grad():
        model(torch.rand(1, 3, 224, 224))
    (queries, context), = seen
    tokens = model.num_normal_tokens
    assert queries[1] == tokens and context[1] == 49 + tokens
