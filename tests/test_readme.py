"""README.md and the documentation pages work as written.

The pages (PAGES) are read as a user reads them:

* every command of their ```bash blocks, and every usage line in the configs' headers, is run
  or checked by exactly one check below; a command no check knows fails, and so does a check
  whose command no page has any more. Commands run as written, from an empty working folder,
  changed only where this machine cannot afford them, each change named where it is made:
  short schedules and few images through --cfg-options, one process where a line asks for
  eight, a stand-in ``srun`` (tests/test_frameworks/test_slurm.py runs real Slurm),
  torch.compile's eager backend. What trains for days must stop at once with the
  one-line error of a user who has no dataset (or no ImageNet checkpoint) yet. ``make``
  targets are checked by what they run (``make -n``): ``make test`` is what runs this suite;
  report tools that run for many minutes are checked by their arguments, and their reports by
  the tests named next to them;
* every ```python block runs: scripts as they are (a comment line right after a ``print`` is
  its expected output), configs are loaded and their model built and run on a small image;
* every path the pages name exists, the README has at most 200 lines, the demo prints the
  format the README shows, and the tables' processes x images and schedules are the configs'.

The scripts import only torch, numpy, copy, mmdualtoken and onnxruntime, so
test_python_snippet_runs also runs in the torch 2.1.2 matrix (tools/compat_matrix.sh), which
installs the deploy extra as the README does before its export; the mmdeploy script of
docs/deployment.md runs in tests/test_deploy/test_mmdeploy.py, on a detector trained there.
"""
import functools
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
from helpers import (REPO_ROOT, code_blocks, descendants, expected_output, free_port, page_text,
                     run_process_tree, scalars)

PAGES = ('README.md', 'configs/README.md', 'docs/get_started.md', 'docs/training.md',
         'docs/backbone.md', 'docs/deployment.md', 'docs/cpu_performance.md', 'docs/development.md')
README_MAX_LINES = 200
VENV_BIN = osp.dirname(sys.executable)
SCRIPT_IMPORTS = {'torch', 'numpy', 'copy', 'mmdualtoken', 'onnxruntime'}


# ---------------------------------------------------------------- reading the pages
def shell_commands(body: str) -> list:
    """Commands of a bash block: comments and blank lines dropped."""
    lines = (re.sub(r'\s+#.*$', '', line).strip() for line in body.splitlines())
    return [line for line in lines if line and not line.startswith('#')]


def config_usage_lines() -> list:
    """Usage lines (``#   python tools/...``, ``#   tools/...``) of the configs' headers."""
    lines = []
    for path in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)):
        with open(path) as f:
            for line in f:
                if not line.startswith('#'):
                    break
                usage = re.match(r'#\s{2,}((?:python )?tools/\S+.*)$', line.rstrip())
                if usage:
                    lines.append(re.sub(r'\s+#.*$', '', usage.group(1)).strip())
    return lines


def documented_commands() -> list:
    commands = [
        c for page in PAGES for lang, body in code_blocks(page_text(page)) if lang == 'bash'
        for c in shell_commands(body)
    ]
    return commands + config_usage_lines()


def python_blocks(kind: str) -> list:
    """(page, index, body) of the ```python blocks that are scripts or configs."""
    blocks = []
    for page in PAGES:
        bodies = [body for lang, body in code_blocks(page_text(page)) if lang == 'python']
        for index, body in enumerate(bodies):
            is_config = bool(re.search(r'^_base_ = ', body, flags=re.M))
            if is_config == (kind == 'config'):
                blocks.append((page, index, body))
    return blocks


# ---------------------------------------------------------------- running commands
def bash(command: str, env: dict = None) -> dict:
    """Popen arguments for a command line of the pages: bash, the venv's python first on
    PATH, and the repository's tools/ and configs/ (the pages' paths are relative to its
    root); work_dirs/ and data/ stay relative to the working folder."""
    command = re.sub(r'(?<![\w/.-])((?:tools|configs)/)', REPO_ROOT + r'/\1', command)
    environ = dict(
        os.environ,
        PATH=VENV_BIN + os.pathsep + os.environ['PATH'],
        OMP_NUM_THREADS='1',
        PYTHONWARNINGS='ignore')
    environ.update(env or {})
    return dict(cmd=['bash', '-c', command], env=environ)


def run(command: str, cwd, env: dict = None, timeout: int = 900):
    return run_process_tree(**bash(command, env), cwd=str(cwd), timeout=timeout)


def ok(command: str, cwd, **kwargs) -> str:
    proc = run(command, cwd, **kwargs)
    assert proc.returncode == 0, (f'{command} failed ({proc.returncode}):\n'
                                  f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc.stdout + proc.stderr


def fails_with_one_line(command: str, cwd, pattern: str, **kwargs) -> str:
    """The command stops with an ``error: ...`` line matching ``pattern``, no traceback."""
    proc = run(command, cwd, **kwargs)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert re.search(r'error: .*' + pattern, output), output[-3000:]
    if not command.startswith('tools/dist_'):  # torchrun adds its own report of a failure
        assert 'Traceback' not in output, output[-3000:]
    return output


def cfg_options(*options: str) -> str:
    return ' --cfg-options ' + ' '.join(options)


def assert_trained(work_dir, metric: str) -> None:
    """The run logged finite losses and validated: ``metric`` among its logged scalars."""
    import math
    logged = scalars(str(work_dir))
    losses = [r['loss'] for r in logged if 'loss' in r]
    assert losses and all(math.isfinite(v) for v in losses), losses
    assert any(metric in r for r in logged), logged[-3:]


# ---------------------------------------------------------------- the checks
# The tiny configs (docs/get_started.md, docs/training.md), on the generated data, with
# short schedules and few images: the only change to these commands.
MAKE_DATA = 'python tools/data/make_tiny_datasets.py'
DET_TRAIN = 'python tools/train.py configs/tiny/retinanet_dualtoken_s_tiny.py'
DET_TEST = ('python tools/test.py configs/tiny/retinanet_dualtoken_s_tiny.py '
            'work_dirs/retinanet_dualtoken_s_tiny/epoch_8.pth '
            '--show-dir work_dirs/pictures/retinanet')
DET = [MAKE_DATA, DET_TRAIN, DET_TEST, DET_TRAIN + ' --resume', DET_TRAIN + ' --amp']
SEG_TRAIN = 'python tools/train.py configs/tiny/fpn_dualtoken_s_ade20k_tiny.py'
SEG_TEST = ('python tools/test.py configs/tiny/fpn_dualtoken_s_ade20k_tiny.py '
            'work_dirs/fpn_dualtoken_s_ade20k_tiny/iter_160.pth --show-dir work_dirs/pictures/fpn')
SEG_SCALED = SEG_TRAIN + ' --auto-scale-lr --cfg-options train_dataloader.batch_size=4'
SEG = [SEG_TRAIN, SEG_TEST, SEG_SCALED]
CLS_TRAIN = 'python tools/train.py configs/tiny/dualtoken_s_in1k_tiny.py'
CLS_TEST = ('python tools/test.py configs/tiny/dualtoken_s_in1k_tiny.py '
            'work_dirs/dualtoken_s_in1k_tiny/epoch_6.pth '
            '--show-dir work_dirs/pictures/classification')
CLS_CONVERT = ('python tools/model_converters/to_backbone_checkpoint.py '
               'work_dirs/dualtoken_s_in1k_tiny/epoch_6.pth work_dirs/dualtoken_s_backbone.pth '
               '--arch small')
CLS = [CLS_TRAIN, CLS_TEST, CLS_CONVERT, CLS_TRAIN + ' --compile']
DET_SHORT = ('train_dataloader.dataset.indices=1', 'train_dataloader.batch_size=1',
             'val_dataloader.dataset.indices=2', 'model.test_cfg.score_thr=0.0')
SEG_SHORT = ('train_dataloader.dataset.indices=2', 'train_dataloader.batch_size=1',
             'val_dataloader.dataset.indices=2', 'default_hooks.visualization.interval=1')
CLS_SHORT = ('train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
             'val_dataloader.dataset.indices=4')

DEMO = 'make demo'
DEMO_SHORT = ('train_dataloader.dataset.indices=8', 'train_cfg.max_epochs=1',
              'val_dataloader.dataset.indices=4', 'model.test_cfg.score_thr=0.0')
INSTALLS = [
    'pip install -e ".[det]"', 'pip install --no-deps -e .', 'pip install -e ".[deploy]"',
    'pip install -e ".[det,deploy]"'
]
# mmdeploy's wheel holds neither its tools/ nor its configs/: its command is checked by its
# arguments against the page's Python form, which tests/test_deploy/test_mmdeploy.py runs
MMDEPLOY_INSTALL = 'pip install --no-deps mmdeploy==1.3.1 aenum'
MMDEPLOY_STOCK_CONFIG = 'configs/mmdet/detection/detection_onnxruntime_dynamic.py'
MMDEPLOY_TOOL = (
    f'python ../mmdeploy/tools/deploy.py ../mmdeploy/{MMDEPLOY_STOCK_CONFIG} '
    'configs/retinanet_dualtoken_s.py work_dirs/retinanet_dualtoken_s/epoch_12.pth '
    'data/coco/val2017/000000000139.jpg --work-dir work_dirs/mmdeploy_retinanet_s --device cpu')
ACTIVATE = 'source .venv/bin/activate'
# make targets and what `make -n TARGET` must show they run
MAKE_TARGETS = {
    'make test': ['-m pytest tests -n 2'],
    'make test-fast': ['-m pytest tests', '-m "not slow"'],
    'make lint': ['-m flake8', '-m isort', '-m yapf'],
    'make compat': ['tools/compat_matrix.sh'],
    'make compat-short': ['tools/compat_matrix.sh --short'],
    'make complexity': ['tools/analysis/complexity.py --out docs/complexity.md'],
}
NOT_SLURM = 'python -m pytest tests -n 2 -m "not slurm"'
UPDATE_DOCS = 'python -m pytest tests/test_errors.py tests/test_reliability -n 2 --update-docs'
# report tools that run for many minutes: the command's arguments must be accepted (their
# help lists them); the report itself is checked by the test named
REPORT_TOOLS = {
    'python tools/analysis/benchmark.py --out docs/benchmark.md':
    (['cpu', '--help'], 'tests/test_tools/test_benchmark_tool.py'),
    'python tools/analysis/benchmark.py gpu --out gpu.md':
    (['gpu', '--help'], 'tests/test_tools/test_benchmark_tool.py'),
    'python tools/analysis/fashion_mnist.py --out docs/fashion_mnist.md':
    (['--help'], 'tests/test_frameworks/test_fashion_mnist.py'),
}
EXPORTS = [
    'python tools/deployment/export_onnx.py --arch small --max-global-tokens 196 --checkpoint '
    'work_dirs/dualtoken_s_in1k/epoch_300.pth --dynamic --out dualtoken_s.onnx',
    'python tools/deployment/export_onnx.py --arch small --exporter dynamo '
    '--out dualtoken_s_dynamo.onnx --latency',
]
COLLECT_ABLATIONS = 'python tools/analysis/collect_ablations.py work_dirs --out ablations.md'
# run as it stands by tests/test_frameworks/test_fashion_mnist.py's fixture
PREPARE_FASHION_MNIST = 'python tools/data/prepare_fashion_mnist.py'
TWO_MACHINES = [
    f'NNODES=2 NODE_RANK={rank} MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh '
    'configs/dualtoken_s_in1k.py 8 --auto-scale-lr' for rank in (0, 1)
]
SLURM = {
    'GPUS=16 GPUS_PER_NODE=8 tools/slurm_train.sh PARTITION dualtoken_s '
    'configs/dualtoken_s_in1k.py work_dirs/dualtoken_s_in1k --auto-scale-lr': [
        '--partition=PARTITION', '--job-name=dualtoken_s', '--ntasks=16', '--ntasks-per-node=8',
        '--launcher=slurm', '--work-dir=work_dirs/dualtoken_s_in1k', '--auto-scale-lr'
    ],
    'GPUS=8 tools/slurm_test.sh PARTITION retinanet_s configs/retinanet_dualtoken_s.py '
    'work_dirs/retinanet_dualtoken_s/epoch_12.pth': [
        '--partition=PARTITION', '--job-name=retinanet_s', '--ntasks=8', '--launcher=slurm',
        'work_dirs/retinanet_dualtoken_s/epoch_12.pth'
    ],
}
# fine-tuning on the real configs where the dataset is in place (its folders and annotation
# files, empty) but the ImageNet checkpoint is not: what tools/train.py says
PRETRAINED = {
    'tools/dist_train.sh configs/retinanet_dualtoken_s.py 8':
    r'Pretrained backbone checkpoint not found: work_dirs/dualtoken_s_in1k/epoch_300\.pth.*'
    r'tools/train\.py configs/dualtoken_s_in1k\.py.*model\.backbone\.init_cfg=None',
    'python tools/train.py configs/retinanet_dualtoken_s.py --cfg-options '
    'model.backbone.init_cfg.checkpoint=work_dirs/my_run/epoch_300.pth':
    r'Pretrained backbone checkpoint not found: work_dirs/my_run/epoch_300\.pth.*'
    r'configs/dualtoken_s_in1k\.py',
    # from scratch: past the checkpoint check, stopped by the empty annotation file
    'python tools/train.py configs/retinanet_dualtoken_s.py --cfg-options '
    'model.backbone.init_cfg=None':
    r'instances_train2017\.json',
}

# the usage lines of configs/ablations/: the baseline's runs as a real-config command; each
# other differs from it in the config path alone, and its config in the model alone
ABLATION_BASELINE = 'tools/dist_train.sh configs/ablations/dualtoken_s_baseline_in1k.py 8'
ABLATIONS = sorted(
    c for c in config_usage_lines()
    if c.startswith('tools/dist_train.sh configs/ablations/') and c != ABLATION_BASELINE)

CHECKED = (
    DET + SEG + CLS + [DEMO, ACTIVATE, NOT_SLURM, UPDATE_DOCS, COLLECT_ABLATIONS] + INSTALLS +
    [PREPARE_FASHION_MNIST] + [MMDEPLOY_INSTALL, MMDEPLOY_TOOL] + list(MAKE_TARGETS) +
    list(REPORT_TOOLS) + EXPORTS + TWO_MACHINES + list(SLURM) + list(PRETRAINED) + ABLATIONS)


def real_config(command: str) -> bool:
    """A train or test command on a full-dataset config, checked by
    test_real_config_command_stops_without_its_dataset."""
    return (bool(
        re.match(
            r'(python tools/(train|test)\.py|tools/dist_(train|test)\.sh) '
            r'configs/(?!tiny/)\S+\.py', command)) and command not in CHECKED)


# ---------------------------------------------------------------- the pages themselves
def test_readme_has_at_most_200_lines():
    lines = page_text('README.md').splitlines()
    assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines'


def test_every_command_is_checked_and_every_check_has_its_command():
    commands = documented_commands()
    assert len(commands) > 30
    unchecked = sorted({c for c in commands if c not in CHECKED and not real_config(c)})
    assert not unchecked, f'commands of the pages that no check of this file runs: {unchecked}'
    stale = [c for c in CHECKED if c not in commands]
    assert not stale, f'checks of commands no page has any more: {stale}'


def test_no_command_hides_outside_a_bash_block():
    for page in PAGES:
        for lang, body in code_blocks(page_text(page)):
            if lang != 'bash':
                assert not re.search(
                    r'^\s*(python tools/|tools/|make |pip )', body,
                    flags=re.M), f'{page}: a command in a ```{lang} block'


def table_cells(page: str, first_cell: str) -> list:
    line = next(line for line in page_text(page).splitlines() if line.startswith('| ' + first_cell))
    return [c.strip() for c in line.strip().strip('|').split('|')]


def test_install_table_is_the_pinned_versions():
    """The README's tested combinations are what the set-up and the matrix install."""
    with open(osp.join(REPO_ROOT, 'requirements', 'constraints.txt')) as f:
        pins = dict(re.findall(r'^([\w-]+)==(\S+)', f.read(), flags=re.M))
    own = table_cells('README.md', "this repository's set-up")
    assert own[1:5] == [
        f'{pins["torch"]}, torchvision {pins["torchvision"]}',
        f'{pins["mmcv"]}, ops built from source', pins['mmengine'],
        f'{pins["mmdet"]}, {pins["mmsegmentation"]}, {pins["mmpretrain"]}'
    ]
    with open(osp.join(REPO_ROOT, 'tools', 'compat_matrix.sh')) as f:
        matrix = f.read()
    oldest = re.search(r'^ROWS=\(\n\s+"([\d.]+)\|', matrix, flags=re.M).group(1)
    common = dict(
        re.findall(r'([\w-]+)==([\d.]+)',
                   re.search(r'^COMMON=\((.*)\)', matrix, flags=re.M).group(1)))
    torch_21 = table_cells('README.md', 'torch 2.1 ')
    assert torch_21[1:4] == [oldest, f'mmcv-lite {common["mmcv-lite"]}', common['mmengine']]


def named_paths(page: str) -> set:
    """Paths a page names: repository paths in its text, and its relative links (resolved
    from the page's folder), braces expanded."""
    text = page_text(page)
    names = set(
        re.findall(
            r'(?<![\w/.-])((?:tools|configs|docs|mmdualtoken|requirements|tests)'
            r'/[\w./{},-]*[\w}])', text))
    for link in re.findall(r'\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)', text):
        names.add(osp.normpath(osp.join(osp.dirname(page), link)))
    return {path for name in names for path in expand_braces(name)}


def expand_braces(pattern: str) -> list:
    match = re.search(r'\{([^{}]*)\}', pattern)
    if not match:
        return [pattern]
    return [
        p for option in match.group(1).split(',')
        for p in expand_braces(pattern[:match.start()] + option + pattern[match.end():])
    ]


@pytest.mark.parametrize('page', PAGES)
def test_every_named_path_exists(page):
    missing = sorted(p for p in named_paths(page) if not osp.exists(osp.join(REPO_ROOT, p)))
    assert not missing, f'{page} names paths that do not exist: {missing}'


@functools.lru_cache(maxsize=None)
def config_facts(config: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, config), import_custom_modules=False)
    train_cfg = cfg.train_cfg
    return dict(
        batch=cfg.train_dataloader.batch_size,
        total=cfg.auto_scale_lr.base_batch_size,
        epochs=train_cfg.get('max_epochs'),
        iterations=train_cfg.get('max_iters'),
        backbone=cfg.model.backbone)


def table_rows(page: str) -> list:
    """(configs, processes, images, schedule) of every table row that names configs and a
    `processes x images` cell."""
    rows = []
    for line in page_text(page).splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        sizes = [re.fullmatch(r'(\d+) x (\d+)', c) for c in cells]
        sizes = [m for m in sizes if m]
        if not line.startswith('|') or not sizes:
            continue
        configs = re.findall(r'\]\(([^)]+\.py)\)', line)
        configs = [osp.normpath(osp.join(osp.dirname(page), c)) for c in configs]
        schedule = next(c for c in cells if re.fullmatch(r'\d+k? (epochs|iterations)', c))
        rows.append((configs, int(sizes[0].group(1)), int(sizes[0].group(2)), schedule))
    return rows


@pytest.mark.parametrize('page', ['README.md', 'docs/training.md'])
def test_processes_images_and_schedules_are_the_configs(page):
    rows = table_rows(page)
    assert len(rows) >= 5
    for configs, processes, images, schedule in rows:
        assert configs
        number, unit = re.fullmatch(r'(\d+k?) (epochs|iterations)', schedule).groups()
        number = int(number[:-1]) * 1000 if number.endswith('k') else int(number)
        for config in configs:
            facts = config_facts(config)
            assert (facts['batch'], facts['total']) == (images, processes * images), config
            assert facts['epochs' if unit == 'epochs' else 'iterations'] == number, config


def test_dense_configs_fine_tune_from_the_checkpoint_the_readme_names():
    """The README: pretraining writes work_dirs/dualtoken_s_in1k/epoch_300.pth and the dense
    configs start from the ImageNet checkpoint of their own arch."""
    assert config_facts('configs/dualtoken_s_in1k.py')['epochs'] == 300
    for config in glob.glob(osp.join(REPO_ROOT, 'configs', '*.py')):
        name = osp.basename(config)
        if name.startswith('dualtoken_'):
            continue
        backbone = config_facts(osp.relpath(config, REPO_ROOT))['backbone']
        arch = {'tiny': 't', 'small': 's'}[backbone.arch]
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
        assert backbone.init_cfg.checkpoint == f'work_dirs/dualtoken_{arch}_in1k/epoch_300.pth'


# ---------------------------------------------------------------- python blocks
# the mmdeploy route's script (docs/deployment.md) needs mmdet, mmdeploy and a trained detector:
# tests/test_deploy/test_mmdeploy.py runs it
SCRIPTS = [b for b in python_blocks('script') if 'from mmdeploy' not in b[2]]
CONFIGS = python_blocks('config')


@pytest.mark.slow
@pytest.mark.parametrize(
    'page, index, body', SCRIPTS, ids=[f'{page}-{index}' for page, index, _ in SCRIPTS])
def test_python_snippet_runs(page, index, body, tmp_path):
    """Each script, as a file run from an empty folder; what it prints matches its comments.
    Listed for the torch 2.1.2 matrix: it needs torch, mmengine, mmcv(-lite) and onnxruntime."""
    imported = set(re.findall(r'^(?:from|import) (\w+)', body, flags=re.M))
    assert imported <= SCRIPT_IMPORTS, f'{page}: imports beyond {SCRIPT_IMPORTS}: {imported}'
    script = tmp_path / 'snippet.py'
    script.write_text(body)
    proc = subprocess.run([sys.executable, str(script)],
                          cwd=tmp_path,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=dict(os.environ, PYTHONWARNINGS='ignore'))
    assert proc.returncode == 0, f'{page}:\n{body}\n{proc.stderr[-4000:]}'
    printed = proc.stdout.splitlines()
    expected = expected_output(body)
    assert printed == expected, f'{page}: printed {printed}, the page says {expected}'


def test_the_snippets_are_found():
    assert len(SCRIPTS) >= 4 and [page for page, _, _ in SCRIPTS].count('README.md') == 2
    assert sum(len(expected_output(body)) for _, _, body in SCRIPTS) >= 4
    scopes = [re.search(r"_base_ = '(\w+)::", body).group(1) for _, _, body in CONFIGS]
    assert sorted(set(scopes)) == ['mmdet', 'mmpretrain', 'mmseg']
    for _, _, body in CONFIGS:
        assert "custom_imports = dict(imports=['mmdualtoken']" in body


@pytest.mark.parametrize(
    'page, index, body', CONFIGS, ids=[f'{page}-{index}' for page, index, _ in CONFIGS])
def test_config_snippet_builds_and_runs(page, index, body, tmp_path):
    """Each config block, as a config file: loaded (its custom_imports imported), the model
    built in its framework's registry and run on a 1x3x128x128 image (SyncBN as BN, as the
    tools do on one process)."""
    import torch
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    path = tmp_path / 'snippet_config.py'
    path.write_text(body)
    cfg = Config.fromfile(str(path))
    scope = cfg.default_scope
    init_default_scope(scope)
    registry = {
        'mmdet': 'mmdet.registry',
        'mmseg': 'mmseg.registry',
        'mmpretrain': 'mmpretrain.registry'
    }[scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    model = revert_sync_batchnorm(models.build(cfg.model)).eval()
    assert type(model.backbone).__name__ == 'DualTokenViT'
    image = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        if scope == 'mmpretrain':
            assert model(image, mode='tensor').shape == (1, cfg.model.head.num_classes)
            return
        feats = model.extract_feat(image)
        assert len(feats) == (cfg.model.get('neck') or {}).get('num_outs', 3)
        if scope == 'mmdet':
            head = model.bbox_head if hasattr(model, 'bbox_head') else model.rpn_head
            assert all(out[0].shape[-2:] == f.shape[-2:]
                       for out, f in zip(zip(*head(feats)), feats))
        else:
            for head in (model.decode_head, model.auxiliary_head):
                assert head(feats).shape[:2] == (1, head.num_classes)


# ---------------------------------------------------------------- commands
@pytest.mark.slow
def test_demo_prints_the_readme_format(tmp_path):
    """`make demo` runs tools/demo.py with DEMO_ARGS (make -n); tools/demo.py, run from an
    empty folder with a 1-epoch schedule on 8 images, prints the README's lines (its
    ``<...>`` placeholders are the figures, epoch_8 is epoch_1 here)."""
    proc = subprocess.run(['make', '-n', '-C', REPO_ROOT, 'demo', 'DEMO_ARGS=--ARGS'],
                          capture_output=True,
                          text=True,
                          timeout=60)
    assert re.search(r'^\S*python tools/demo\.py --ARGS$', proc.stdout, flags=re.M), proc.stdout
    shown = next(body for lang, body in code_blocks(page_text('README.md'))
                 if lang == 'text' and body.startswith('[demo]')).splitlines()
    out = ok('python tools/demo.py' + cfg_options(*DEMO_SHORT), tmp_path)
    printed = [line.rstrip() for line in out.splitlines()]
    for line in shown:
        pattern = re.escape(line.replace('epoch_8', 'epoch_1'))
        pattern = re.sub(r'<image>', r'\\S+', pattern)
        pattern = re.sub(r'<[^>]+>', r'-?\\d+(?:\\.\\d+)?', pattern)
        assert any(re.fullmatch(pattern, p) for p in printed), (line, out[-3000:])
    assert (tmp_path / 'work_dirs' / 'demo' / 'detections.png').stat().st_size > 10000


def test_make_targets_run_what_the_pages_say():
    for command, expected in MAKE_TARGETS.items():
        proc = subprocess.run(['make', '-n', '-C', REPO_ROOT,
                               command.split()[1]],
                              capture_output=True,
                              text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        for part in expected:
            assert part in proc.stdout, (command, part, proc.stdout)
    # CI (.ci/run) runs exactly the README's test lines, in their order
    with open(osp.join(REPO_ROOT, '.ci', 'run')) as f:
        ci = [line.strip() for line in f if line.startswith('make ')]
    readme = [c for _, body in code_blocks(page_text('README.md')) for c in shell_commands(body)]
    assert ci == ['make test', 'make compat-short'], ci
    start = readme.index(ci[0])
    assert readme[start:start + len(ci)] == ci, readme


@pytest.mark.slow
def test_the_suite_without_slurm_is_collected(tmp_path):
    """`python -m pytest tests -n 2 -m "not slurm"`: collected (without running it), it
    leaves out the slurm test and nothing else fails to import."""
    args = shlex.split(NOT_SLURM)[1:]
    assert args[:3] == ['-m', 'pytest', 'tests'] and '-n' in args
    import xdist  # noqa: F401  (-n 2)
    proc = subprocess.run([
        sys.executable, '-m', 'pytest', 'tests', '-m', 'not slurm', '--collect-only', '-q', '-p',
        'no:cacheprovider'
    ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r'\d+/\d+ tests collected \(\d+ deselected\)', proc.stdout), \
        proc.stdout[-1000:]


@pytest.mark.slow
def test_update_docs_rewrites_the_documents_from_the_rows_of_the_tests_run(tmp_path):
    """The regeneration command of docs/errors.md and docs/reliability.md, run on two error
    cases (the fault tests take minutes) into a scratch docs folder: it writes errors.md
    with exactly their rows, as the committed document has them, and no reliability.md."""
    args = shlex.split(UPDATE_DOCS)[1:]
    assert args[-1] == '--update-docs' and '-n' in args
    proc = subprocess.run(
        [sys.executable, *args, '-p', 'no:cacheprovider', '-k', 'unknown_arch or channels_not_3'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, MMDUALTOKEN_DOCS_DIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ['errors.md']
    rows = [ln for ln in (tmp_path / 'errors.md').read_text().splitlines() if ln[:2] == '| ']
    assert [r.split(' | ')[0] for r in rows] == ['| case', '| unknown arch', '| channels not 3']
    with open(osp.join(REPO_ROOT, 'docs', 'errors.md')) as f:
        committed = f.read()
    assert all(r in committed for r in rows), rows


@pytest.mark.slow
@pytest.mark.parametrize('command', sorted(REPORT_TOOLS))
def test_report_tool_accepts_its_arguments(command):
    help_args, owner = REPORT_TOOLS[command]
    assert osp.isfile(osp.join(REPO_ROOT, owner))
    tool = shlex.split(command)[1]
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, tool), *help_args],
                          capture_output=True,
                          text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for option in (a for a in shlex.split(command) if a.startswith('--')):
        assert option in proc.stdout, (command, option)


@pytest.mark.slow
def test_make_complexity_writes_the_committed_report(tmp_path):
    """The README's params and MACs come from docs/complexity.md: what the tool writes today."""
    ok(f'python tools/analysis/complexity.py --out {tmp_path}/complexity.md', tmp_path)
    with open(osp.join(REPO_ROOT, 'docs', 'complexity.md')) as f:
        assert (tmp_path / 'complexity.md').read_text() == f.read(), \
            'docs/complexity.md is out of date: run make complexity'


def would_install(command: str, tmp_path) -> list:
    """pip's own report, offline, of what a page's ``pip install ...`` installs here."""
    report = tmp_path / 'report.json'
    proc = subprocess.run([
        sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation',
        '--report',
        str(report), *shlex.split(command)[2:]
    ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report) as f:
        return [item['metadata']['name'] for item in json.load(f)['install']]


@pytest.mark.slow
def test_install_commands_keep_the_installed_torch_and_mmcv(tmp_path):
    """Installing into this environment installs mmdualtoken and nothing else (torch, mmcv,
    the frameworks, onnx and onnxruntime stay as they are)."""
    for command in INSTALLS:
        assert would_install(command, tmp_path) == ['mmdualtoken'], command


@pytest.mark.slow
def test_the_mmdeploy_install_line_is_what_the_set_up_installs(tmp_path):
    """The line installs nothing more here: the set-up installed it, at the pinned versions."""
    import importlib.metadata
    assert would_install(MMDEPLOY_INSTALL, tmp_path) == []
    with open(osp.join(REPO_ROOT, 'requirements', 'constraints.txt')) as f:
        pins = dict(re.findall(r'^([\w-]+)==(\S+)', f.read(), flags=re.M))
    assert f'mmdeploy=={pins["mmdeploy"]}' in MMDEPLOY_INSTALL.split()
    for name in ('mmdeploy', 'aenum'):
        assert importlib.metadata.version(name) == pins[name]


def test_the_mmdeploy_command_is_the_python_forms_export():
    """mmdeploy's tools/deploy.py with the stock deploy config that
    configs/deploy/detection_onnxruntime_dynamic.py expands, and the model config, checkpoint,
    image and work dir of the page's Python form."""
    args = shlex.split(MMDEPLOY_TOOL)
    assert args[:3] == [
        'python', '../mmdeploy/tools/deploy.py', f'../mmdeploy/{MMDEPLOY_STOCK_CONFIG}'
    ]
    assert MMDEPLOY_STOCK_CONFIG in page_text('configs/deploy/detection_onnxruntime_dynamic.py')
    (script, ) = [
        body for lang, body in code_blocks(page_text('docs/deployment.md'))
        if lang == 'python' and 'from mmdeploy' in body
    ]
    for value in args[3:6]:  # model config, checkpoint, image
        assert f'{value!r}' in script, value
    assert dict(zip(args[6::2], args[7::2])) == {
        '--work-dir': 'work_dirs/mmdeploy_retinanet_s',
        '--device': 'cpu'
    }
    assert "torch2onnx(image, 'work_dirs/mmdeploy_retinanet_s', 'end2end.onnx'" in script
    assert "device='cpu'" in script


def test_the_readme_exports_where_the_deploy_extra_is_installed():
    """torch's exporter needs onnx (torch 2.1 even for a plain conv): the README installs the
    deploy extra before its export snippet, and the torch 2.1.2 matrix, which runs that
    snippet, installs the extra's requirements file and no onnx of its own."""
    import importlib.metadata
    requires = importlib.metadata.requires('mmdualtoken')
    deploy = sorted(r.split(';')[0].strip() for r in requires if 'extra == "deploy"' in r)
    with open(osp.join(REPO_ROOT, 'requirements', 'deploy.txt')) as f:
        listed = sorted(ln.split('#')[0].strip() for ln in f if ln.split('#')[0].strip())
    assert deploy == listed and [re.split(r'\W', r)[0] for r in listed] == ['onnx', 'onnxruntime']
    readme = page_text('README.md')
    assert readme.index('pip install -e ".[deploy]"') < readme.index('export_onnx(model')
    with open(osp.join(REPO_ROOT, 'tools', 'compat_matrix.sh')) as f:
        matrix = f.read()
    common = re.search(r'^COMMON=\((.*)\)', matrix, flags=re.M).group(1)
    assert 'DEPLOY_EXTRA="$ROOT/requirements/deploy.txt"' in matrix
    assert '-r "$DEPLOY_EXTRA"' in matrix and 'onnx' not in common


@pytest.mark.slow
def test_activate_gives_the_environment(tmp_path):
    """From a shell whose PATH has no venv: after the page's line, `python` is the venv's."""
    script = (f'cd {REPO_ROOT} && {ACTIVATE} && cd {tmp_path} && '
              'python -c "import sys, mmdualtoken; print(sys.prefix)"')
    proc = subprocess.run(['bash', '-c', script],
                          capture_output=True,
                          text=True,
                          timeout=120,
                          env=dict(HOME=os.environ.get('HOME', '/'), PATH='/usr/bin:/bin'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == osp.join(REPO_ROOT, '.venv')


def real_config_commands() -> list:
    return sorted({c for c in documented_commands() if real_config(c)})


REAL_CONFIG_COMMANDS = real_config_commands()


def one_process(command: str) -> str:
    """tools/dist_*.sh lines with one process instead of eight (2 cores here)."""
    command = re.sub(r'^(tools/dist_train\.sh \S+) \d+', r'\1 1', command)
    return re.sub(r'^(tools/dist_test\.sh \S+ \S+) \d+', r'\1 1', command)


@pytest.mark.slow
@pytest.mark.parametrize('command', REAL_CONFIG_COMMANDS)
def test_real_config_command_stops_without_its_dataset(command, tmp_path):
    fails_with_one_line(
        one_process(command),
        tmp_path,
        r'(Dataset folder|Annotation file|Dataset files) not found.*: .*data/',
        env=dict(PORT=str(free_port())))


@pytest.mark.parametrize('command', ABLATIONS)
def test_ablation_line_is_the_baselines_with_another_model(command):
    """What the baseline's line shows when run (its dataset missing), this line shows too: the
    same launcher and arguments, a config whose data, schedule and runtime are the same."""
    from mmengine.config import Config
    assert ABLATION_BASELINE in real_config_commands()
    config, baseline = shlex.split(command)[1], shlex.split(ABLATION_BASELINE)[1]
    assert command == ABLATION_BASELINE.replace(baseline, config)
    ours, theirs = (Config.fromfile(osp.join(REPO_ROOT, c)).to_dict() for c in (config, baseline))
    assert ours.pop('model') != theirs.pop('model')
    assert ours == theirs


def fake_coco(root) -> None:
    """COCO's folders and annotation files, empty: the dataset-path check passes."""
    for folder in ('train2017', 'val2017', 'annotations'):
        os.makedirs(root / 'data' / 'coco' / folder)
    for split in ('train', 'val'):
        (root / 'data' / 'coco' / 'annotations' / f'instances_{split}2017.json').write_text('')


@pytest.mark.slow
@pytest.mark.parametrize('command', sorted(PRETRAINED))
def test_fine_tuning_without_the_imagenet_checkpoint(command, tmp_path):
    fake_coco(tmp_path)
    out = fails_with_one_line(
        one_process(command), tmp_path, PRETRAINED[command], env=dict(PORT=str(free_port())))
    if command.endswith('init_cfg=None'):
        assert 'Pretrained backbone checkpoint not found' not in out


@pytest.mark.slow
def test_two_machine_lines(tmp_path):
    """Both machines' lines at once on this one (MASTER_ADDR this machine, one process per
    machine): they meet, and every process stops with the missing-dataset error."""
    port = free_port()
    procs = []
    for line in TWO_MACHINES:
        line = (
            line.replace('MASTER_ADDR=10.0.0.1',
                         'MASTER_ADDR=127.0.0.1').replace('PORT=29500',
                                                          f'PORT={port}').replace('.py 8', '.py 1'))
        args = bash(line)
        procs.append(
            subprocess.Popen(
                args['cmd'],
                env=args['env'],
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:  # torchrun's workers run in sessions of their own
        for pid in [d for p in procs for d in descendants(p.pid)] + [p.pid for p in procs]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    for proc, output in zip(procs, outputs):
        assert proc.returncode != 0
        assert 'error: Dataset folder not found' in output, output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize('command', sorted(SLURM))
def test_slurm_line(command, tmp_path):
    """With a stand-in srun that records its arguments: the script asks srun for what the
    line means, and the tools/train.py or tools/test.py command it hands over, run here
    without Slurm (--launcher none), stops with the missing-dataset error."""
    bin_dir, record = tmp_path / 'bin', tmp_path / 'srun_args'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {record}\n')
    (bin_dir / 'srun').chmod(0o755)
    ok(command, tmp_path, env=dict(PATH=f'{bin_dir}:{VENV_BIN}:{os.environ["PATH"]}'))
    args = record.read_text().splitlines()
    for expected in SLURM[command]:
        assert expected in args, (expected, args)
    script = next(i for i, a in enumerate(args) if re.search(r'tools/(train|test)\.py$', a))
    handed = [a.replace('--launcher=slurm', '--launcher=none') for a in args[script:]]
    fails_with_one_line(f'python {shlex.join(handed)}', tmp_path, r'Dataset folder not found')


def fake_imagenet_checkpoint(path) -> None:
    """An ImageNet classifier checkpoint of S (random weights) where the README's export
    command expects the pretraining run's last checkpoint."""
    import torch

    from mmdualtoken.models import DualTokenViT
    state = {f'backbone.{k}': v for k, v in DualTokenViT(arch='small').state_dict().items()}
    state.update({'head.fc.weight': torch.zeros(1000, 224), 'head.fc.bias': torch.zeros(1000)})
    os.makedirs(osp.dirname(path))
    torch.save(dict(meta=dict(epoch=300), state_dict=state), path)


@pytest.mark.slow
@pytest.mark.parametrize('command', EXPORTS, ids=['torchscript_dynamic', 'dynamo_latency'])
def test_export_command(command, tmp_path):
    if '--checkpoint' in command:
        fake_imagenet_checkpoint(tmp_path / 'work_dirs' / 'dualtoken_s_in1k' / 'epoch_300.pth')
    out = ok(command, tmp_path)
    assert re.search(r'max \|ONNX Runtime - PyTorch\| = \S+ over the 3 outputs .*: OK', out), out
    if '--checkpoint' in command:
        assert re.search(r'loaded \d+ backbone tensors from work_dirs/dualtoken_s_in1k', out)
        assert 'at 1x3x224x224, 2x3x233x241' in out  # a dynamic graph, checked at another size
    if '--latency' in command:
        assert re.search(r'ONNX Runtime, batch 1 at 224x224, \d+ intra-op thread\(s\): median',
                         out), out
    graph = tmp_path / shlex.split(command)[shlex.split(command).index('--out') + 1]
    assert graph.stat().st_size > 50 * 2**20  # S's 13.7 M fp32 weights, in the one file


@pytest.mark.slow
def test_collect_ablations_without_runs(tmp_path):
    """Before any ablation has trained: every config of configs/ablations/ has its row,
    marked as not run, in the tables written where the page says."""
    (tmp_path / 'work_dirs').mkdir()
    assert 'wrote ablations.md' in ok(COLLECT_ABLATIONS, tmp_path)
    tables = (tmp_path / 'ablations.md').read_text()
    configs = glob.glob(osp.join(REPO_ROOT, 'configs', 'ablations', '*.py'))
    assert len(configs) == 8
    for config in configs:
        name = osp.splitext(osp.basename(config))[0]
        assert re.search(rf'`{re.escape(name)}` \| not run \|', tables), name


@pytest.mark.slow
def test_tiny_detection_commands(tmp_path):
    make_data, train, test, resume, amp = DET
    assert 'wrote 3 dataset(s)' in ok(make_data, tmp_path)
    for folder in ('coco/train2017', 'ade/ADEChallengeData2016/images/training', 'imagenet/train'):
        assert os.listdir(tmp_path / 'data' / 'tiny' / folder)
    ok(train + cfg_options(*DET_SHORT), tmp_path)  # 8 epochs of 1 iteration
    work_dir = tmp_path / 'work_dirs' / 'retinanet_dualtoken_s_tiny'
    assert (work_dir / 'epoch_8.pth').is_file()
    assert_trained(work_dir, 'coco/bbox_mAP')
    out = ok(
        test + cfg_options('test_dataloader.dataset.indices=2', 'model.test_cfg.score_thr=0.0'),
        tmp_path)
    assert 'coco/bbox_mAP' in out
    assert len(glob.glob(str(tmp_path / 'work_dirs' / 'pictures' / 'retinanet' / '*.jpg'))) == 2
    out = ok(resume + cfg_options(*DET_SHORT, 'train_cfg.max_epochs=9'), tmp_path)
    assert 'Restored the random states of rank 0' in out and 'resumed epoch: 8' in out
    assert (work_dir / 'epoch_9.pth').is_file()
    out = ok(
        amp + cfg_options(*DET_SHORT, 'train_cfg.max_epochs=1') + ' --work-dir '
        'work_dirs/amp', tmp_path)
    assert '--amp: CPUAmpOptimWrapper, bfloat16' in out
    assert (tmp_path / 'work_dirs' / 'amp' / 'epoch_1.pth').is_file()


@pytest.mark.slow
def test_tiny_segmentation_commands(tiny_workdir, tmp_path):
    train, test, scaled = SEG
    os.symlink(tiny_workdir / 'data', tmp_path / 'data')
    # 4 of the config's 160 iterations; their checkpoint stands in for the iter_160.pth that
    # the documented test command reads (the full schedule is the same loop, 40x longer)
    work_dir = tmp_path / 'work_dirs' / 'fpn_dualtoken_s_ade20k_tiny'
    ok(
        train + cfg_options(*SEG_SHORT, 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                            'default_hooks.checkpoint.interval=4'), tmp_path)
    assert_trained(work_dir, 'mIoU')
    assert glob.glob(str(work_dir / '*' / 'vis_data' / 'vis_image' / '*.png')), 'no mask picture'
    os.replace(work_dir / 'iter_4.pth', work_dir / 'iter_160.pth')
    out = ok(test + cfg_options('test_dataloader.dataset.indices=2'), tmp_path)
    assert 'mIoU' in out
    pictures = glob.glob(
        str(tmp_path / 'work_dirs' / 'pictures' / 'fpn' / '**' / '*.png'), recursive=True)
    assert len(pictures) == 2, pictures
    out = ok(
        scaled + ' train_dataloader.dataset.indices=8 train_cfg.max_iters=2 '
        'val_dataloader.dataset.indices=2 --work-dir work_dirs/scaled', tmp_path)
    assert 'Scaling the original LR by 0.5' in out, out[-3000:]  # base batch 8, actual 4


@pytest.mark.slow
def test_tiny_classification_commands(tiny_workdir, tmp_path):
    import torch
    train, test, convert, compiled = CLS
    os.symlink(tiny_workdir / 'data', tmp_path / 'data')
    out = ok(train + cfg_options(*CLS_SHORT), tmp_path)  # the 6 epochs of 2 iterations
    # training on the CPU keeps freed memory in the heap (docs/cpu_performance.md)
    assert ('CPU memory: freed memory stays in the heap' in out) != torch.cuda.is_available()
    assert (tmp_path / 'work_dirs' / 'dualtoken_s_in1k_tiny' / 'epoch_6.pth').is_file()
    # the recipe's save_best (tests/test_engine/test_atomic_checkpoint.py)
    assert glob.glob(str(tmp_path / 'work_dirs' / 'dualtoken_s_in1k_tiny' / 'best_accuracy_top1_*'))
    assert_trained(tmp_path / 'work_dirs' / 'dualtoken_s_in1k_tiny', 'accuracy/top1')
    out = ok(test + cfg_options('test_dataloader.dataset.indices=4'), tmp_path)
    assert 'accuracy/top1' in out
    assert len(glob.glob(str(tmp_path / 'work_dirs' / 'pictures' / 'classification' / '*'))) == 4
    ok(convert, tmp_path)
    converted = torch.load(tmp_path / 'work_dirs' / 'dualtoken_s_backbone.pth', weights_only=True)
    assert converted['state_dict'] and all(
        k.startswith('backbone.') for k in converted['state_dict'])
    # one epoch; the eager backend (dynamo captures the backbone's graphs) instead of
    # inductor's minutes of C++ compilation. AOTAutograd's capture of forward and backward,
    # which inductor builds on, is tests/test_models/test_numerics.py's (aot_eager).
    out = ok(
        compiled + cfg_options(*CLS_SHORT, 'train_cfg.max_epochs=1', 'compile.backend=eager') +
        ' --work-dir work_dirs/compiled', tmp_path)
    # the compile settings reach our hook, not mmengine's own train_step compilation
    assert "torch.compile(DualTokenViT, backend='eager', dynamic=False)" in out, out[-3000:]
    assert 'Model has been "compiled"' not in out
    graphs = re.search(r'torch\.compile: (\d+) graph\(s\) of the backbone compiled', out)
    # one graph in training mode, one in evaluation mode (the validation at the end)
    assert graphs and int(graphs.group(1)) == 2, out[-3000:]
    # compiled in place: the checkpoint has the keys of an uncompiled model
    state = torch.load(
        tmp_path / 'work_dirs' / 'compiled' / 'epoch_1.pth', map_location='cpu',
        weights_only=True)['state_dict']
    assert 'backbone.stem.layers.0.conv.weight' in state
    assert not any('_orig_mod' in key for key in state)
