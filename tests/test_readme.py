"""The README is executable: every command in it (and in the configs' usage lines) runs here.

Commands are collected from README.md's ```bash blocks, its ```python blocks are run as
scripts, and every repository path it names must exist. Each collected command must appear
in exactly one scenario below, which runs it as a new user would: from a working folder,
with the data the README's own commands generate. Only what a 2-core CPU machine cannot
afford is changed, each change named next to the command: short schedules and small data
subsets through --cfg-options, fewer processes for multi-machine lines, the quick forms of
the multi-minute analysis tools, and torch.compile's aot_eager backend where inductor would
compile C++ for minutes. Commands on the real configs run unchanged and must stop
at once with the clear missing-dataset error. A README command that no scenario runs, or a
scenario command the README no longer has, fails the test.
"""
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, descendants, run_process_tree

README = osp.join(REPO_ROOT, 'README.md')
VENV_BIN = osp.dirname(sys.executable)


# ---------------------------------------------------------------- collecting
def readme_text() -> str:
    with open(README) as f:
        return f.read()


def code_blocks(text: str) -> list:
    """(language, body) of every fenced block, indented ones (in lists) included."""
    blocks = []
    for match in re.finditer(r'^( *)```(\w*)\n(.*?)^\1```', text, flags=re.S | re.M):
        indent = len(match.group(1))
        body = '\n'.join(line[indent:] for line in match.group(3).splitlines())
        blocks.append((match.group(2), body))
    return blocks


def shell_commands(body: str) -> list:
    """Commands of a shell block: continuation lines joined, comments and blanks dropped."""
    commands = []
    for line in body.replace('\\\n', ' ').splitlines():
        line = re.sub(r'\s+#.*$', '', line).strip()
        if line and not line.startswith('#'):
            commands.append(line)
    return commands


def readme_commands() -> list:
    return [c for lang, body in code_blocks(readme_text()) if lang == 'bash'
            for c in shell_commands(body)]


def config_usage_lines() -> list:
    """Usage lines (`#   python tools/...`, `#   tools/...`, indented) in the configs' headers."""
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


# ---------------------------------------------------------------- running
def bash(command: str, env=None) -> dict:
    """Popen arguments for a README command line: bash, the venv's python first on PATH,
    the repository's tools/ and configs/ (README paths are relative to its root)."""
    command = re.sub(r'(?<![\w/.-])((?:tools|configs)/)', REPO_ROOT + r'/\1', command)
    return dict(cmd=['bash', '-c', command],
                env=dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ['PATH'],
                         OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **(env or {})))


def run(command: str, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    """Run a README command line; on a timeout its whole process tree is ended."""
    return run_process_tree(**bash(command, env), cwd=str(cwd), timeout=timeout)


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def ok(command: str, cwd, **kwargs) -> str:
    proc = run(command, cwd, **kwargs)
    assert proc.returncode == 0, (f'{command} failed ({proc.returncode}):\n'
                                  f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc.stdout + proc.stderr


def cfg_options(*options: str) -> str:
    return ' --cfg-options ' + ' '.join(options)


def last_checkpoint(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


# short schedules and subsets (the only change to the tiny-config commands)
DET_SHORT = ('train_dataloader.dataset.indices=2', 'train_dataloader.batch_size=2',
             'val_dataloader.dataset.indices=2', 'model.test_cfg.score_thr=0.0')
SEG_SHORT = ('train_dataloader.dataset.indices=2', 'train_dataloader.batch_size=1',
             'val_dataloader.dataset.indices=2', 'default_hooks.visualization.interval=1')
CLS_SHORT = ('train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
             'val_dataloader.dataset.indices=4')

# ---------------------------------------------------------------- the scenarios
# Each README command, literally, and the scenario that runs it.
TINY_DETECTION = [
    'python tools/data/make_tiny_datasets.py',
    'python tools/train.py configs/tiny/retinanet_dualtoken_s_tiny.py',
    'python tools/test.py configs/tiny/retinanet_dualtoken_s_tiny.py '
    'work_dirs/retinanet_dualtoken_s_tiny/epoch_8.pth --show-dir work_dirs/pictures/retinanet',
    'python tools/train.py configs/tiny/retinanet_dualtoken_s_tiny.py --resume',
    'python tools/train.py configs/tiny/retinanet_dualtoken_s_tiny.py --amp',
]
TINY_SEGMENTATION = [
    'python tools/train.py configs/tiny/fpn_dualtoken_s_ade20k_tiny.py',
    'python tools/test.py configs/tiny/fpn_dualtoken_s_ade20k_tiny.py '
    'work_dirs/fpn_dualtoken_s_ade20k_tiny/iter_160.pth --show-dir work_dirs/pictures/fpn',
    'python tools/train.py configs/tiny/fpn_dualtoken_s_ade20k_tiny.py --auto-scale-lr '
    '--cfg-options train_dataloader.batch_size=4',
]
TINY_CLASSIFICATION = [
    'python tools/train.py configs/tiny/dualtoken_s_in1k_tiny.py',
    'python tools/test.py configs/tiny/dualtoken_s_in1k_tiny.py '
    'work_dirs/dualtoken_s_in1k_tiny/epoch_6.pth --show-dir work_dirs/pictures/classification',
    'python tools/model_converters/to_backbone_checkpoint.py '
    'work_dirs/dualtoken_s_in1k_tiny/epoch_6.pth work_dirs/dualtoken_s_backbone.pth '
    '--arch small',
    'python tools/train.py configs/tiny/dualtoken_s_in1k_tiny.py --compile',
]
TWO_MACHINES = [
    'NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh '
    'configs/retinanet_dualtoken_s.py 8',
    'NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 PORT=29500 tools/dist_train.sh '
    'configs/retinanet_dualtoken_s.py 8',
]
DEPLOYMENT = [
    'python tools/deployment/export_onnx.py --arch small --max-global-tokens 196 '
    '--out dualtoken_s.onnx --latency',
    'python tools/deployment/export_onnx.py --arch small --max-global-tokens 196 '
    '--exporter dynamo --out dualtoken_s_dynamo.onnx --latency',
]
INSTALLS = ['pip install -e ".[det]"', 'pip install -e ".[seg]"']
OWN_ENVIRONMENT = ['make demo', 'make test', 'source .venv/bin/activate']
ANALYSIS = [
    'make complexity',
    'python tools/analysis/errors.py --out docs/errors.md',
    'python tools/analysis/benchmark.py --out docs/benchmark.md',
    'tools/compat_matrix.sh',
    'python tools/analysis/reliability.py --out docs/reliability.md',
]


def real_config(command: str) -> bool:
    """A command on a real (full-dataset) config, run unchanged: it must stop at once."""
    return bool(re.search(r'configs/(?!tiny/)[\w/-]+\.py', command)) and \
        not command.startswith('NNODES=')


SCENARIO_COMMANDS = (TINY_DETECTION + TINY_SEGMENTATION + TINY_CLASSIFICATION + TWO_MACHINES
                     + DEPLOYMENT + INSTALLS + OWN_ENVIRONMENT + ANALYSIS)


def test_every_readme_command_has_a_scenario_and_every_scenario_a_command():
    commands = readme_commands() + config_usage_lines()
    assert len(commands) > 20
    unhandled = [c for c in commands if c not in SCENARIO_COMMANDS and not real_config(c)]
    assert not unhandled, f'README/config commands the suite does not run: {unhandled}'
    stale = [c for c in SCENARIO_COMMANDS if c not in commands]
    assert not stale, f'scenario commands the README no longer has: {stale}'


def test_no_command_hides_outside_a_bash_block():
    for lang, body in code_blocks(readme_text()):
        if lang != 'bash':
            assert not re.search(r'^\s*(python tools/|tools/|make |pip )', body, flags=re.M), \
                f'a command in a ```{lang} block is not collected:\n{body}'


def test_every_named_path_exists():
    text = readme_text() + '\n'.join(config_usage_lines())
    names = set(re.findall(r'(?<![\w/.-])((?:tools|configs|docs|mmdualtoken|requirements|tests)'
                           r'/[\w./{},-]*[\w}])', text))
    names |= set(re.findall(r'\]\(((?!https?:)[^)#]+)\)', text))  # markdown links
    missing = []
    for name in names:
        for path in expand_braces(name):
            if not glob.glob(osp.join(REPO_ROOT, path)):
                missing.append(path)
    assert not missing, f'README names paths that do not exist: {sorted(missing)}'


def expand_braces(pattern: str) -> list:
    match = re.search(r'\{([^{}]*)\}', pattern)
    if not match:
        return [pattern]
    return [p for option in match.group(1).split(',')
            for p in expand_braces(pattern[:match.start()] + option + pattern[match.end():])]


REAL_CONFIG_COMMANDS = sorted(set(c for c in readme_commands() + config_usage_lines()
                                  if real_config(c)))


@pytest.mark.parametrize('command', REAL_CONFIG_COMMANDS)
def test_real_config_commands_stop_with_the_missing_dataset_error(command, tmp_path):
    proc = run(command, tmp_path, timeout=600, env=dict(PORT=str(free_port())))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r'error: (Dataset folder|Annotation file) not found: .*data/', output), \
        output[-3000:]
    if not command.startswith('tools/dist_'):  # torchrun adds its own report of the failure
        assert 'Traceback' not in output, output[-3000:]


def test_two_machine_lines(tmp_path):
    """Both machines' lines at once on this one (MASTER_ADDR is this machine, 1 process per
    machine): they meet, and every process stops with the missing-dataset error."""
    port = free_port()
    lines = [line.replace('MASTER_ADDR=10.0.0.1', 'MASTER_ADDR=127.0.0.1')
             .replace('PORT=29500', f'PORT={port}').replace('.py 8', '.py 1')
             for line in TWO_MACHINES]
    procs = []
    for line in lines:
        args = bash(line)
        procs.append(subprocess.Popen(args['cmd'], env=args['env'], cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:  # the workers of a launcher that did not end are in sessions of their own
        for pid in [d for p in procs for d in descendants(p.pid)] + [p.pid for p in procs]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    for proc, output in zip(procs, outputs):
        assert proc.returncode != 0
        assert 'error: Dataset folder not found' in output, output[-3000:]


def test_tiny_detection_commands(tmp_path):
    make_data, train, test, resume, amp = TINY_DETECTION
    assert 'wrote 3 dataset(s)' in ok(make_data, tmp_path)
    for folder in ('coco/train2017', 'ade/ADEChallengeData2016/images/training',
                   'imagenet/train'):
        assert os.listdir(tmp_path / 'data' / 'tiny' / folder)
    ok(train + cfg_options(*DET_SHORT), tmp_path)  # 8 epochs of 1 iteration
    work_dir = tmp_path / 'work_dirs' / 'retinanet_dualtoken_s_tiny'
    assert (work_dir / 'epoch_8.pth').is_file()
    out = ok(test + cfg_options('test_dataloader.dataset.indices=2',
                                'model.test_cfg.score_thr=0.0'), tmp_path)
    assert 'coco/bbox_mAP' in out
    pictures = glob.glob(str(tmp_path / 'work_dirs' / 'pictures' / 'retinanet' / '*.jpg'))
    assert len(pictures) == 2
    out = ok(resume + cfg_options(*DET_SHORT, 'train_cfg.max_epochs=9'), tmp_path)
    assert 'Restored the random states of rank 0' in out and 'resumed epoch: 8' in out
    assert (work_dir / 'epoch_9.pth').is_file()
    out = ok(amp + cfg_options(*DET_SHORT, 'train_cfg.max_epochs=1') +
             ' --work-dir work_dirs/amp', tmp_path)
    assert '--amp: CPUAmpOptimWrapper' in out
    assert (tmp_path / 'work_dirs' / 'amp' / 'epoch_1.pth').is_file()


def test_tiny_segmentation_commands(tiny_workdir, tmp_path):
    train, test, auto_scale = TINY_SEGMENTATION
    os.symlink(tiny_workdir / 'data', tmp_path / 'data')
    ok(train + cfg_options(*SEG_SHORT), tmp_path)  # the 160 iterations at batch 1
    work_dir = tmp_path / 'work_dirs' / 'fpn_dualtoken_s_ade20k_tiny'
    assert (work_dir / 'iter_160.pth').is_file()
    out = ok(test + cfg_options('test_dataloader.dataset.indices=2'), tmp_path)
    assert 'mIoU' in out
    pictures = glob.glob(str(tmp_path / 'work_dirs' / 'pictures' / 'fpn' / '**' / '*.png'),
                         recursive=True)
    assert len(pictures) == 2, pictures
    out = ok(auto_scale + ' train_dataloader.dataset.indices=8 train_cfg.max_iters=2 '
             'val_dataloader.dataset.indices=2 --work-dir work_dirs/scaled', tmp_path)
    # base batch 8, actual 4: half the config's lr
    assert 'Scaling the original LR by 0.5' in out, out[-3000:]


def test_tiny_classification_commands(tiny_workdir, tmp_path):
    train, test, convert, compiled = TINY_CLASSIFICATION
    os.symlink(tiny_workdir / 'data', tmp_path / 'data')
    out = ok(train + cfg_options(*CLS_SHORT), tmp_path)  # the 6 epochs of 2 iterations
    import torch
    # training on the CPU keeps freed memory in the heap ("Speed on CPU"), and says so
    assert ('CPU memory: freed memory stays in the heap' in out) != torch.cuda.is_available()
    work_dir = tmp_path / 'work_dirs' / 'dualtoken_s_in1k_tiny'
    assert (work_dir / 'epoch_6.pth').is_file()
    out = ok(test + cfg_options('test_dataloader.dataset.indices=4'), tmp_path)
    assert 'accuracy/top1' in out
    pictures = glob.glob(str(tmp_path / 'work_dirs' / 'pictures' / 'classification' / '*'))
    assert len(pictures) == 4
    ok(convert, tmp_path)
    converted = torch.load(tmp_path / 'work_dirs' / 'dualtoken_s_backbone.pth',
                           weights_only=True)
    assert converted['state_dict'] and all(k.startswith('backbone.')
                                           for k in converted['state_dict'])
    # one epoch; the aot_eager backend (dynamo and AOTAutograd capture the forward and the
    # backward as with inductor) instead of inductor's minutes of C++ compilation here
    out = ok(compiled + cfg_options(*CLS_SHORT, 'train_cfg.max_epochs=1',
                                    'compile.backend=aot_eager') +
             ' --work-dir work_dirs/compiled', tmp_path)
    assert re.search(r'torch\.compile: [1-9]\d* graph\(s\) of the backbone compiled', out), \
        out[-3000:]
    assert (tmp_path / 'work_dirs' / 'compiled' / 'epoch_1.pth').is_file()


@pytest.mark.parametrize('export', DEPLOYMENT, ids=['torchscript', 'dynamo'])
def test_deployment_command(tmp_path, export):
    """Unchanged: S exported at 224, checked in ONNX Runtime and timed (10-20 s each)."""
    out = ok(export, tmp_path)
    assert re.search(r'max \|ONNX Runtime - PyTorch\| = \S+ over the 3 outputs .*: OK', out)
    assert re.search(r'ONNX Runtime, batch 1 at 224x224, 2 intra-op thread\(s\): median '
                     r'\d+\.\d+ ms', out), out[-3000:]
    graph = tmp_path / shlex.split(export)[shlex.split(export).index('--out') + 1]
    assert graph.stat().st_size > 50 * 2**20  # 13.7 M fp32 weights, in the one file


def test_install_into_an_environment_that_has_torch_and_mmcv(tmp_path):
    """pip's own report: installing into this environment (torch 2.14.1, mmcv 2.1.0 built
    here) installs mmdualtoken and nothing else; torch and mmcv stay."""
    for command in INSTALLS:
        report = tmp_path / 'report.json'
        args = shlex.split(command)[2:]
        # offline (--no-index, --no-build-isolation): what is installed must satisfy it
        proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--dry-run',
                               '--no-index', '--no-build-isolation', '--report', str(report),
                               *args],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(report) as f:
            install = [item['metadata']['name'] for item in json.load(f)['install']]
        assert install == ['mmdualtoken'], (command, install)


def test_own_environment_commands(tmp_path):
    demo, make_test, activate = OWN_ENVIRONMENT
    with open(osp.join(REPO_ROOT, '.ci', 'run')) as f:  # `make test` is what CI runs
        assert re.search(r'^make test$', f.read(), flags=re.M)
    out = ok(f'source {REPO_ROOT}/.venv/bin/activate && python -c "import mmdualtoken"',
             tmp_path)
    assert activate.split()[1] == '.venv/bin/activate' and 'Error' not in out
    # the demo, with a 1-epoch schedule on 8 images
    short = ('train_dataloader.dataset.indices=8 train_cfg.max_epochs=1 '
             'val_dataloader.dataset.indices=4 model.test_cfg.score_thr=0.0')
    out = ok(f'make -C {REPO_ROOT} {demo.split()[1]} DEMO_ARGS="--work-dir {tmp_path}/demo '
             f'--data-root {tmp_path}/data --cfg-options {short}"', tmp_path)
    for line in ('[demo] RetinaNet + DualToken-ViT-S', 'COCO bbox mAP:', 'picture:',
                 'wall time:'):
        assert line in out
    assert (tmp_path / 'demo' / 'detections.png').stat().st_size > 10000


def test_analysis_commands(tmp_path):
    complexity, errors, benchmark, matrix, reliability = ANALYSIS
    assert ok(f'make -C {REPO_ROOT} -n {complexity.split()[1]}', tmp_path).count(
        'tools/analysis/complexity.py --out docs/complexity.md') == 1
    # the documents in the repository are what the tools write today
    ok(f'python tools/analysis/complexity.py --out {tmp_path}/complexity.md', tmp_path)
    assert_same_document(tmp_path / 'complexity.md', 'docs/complexity.md')
    ok(errors.replace('docs/errors.md', f'{tmp_path}/errors.md'), tmp_path)
    assert_same_document(tmp_path / 'errors.md', 'docs/errors.md')
    # the benchmark's quick form, into a folder that does not exist yet (the RetinaNet
    # sections at 128x96: at 1333x800 they take minutes)
    ok(benchmark.replace('docs/benchmark.md', f'{tmp_path}/new/benchmark.md') +
       ' --models DualToken-ViT-T ResNet-18 --repeats 1 --warmup 0 --batch 2 --threads 1 '
       '--skip-extras --det-size 96 128 --det-repeats 1 --heap-rounds 1 --heap-iterations 1',
       tmp_path)
    assert (tmp_path / 'new' / 'benchmark.png').is_file()
    # the reliability report's short form: one fault test (the full set runs in this suite
    # anyway, each test checking its own row); its row is the committed document's
    ok(reliability.replace('docs/reliability.md', f'{tmp_path}/reliability.md') +
       ' -k test_classification_listed_image_missing', tmp_path)
    rows = [line for line in (tmp_path / 'reliability.md').read_text().splitlines()
            if line.startswith('| ') and '`tests/' in line]
    assert len(rows) == 1
    with open(osp.join(REPO_ROOT, 'docs', 'reliability.md')) as f:
        assert rows[0] in f.read()
    # the matrix's short form (torch 2.1.2 only, a few backbone tests)
    out = ok(matrix + ' --short', tmp_path, timeout=1800)
    assert re.search(r'\| 2\.1\.2\S* \| 1\.\d+\.\d+ \| 0\.10\.7 \| 2\.1\.0 \| \d+ passed', out), \
        out[-3000:]


def assert_same_document(written, committed):
    with open(written) as f:
        new = f.read()
    with open(osp.join(REPO_ROOT, committed)) as f:
        old = f.read()
    assert new == old, f'{committed} is out of date: regenerate it with its tool'
