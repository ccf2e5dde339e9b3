"""Every config of configs/ablations/ builds the model of its row of the paper's tables, and
trains a step (forward and backward through the classifier's loss).

The expected switches are literals (not the configs parsed again), so a config that loses
its override, or a table row that points at another config, fails here.
"""
import glob
import os.path as osp

import pytest
import torch
from helpers import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmdualtoken.utils.ablations import TABLES, ablation_configs

S = dict(embed_dims=[56, 112, 224], token_mlp='TokenMlp')
S_MIX = dict(S, token_mlp='MixMlp')
DEFAULTS = dict(
    grid_size=(7, 7),
    local_branch='ConvEncoder',
    global_module='GlobalTokenModule',
    fusion='weighted_sum',
    one_step=False)
EXPECTED = {
    'dualtoken_s_baseline_in1k': dict(S),
    'dualtoken_s-mix_baseline_in1k': dict(S_MIX),
    'dualtoken_s_normal-tokens_in1k': dict(S, fusion='attention'),
    'dualtoken_s_no-tokens_in1k': dict(S, global_module=None),
    'dualtoken_s_grid5_in1k': dict(S, grid_size=(5, 5)),
    'dualtoken_s_grid9_in1k': dict(S, grid_size=(9, 9)),
    'dualtoken_s_window_in1k': dict(S, local_branch='WindowSelfAttention'),
    'dualtoken_s-mix_one-step_in1k': dict(S_MIX, one_step=True),
}
# the paper's rows, table by table, and the configs that train them
ROWS = {
    5: [('MLP', 'dualtoken_s_baseline_in1k'), ('MixMLP', 'dualtoken_s-mix_baseline_in1k')],
    6: [('position-aware (weighted sum)', 'dualtoken_s_baseline_in1k'),
        ('normal (MHSA-fused, Fig. 3(c))', 'dualtoken_s_normal-tokens_in1k'),
        ('none (our extra row)', 'dualtoken_s_no-tokens_in1k')],
    7: [('5x5', 'dualtoken_s_grid5_in1k'), ('7x7', 'dualtoken_s_baseline_in1k'),
        ('9x9', 'dualtoken_s_grid9_in1k')],
    8: [('Conv Encoder', 'dualtoken_s_baseline_in1k'),
        ('window self-attention', 'dualtoken_s_window_in1k')],
    9: [('step-wise', 'dualtoken_s-mix_baseline_in1k'),
        ('one-step', 'dualtoken_s-mix_one-step_in1k')],
}


def test_tables_name_exactly_the_configs_on_disk():
    on_disk = sorted(
        osp.basename(p)[:-3]
        for p in glob.glob(osp.join(REPO_ROOT, 'configs', 'ablations', '*.py')))
    assert sorted(ablation_configs()) == on_disk == sorted(EXPECTED)
    assert {t.number: list(t.rows) for t in TABLES} == ROWS
    assert [t.model for t in TABLES] == ['S', 'S', 'S', 'S', 'S (mix)']


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_ablation_config_builds_its_row_and_trains_a_step(name):
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    path = osp.join(REPO_ROOT, 'configs', 'ablations', name + '.py')
    with open(path) as f:
        assert f'#   tools/dist_train.sh configs/ablations/{name}.py 8\n' in f.read()
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    assert 'data/imagenet' in cfg.train_dataloader.dataset.data_root  # the real dataset
    expected = dict(DEFAULTS, **EXPECTED[name])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert backbone.embed_dims == expected['embed_dims']
    assert backbone.grid_size == expected['grid_size']
    block = backbone.stages[0].blocks[0]
    assert type(block.local).__name__ == expected['local_branch']
    module = block.global_module
    assert (module and type(module).__name__) == expected['global_module']
    if module is not None:
        assert type(module.token_mlp).__name__ == expected['token_mlp']
        assert module.fusion == expected['fusion']
        conv = module.downsample.convs[0].conv  # stage 1: M = 2
        assert conv.kernel_size == ((4, 4) if expected['one_step'] else (3, 3))

    model.train()
    inputs = torch.rand(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(label) for label in (1, 7)]
    losses = model(inputs, samples, mode='loss')
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in backbone.stages[-1].parameters() if p.requires_grad)
