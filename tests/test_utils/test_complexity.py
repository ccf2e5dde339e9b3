"""The MAC counter counts attention, and the archs land on the paper's budgets."""
import pytest
import torch.nn as nn

from mmdualtoken.models import DualTokenViT
from mmdualtoken.models.layers import MultiheadSelfAttention
from mmdualtoken.utils import count_complexity


class Wrap(nn.Module):

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x.flatten(2).transpose(1, 2))


def test_attention_matmuls_are_counted():
    channels, heads, tokens = 32, 4, 49
    model = Wrap(MultiheadSelfAttention(channels, heads))
    result = count_complexity(model, (1, channels, 7, 7))
    linear = tokens * channels * 3 * channels + tokens * channels * channels
    attention = 2 * heads * tokens * tokens * (channels // heads)
    assert result.attention_macs == attention
    assert result.macs == linear + attention


@pytest.mark.parametrize('arch, target', [('tiny', 0.5e9), ('small', 1.0e9)])
def test_archs_within_5_percent_of_the_paper(arch, target):
    result = count_complexity(DualTokenViT(arch=arch))
    assert abs(result.macs - target) <= 0.05 * target
    assert result.attention_macs > 0


def test_ablation_directions_of_the_paper():

    def count(**kwargs):
        return count_complexity(DualTokenViT(**kwargs))

    small, mix = count(arch='small'), count(arch='small-mix')
    normal = count(arch='small', global_tokens='normal')
    one_step = count(arch='small-mix', downsample='one_step')
    # normal MLP: a little more params and MACs than MixMLP
    assert small.params > mix.params and small.macs > mix.macs
    # position-aware tokens: fewer params than "normal" global tokens, more MACs
    assert small.params < normal.params and small.macs > normal.macs
    # step-wise downsampling costs more than one-step
    assert mix.params > one_step.params and mix.macs > one_step.macs


def test_complexity_tool_renders_the_tables_with_delta_ratios():
    import glob
    import os.path as osp

    from helpers import REPO_ROOT, load_tool
    tool = load_tool('analysis/complexity.py')
    row = tool.measure(
        dict(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])))
    assert row['macs_det_budget'] < row['macs_det']
    assert row['factor'] > row['factor_budget']
    # the ablation rows are exactly the configs of configs/ablations/
    rows = tool.ablation_rows()
    on_disk = glob.glob(osp.join(REPO_ROOT, 'configs', 'ablations', '*.py'))
    assert sorted(rows) == sorted(osp.basename(p)[:-3] for p in on_disk)
    assert rows['dualtoken_s_grid9_in1k']['grid_size'] == 9
    archs = {arch: row for arch in tool.ARCHS}
    ablations = {name: dict(row) for name in rows}
    # normal tokens: 2.2 M more params and 0.03 G fewer MACs than position-aware
    normal = ablations['dualtoken_s_normal-tokens_in1k']
    normal['params'] += 2.2
    normal['macs'] -= 0.03
    text = tool.render(archs, ablations)
    assert '| `dualtoken_s_grid5_in1k` | ' in text and '## Checks against the paper' in text
    assert '| -2.20 M | -1.10 M | 2.00 | +0.030 G | +0.060 G | 0.50 |' in text
    assert '- [x] Table 6 (S), position-aware' in text
    assert '- [ ] Table 9 (S (mix)), step-wise vs one-step' in text  # equal rows: no direction


def test_a_model_converted_for_cpu_is_counted_like_the_plain_one():
    from mmdualtoken.deploy import fuse_for_cpu
    model = DualTokenViT(arch='tiny').eval()
    plain = count_complexity(model, (1, 3, 96, 128))
    fused = count_complexity(fuse_for_cpu(model), (1, 3, 96, 128))
    # MACs equal; parameters differ by the folded BatchNorms (2C affine -> C conv bias)
    assert (fused.macs, fused.attention_macs) == (plain.macs, plain.attention_macs)
    assert plain.macs > 0 and fused.params < plain.params


@pytest.mark.parametrize('budget', [None, 4])
def test_a_model_on_the_meta_device_counts_the_same_macs(budget):
    """What tools/analysis/complexity.py does at 800x1333: the same MACs and params, no
    arithmetic; the attention matrix products are then counted among the others."""
    model = DualTokenViT(
        arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4]),
        max_global_tokens=budget)
    real = count_complexity(model, (1, 3, 160, 224))
    meta = count_complexity(model.to('meta'), (1, 3, 160, 224))
    assert (meta.macs, meta.params) == (real.macs, real.params)
    assert real.attention_macs > 0 and meta.attention_macs == 0


def test_a_module_without_parameters_runs_on_the_cpu():
    result = count_complexity(nn.AvgPool2d(2), (1, 3, 8, 8))
    assert (result.params, result.macs, result.attention_macs) == (0, 0, 0)
