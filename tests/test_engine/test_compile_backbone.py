"""tools/train.py --compile: torch.compile of the backbone, by CompileBackboneHook (the
README's `--compile` command trains through it: tests/test_readme.py)."""
import pytest
import torch
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
