"""The MAC counter counts attention, and the archs land on the paper's budgets."""
import pytest
import torch
import torch.nn as nn

from mmdualtoken.models import DualTokenViT
from mmdualtoken.models.layers import MultiheadSelfAttention, fusion_disabled
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


def test_complexity_tool_renders_a_table(tmp_path):
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis', 'complexity.py')
    spec = importlib.util.spec_from_file_location('complexity_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    row = tool.measure(dict(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1],
                                      num_heads=[1, 2, 4])))
    assert row['macs_det_budget'] < row['macs_det']
    assert row['factor'] > row['factor_budget']
    text = tool.render({'small': row, 'tiny': row, 'small-mix': row, 'tiny-mix': row,
                        'small, global tokens: normal': row,
                        'small-mix, downsample: one-step': row})
    assert '| small | ' in text and '## Checks against the paper' in text


def test_fused_inference_kernels_are_counted_like_the_plain_modules():
    model = DualTokenViT(arch='tiny')
    fused = count_complexity(model, (1, 3, 96, 128))
    with fusion_disabled():
        plain = count_complexity(model, (1, 3, 96, 128))
    assert fused == plain and fused.macs > 0
