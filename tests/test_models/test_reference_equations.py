"""The paper's equations, value by value, against a second and deliberately plain formulation.

Every reference below is written from the paper's equations and docs/architecture.md's
choices and shares no code with the model: LayerNorm, GELU, BatchNorm (evaluation) and
attention are spelt out (one softmax per head, one image at a time), in float64, from the
weights of the model's state dict. Each Dual Token Block of a real forward pass (its inputs
captured by hooks) is recomputed and compared with what the model's block, and each of its
parts, returned: at 224x224 and at a non-square size, with and without the token budget.

All weights, BatchNorm statistics and the fusion weights a, b are drawn at random first
(at initialisation a = b = 1 would hide swapped fusion weights). The tolerance, 1e-4 of the
output's largest value, is about 20x the largest float32 error seen here (6e-6), and far
below what a dropped residual, swapped weights or an H/W transpose change.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdualtoken.models import DualTokenViT

LN_EPS, BN_EPS = 1e-6, 1e-5  # the documented norm_cfg and mmcv's BN
TOLERANCE = 1e-4
ARCH = 'tiny'  # DualToken-ViT-T: small enough to recompute every block on the CPU


# ------------------------------------------------------------------ plain building blocks
def layer_norm(x, p, name):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * p[f'{name}.weight'] + p[f'{name}.bias']


def linear(x, p, name):
    y = x @ p[f'{name}.weight'].T
    return y + p[f'{name}.bias'] if f'{name}.bias' in p else y


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def mlp(x, p, name):
    return linear(gelu(linear(x, p, f'{name}.fc1')), p, f'{name}.fc2')


def attention(queries, keys, values, heads):
    """Multi-head attention of one image: (N, C) queries, (M, C) keys and values."""
    d = queries.shape[-1] // heads
    out = []
    for h in range(heads):
        q, k, v = (t[:, h * d:(h + 1) * d] for t in (queries, keys, values))
        out.append(torch.softmax(q @ k.T / math.sqrt(d), dim=-1) @ v)
    return torch.cat(out, dim=-1)


def self_attention(x, p, name, heads):
    """x: (N, C). The qkv projection holds q, k, v in that order."""
    q, k, v = linear(x, p, f'{name}.qkv').chunk(3, dim=-1)
    return linear(attention(q, k, v, heads), p, f'{name}.proj')


def cross_attention(x, context, p, name, heads):
    """Queries from x (N, C), keys and values from context (M, C); kv holds k then v."""
    k, v = linear(context, p, f'{name}.kv').chunk(2, dim=-1)
    return linear(attention(linear(x, p, f'{name}.q'), k, v, heads), p, f'{name}.proj')


def batch_norm(x, p, name):
    """Evaluation BatchNorm of an NCHW map, by its running statistics."""
    shape = (1, -1, 1, 1)
    mean, var = p[f'{name}.running_mean'].view(shape), p[f'{name}.running_var'].view(shape)
    return ((x - mean) / torch.sqrt(var + BN_EPS) * p[f'{name}.weight'].view(shape) +
            p[f'{name}.bias'].view(shape))


def bicubic(grid, size):
    """(h, w, C) -> (size[0], size[1], C): the documented resize, torch's bicubic."""
    if tuple(grid.shape[:2]) == tuple(size):
        return grid
    out = F.interpolate(grid.permute(2, 0, 1)[None], size=size, mode='bicubic', align_corners=False)
    return out[0].permute(1, 2, 0)


def budget_grid(h, w, budget):
    """The largest grid of h x w's aspect ratio holding at most ``budget`` tokens."""
    if budget is None or h * w <= budget:
        return h, w
    scale = math.sqrt(budget / (h * w))
    gh, gw = max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    return gh, gw


# ----------------------------------------------------------------- the paper's components
def conv_encoder(x, p):
    """Conv Encoder (a ConvNeXt block without its residual): DW 7x7, LN, MLP. x: (H, W, C)."""
    C = x.shape[-1]
    y = F.conv2d(
        x.permute(2, 0, 1)[None],
        p['local.dwconv.weight'],
        p['local.dwconv.bias'],
        padding=3,
        groups=C)[0].permute(1, 2, 0)
    return mlp(layer_norm(y, p, 'local.norm'), p, 'local')


def bidim_attention(x, p):
    """LightViT's BiDim attention of x (H, W, C): channel gate from the mean token, spatial
    gate from each token's reduction concatenated with the mean token's."""
    y = layer_norm(x, p, 'bidim_attn.norm')
    g = gelu(linear(y.mean(dim=(0, 1)), p, 'bidim_attn.global_reduce'))  # (C/4)
    local = gelu(linear(y, p, 'bidim_attn.local_reduce'))  # (H, W, C/4)
    channel_gate = torch.sigmoid(linear(g, p, 'bidim_attn.channel_select'))
    both = torch.cat([local, g.expand(*local.shape[:2], -1)], dim=-1)
    spatial_gate = torch.sigmoid(linear(both, p, 'bidim_attn.spatial_select'))
    return x * channel_gate * spatial_gate


def position_aware_tokens(x_local, tokens, p, heads, steps, grid, reference, budget):
    """The Position-aware Token Module's four steps for one image.

    x_local: (H, W, C); tokens G: (gh, gw, C). Returns X_glob (H, W, C) and G_new.
    """
    H, W, C = x_local.shape
    # 1. step-wise downsampling: M times a 3x3 stride-2 conv and BN
    y = x_local.permute(2, 0, 1)[None]
    for i in range(steps):
        name = f'global_module.downsample.convs.{i}'
        y = F.conv2d(y, p[f'{name}.conv.weight'], p.get(f'{name}.conv.bias'), stride=2, padding=1)
        y = batch_norm(y, p, f'{name}.bn')
    h, w = budget_grid(y.shape[2], y.shape[3], budget)
    if (h, w) != tuple(y.shape[2:]):  # the token budget: adaptive average pooling
        y = F.adaptive_avg_pool2d(y, (h, w))
    x_ds = y[0].permute(1, 2, 0).reshape(h * w, C)
    # 2. global aggregation by multi-head self-attention (pre-norm residual)
    x_ga = x_ds + self_attention(
        layer_norm(x_ds, p, 'global_module.aggregate_norm'), p, 'global_module.aggregate', heads)
    # 3. weighted sum with the incoming tokens on the tokens' grid (X_ds's, scaled by
    # grid / reference, within the budget), then the token MLP
    size = budget_grid(
        math.ceil(h * grid[0] / reference[0]), math.ceil(w * grid[1] / reference[1]), budget)
    fused = (
        p['global_module.weight_aggregated'] * bicubic(x_ga.view(h, w, C), size) +
        p['global_module.weight_tokens'] * bicubic(tokens, size))
    new_tokens = fused + mlp(
        layer_norm(fused, p, 'global_module.token_mlp.norm'), p, 'global_module.token_mlp.mlp')
    # 4. global broadcast: every image token queries the new global tokens
    context = layer_norm(new_tokens, p, 'global_module.context_norm').reshape(-1, C)
    queries = layer_norm(x_local, p, 'global_module.query_norm').reshape(H * W, C)
    x_global = cross_attention(queries, context, p, 'global_module.broadcast', heads)
    return x_global.view(H, W, C), new_tokens


def dual_token_block(x, tokens, p, **module):
    """One Dual Token Block of one image, and its parts: local branch, global branch (fusion
    of local and global tokens by addition), FFN then BiDim attention, each residual."""
    parts = {'local': conv_encoder(x, p)}
    x_local = x + parts['local']
    parts['global'], new_tokens = position_aware_tokens(x_local, tokens, p, **module)
    fused = x_local + parts['global']
    parts['bidim'] = bidim_attention(mlp(layer_norm(fused, p, 'ffn_norm'), p, 'ffn'), p)
    return fused + parts['bidim'], new_tokens, parts


# --------------------------------------------------------------------------- the model
def randomised(model):
    """Every weight, the fusion weights and the BN statistics drawn at random."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 2.)
            elif t.is_floating_point():
                t.normal_(0, 0.3 if t.dim() > 1 else 1.)
    return model.eval()


def record_blocks(model, x):
    """{block name: (its inputs, its output, its parts' outputs)} of one forward of x."""
    records = {}
    for stage_index, stage in enumerate(model.stages):
        for block_index, block in enumerate(stage.blocks):
            name = f'stages.{stage_index}.blocks.{block_index}'
            record = records.setdefault(name, {})

            def keep(key, record=record):
                return lambda module, args, out: record.__setitem__(key, (args, out))

            block.register_forward_hook(keep('block'))
            block.local.register_forward_hook(keep('local'))
            block.global_module.register_forward_hook(keep('global'))
            block.bidim_attn.register_forward_hook(keep('bidim'))
    with torch.no_grad():
        model(x)
    return records


def relative_error(a, b):
    return ((a.double() - b).abs().max() / b.abs().max()).item()


CASES = [((224, 224), None), ((160, 256), None), ((224, 224), 16), ((192, 288), 20)]


@pytest.mark.parametrize('size, budget', CASES)
def test_every_dual_token_block_computes_the_papers_equations(size, budget):
    model = randomised(DualTokenViT(ARCH, max_global_tokens=budget))
    records = record_blocks(model, torch.rand(2, 3, *size))
    state = {k: v.double() for k, v in model.state_dict().items()}
    budget_engaged = False
    for name, record in records.items():
        p = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + '.')}
        stage = int(name.split('.')[1])
        block = model.stages[stage].blocks[int(name.split('.')[3])]
        (x, tokens), (out, new_tokens) = record['block']
        module = dict(
            heads=model.num_heads[stage],
            steps=model.downsample_steps[stage],
            grid=model.grid_size,
            reference=block.global_module.reference_grid,
            budget=budget)
        for i in range(x.shape[0]):
            ref_out, ref_tokens, parts = dual_token_block(
                x[i].double(), tokens[min(i, tokens.shape[0] - 1)].double(), p, **module)
            assert new_tokens.shape[1:] == ref_tokens.shape, name
            assert relative_error(out[i], ref_out) < TOLERANCE, name
            assert relative_error(new_tokens[i], ref_tokens) < TOLERANCE, name
            assert relative_error(record['local'][1][i], parts['local']) < TOLERANCE, name
            assert relative_error(record['global'][1][0][i], parts['global']) < TOLERANCE, name
            assert relative_error(record['bidim'][1][i], parts['bidim']) < TOLERANCE, name
        h, w = x.shape[1] // 2**module['steps'], x.shape[2] // 2**module['steps']
        budget_engaged |= budget is not None and h * w > budget
    assert budget_engaged == (budget is not None)  # the budget cases do pool


def test_a_checkpoints_token_grid_is_resized_as_torchs_bicubic():
    source = randomised(DualTokenViT(ARCH, grid_size=5))
    target = DualTokenViT(ARCH)
    target.load_state_dict(source.state_dict())
    expected = F.interpolate(
        source.global_tokens.permute(0, 3, 1, 2), size=(7, 7), mode='bicubic',
        align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(target.global_tokens.data, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize('size', [(224, 31), (31, 224), (16, 16)])
def test_the_input_size_check_covers_height_and_width(size):
    with pytest.raises(ValueError, match=rf'needs H, W >= 32, got \({size[0]}, {size[1]}\)'):
        DualTokenViT(ARCH)(torch.rand(1, 3, *size))


def test_gap_before_final_norm_pools_then_normalises():
    model = randomised(DualTokenViT(ARCH, out_indices=(2, ), gap_before_final_norm=True))
    last = {}
    model.stages[2].register_forward_hook(lambda m, args, out: last.update(x=out[0]))
    with torch.no_grad():
        pooled, = model(torch.rand(2, 3, 160, 224))
    state = {k: v.double() for k, v in model.state_dict().items()}
    x = last['x'].double()
    expected = layer_norm(x.mean(dim=(1, 2)), state, 'norm2')
    assert relative_error(pooled, expected) < TOLERANCE
    # the other order gives other values: the check can tell them apart
    assert relative_error(pooled, layer_norm(x, state, 'norm2').mean(dim=(1, 2))) > 1e-2


@pytest.mark.parametrize('size', [(14, 14), (10, 13)])
def test_the_window_attention_ablation_attends_within_7x7_windows(size):
    """The ablation's local branch: LN, zero padding to a multiple of 7 (after the norm),
    self-attention inside each window, cropped back."""
    model = randomised(DualTokenViT(ARCH, local_branch='window'))
    branch = model.stages[0].blocks[0].local
    p = {k: v.double() for k, v in branch.state_dict().items()}
    x = torch.randn(2, *size, model.embed_dims[0])
    with torch.no_grad():
        out = branch(x)
    H, W = size
    for i in range(2):
        y = layer_norm(x[i].double(), p, 'norm')
        y = F.pad(y, (0, 0, 0, (-W) % 7, 0, (-H) % 7))
        expected = torch.zeros_like(y)
        for top in range(0, y.shape[0], 7):
            for left in range(0, y.shape[1], 7):
                window = y[top:top + 7, left:left + 7].reshape(49, -1)
                expected[top:top + 7,
                         left:left + 7] = self_attention(window, p, 'attn',
                                                         model.num_heads[0]).view(7, 7, -1)
        assert relative_error(out[i], expected[:H, :W]) < TOLERANCE
