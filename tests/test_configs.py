"""Every config parses, builds its model in its framework's scope, and uses no SyncBN."""
import glob
import importlib
import os.path as osp

import pytest
from helpers import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '*.py')) +
                 glob.glob(osp.join(REPO_ROOT, 'configs', 'tiny', '*.py')))


def test_the_configs_the_issues_name_exist():
    names = {osp.relpath(p, osp.join(REPO_ROOT, 'configs')) for p in CONFIGS}
    for name in ['retinanet_dualtoken_s.py', 'retinanet_dualtoken_t.py',
                 'mask_rcnn_dualtoken_s.py', 'mask_rcnn_dualtoken_t.py',
                 'fpn_dualtoken_s_ade20k.py', 'fpn_dualtoken_t_ade20k.py',
                 'upernet_dualtoken_s_ade20k.py', 'dualtoken_s_in1k.py', 'dualtoken_t_in1k.py',
                 'dualtoken_s-mix_in1k.py', 'dualtoken_t-mix_in1k.py']:
        assert name in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO_ROOT))
def test_config_builds_without_syncbn(path):
    cfg = Config.fromfile(path)
    assert 'SyncBN' not in cfg.pretty_text, 'SyncBN does not run under gloo on CPU'
    assert cfg.model.backbone.type == 'DualTokenViT'
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    arch = cfg.model.backbone.get('arch', 'small')
    assert model.backbone.arch_settings == model.backbone._parse_arch(arch)
