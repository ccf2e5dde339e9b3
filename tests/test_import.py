"""`import mmdualtoken` needs torch, mmengine and mmcv only, and is quick; no module of the
package or the tools imports one that imports it back.

Each import check runs in a fresh interpreter in which mmdet, mmseg and mmpretrain cannot be
imported (a meta-path finder refuses them), as in an environment that has none of them. The
circle check reads the sources (``ast``): every import, at module level or inside a function.
"""
import ast
import json
import os
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
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
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


@pytest.mark.slow
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

    from mmengine.registry import DefaultScope

    import mmdualtoken  # noqa: F401
    registry = importlib.import_module(f'{framework}.registry').MODELS
    from mmdualtoken.models import DualTokenViT, TransposedConvFPN
    with DefaultScope.overwrite_default_scope(framework):
        assert registry.get('DualTokenViT') is DualTokenViT
        assert registry.get('TransposedConvFPN') is TransposedConvFPN


# ---------------------------------------------------------------- no import circle
PACKAGE = 'mmdualtoken'


def _python_files(folder: str) -> list:
    found = []
    for root, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
        found += [os.path.join(root, f) for f in files if f.endswith('.py')]
    return sorted(found)


def _module_name(path: str) -> str:
    parts = os.path.relpath(path, REPO_ROOT)[:-len('.py')].split(os.sep)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: str, name: str, modules: set, scripts: dict) -> set:
    """The modules of ``modules`` (package modules and tool scripts) that the file at ``path``
    imports anywhere in it: at module level, inside functions, under ``if``/``try``.

    ``from X import y`` depends on module ``X.y`` where that is a module (the package ``X``
    may still be initialising: Python allows that), else on ``X`` itself, whose namespace
    must hold ``y``. A bare ``import name`` of a tool script (what a tool reaches through a
    ``sys.path`` edit) depends on that script."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = path.endswith('__init__.py')
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
                elif alias.name in scripts:
                    found.add(scripts[alias.name])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split('.') if is_package else name.split('.')[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = '.'.join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                if f'{base}.{alias.name}' in modules:
                    found.add(f'{base}.{alias.name}')
                elif base in modules:
                    found.add(base)
                elif base in scripts:
                    found.add(scripts[base])
    found.discard(name)
    return found


def import_graph() -> dict:
    """{module: the modules it imports} over mmdualtoken/ and tools/ (tool scripts are
    named ``tools/...`` by their path)."""
    package_files = {_module_name(p): p for p in _python_files(PACKAGE)}
    tool_files = {os.path.relpath(p, REPO_ROOT): p for p in _python_files('tools')}
    scripts = {os.path.basename(p)[:-len('.py')]: p for p in tool_files}
    modules = set(package_files)
    return {
        name: _imports(path, name, modules, scripts)
        for name, path in {
            **package_files,
            **tool_files
        }.items()
    }


def find_cycle(graph: dict):
    """One import circle of ``graph`` as [a, b, ..., a], or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_find_cycle_names_the_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    # module level, relative
    assert 'mmdualtoken.errors' in graph['mmdualtoken.launch']
    # inside a function (build_runner), relative, from a package
    assert 'mmdualtoken.engine' in graph['mmdualtoken.launch']
    # a tool, absolute
    assert 'mmdualtoken.launch' in graph['tools/train.py']


def test_no_import_circle_in_the_package_or_the_tools():
    cycle = find_cycle(import_graph())
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)
