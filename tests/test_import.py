"""`import mmdualtoken` needs torch, mmengine and mmcv only, and is quick.

Each check runs in a fresh interpreter in which mmdet, mmseg and mmpretrain cannot be
imported (a meta-path finder refuses them), as in an environment that has none of them.
"""
import json
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO_ROOT

FRAMEWORKS = ('mmdet', 'mmseg', 'mmpretrain')

BLOCK_FRAMEWORKS = textwrap.dedent(f'''
    import sys
    class Unavailable:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {FRAMEWORKS!r}:
                raise ImportError(f'No module named {{name!r}} (blocked by the test)')
            return None
    sys.meta_path.insert(0, Unavailable())
''')


def run_python(code: str) -> dict:
    proc = subprocess.run([sys.executable, '-c', BLOCK_FRAMEWORKS + textwrap.dedent(code)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_and_build_without_mmdet_mmseg_mmpretrain():
    result = run_python('''
        import json, sys, time
        start = time.perf_counter()
        import mmdualtoken
        seconds = time.perf_counter() - start
        import torch
        from mmengine.registry import MODELS
        model = MODELS.build(dict(type='DualTokenViT', arch='tiny')).eval()
        with torch.no_grad():
            shapes = [list(o.shape) for o in model(torch.rand(1, 3, 97, 161))]
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in
                        ('mmdet', 'mmseg', 'mmpretrain', 'torchvision'))
        print(json.dumps(dict(seconds=seconds, shapes=shapes, loaded=loaded)))
    ''')
    assert result['shapes'] == [[1, 48, 13, 21], [1, 96, 7, 11], [1, 192, 4, 6]]
    assert result['loaded'] == []
    print(f"import mmdualtoken: {result['seconds']:.2f} s")


def test_the_neck_needs_mmdet_only_when_built():
    result = run_python('''
        import json
        import mmdualtoken
        from mmengine.registry import MODELS
        try:
            MODELS.build(dict(type='TransposedConvFPN', in_channels=[8, 16, 32],
                              out_channels=8))
        except ImportError as e:
            print(json.dumps(dict(error=str(e))))
    ''')
    assert 'mmdualtoken[det]' in result['error'] and 'mmdet' in result['error']


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_each_framework_finds_the_registered_classes(framework):
    """Registered once in mmengine's root registry, found from every framework's scope."""
    import importlib

    import mmdualtoken  # noqa: F401
    from mmengine.registry import DefaultScope
    registry = importlib.import_module(f'{framework}.registry').MODELS
    from mmdualtoken.models import DualTokenViT, TransposedConvFPN
    with DefaultScope.overwrite_default_scope(framework):
        assert registry.get('DualTokenViT') is DualTokenViT
        assert registry.get('TransposedConvFPN') is TransposedConvFPN
