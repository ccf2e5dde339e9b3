"""tools/train.py --compile: torch.compile of the backbone, by CompileBackboneHook."""
import re

import numpy as np
import pytest
import torch
from helpers import checkpoints, config, run_tool, scalars
from mmengine.config import Config

from mmdualtoken.errors import BadConfigError
from mmdualtoken.launch import enable_compile


def hooks_of(cfg: Config) -> list:
    return [h for h in cfg.get('custom_hooks', []) if h['type'] == 'CompileBackboneHook']


@pytest.mark.parametrize(
    'setting, flag, expected',
    [
        (None, True, dict(dynamic=False)),
        (False, True, dict(dynamic=False)),  # the flag wins over the config's False
        (True, False, dict(dynamic=False)),  # the config's key alone compiles too
        (dict(backend='aot_eager',
              mode='default'), True, dict(backend='aot_eager', mode='default', dynamic=False)),
        (dict(dynamic=True), True, dict(dynamic=True)),  # the config's own choice stays
        (None, False, None),
        (False, False, None),
    ])
def test_compile_settings_go_to_the_hook_not_to_mmengine(setting, flag, expected):
    cfg = Config(dict(custom_hooks=[dict(type='RandomStateHook')]))
    if setting is not None:
        cfg.compile = setting
    assert enable_compile(cfg, flag) == expected
    assert 'compile' not in cfg  # mmengine's Runner would compile the whole train_step
    assert hooks_of(cfg) == ([dict(type='CompileBackboneHook', **expected)] if expected else [])
    assert cfg.custom_hooks[0] == dict(type='RandomStateHook')


def test_compile_refuses_other_values_and_a_torch_without_compile(monkeypatch):
    with pytest.raises(BadConfigError, match='compile must be True, False or a dict'):
        enable_compile(Config(dict(compile='yes')), False)
    monkeypatch.delattr(torch, 'compile')
    with pytest.raises(
            BadConfigError, match=r'--compile needs torch.compile, which torch \S+ '
            r'does not have'):
        enable_compile(Config(dict()), True)
    assert enable_compile(Config(dict()), False) is None  # not asked: no error


@pytest.mark.slow
def test_train_with_compile(tiny_workdir, tmp_path):
    """Two iterations of the tiny classification config (T arch) with --compile; the
    config's compile dict picks the backend: aot_eager captures forward and backward as
    inductor does (dynamo + AOTAutograd) without its minutes of C++ compilation here
    (tests/test_models/test_numerics.py trains through inductor)."""
    work_dir = tmp_path / 'compiled'
    proc = run_tool(
        'train.py',
        config('tiny/dualtoken_s_in1k_tiny.py'),
        '--compile',
        '--work-dir',
        str(work_dir),
        '--cfg-options',
        'train_dataloader.dataset.indices=4',
        'train_dataloader.batch_size=2',
        'val_dataloader.dataset.indices=4',
        'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1',
        'model.backbone.arch=tiny',
        'model.head.in_channels=192',
        'compile.backend=aot_eager',
        cwd=str(tiny_workdir),
        timeout=300)
    log = proc.stdout + proc.stderr
    assert "torch.compile(DualTokenViT, backend='aot_eager', dynamic=False)" in log, log[-3000:]
    graphs = re.search(r'torch\.compile: (\d+) graph\(s\) of the backbone compiled', log)
    # one graph in training mode, one in evaluation mode (the validation at the end)
    assert graphs and int(graphs.group(1)) == 2, log[-3000:]
    assert 'Model has been "compiled"' not in log  # mmengine did not compile train_step
    losses = [r['loss'] for r in scalars(str(work_dir)) if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert checkpoints(str(work_dir)) == ['epoch_1.pth']
    # compiled in place: the checkpoint has the keys of an uncompiled model
    state = torch.load(
        work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)['state_dict']
    assert 'backbone.stem.layers.0.conv.weight' in state
    assert not any('_orig_mod' in key for key in state)
