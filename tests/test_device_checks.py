"""What the tools check about the device before anything is built (mmdualtoken.device_checks).

This machine has no GPU. Where a test needs one, ``torch.cuda.is_available`` is patched to
True: it stands in for a GPU node, and what is checked there (the environment, mmcv's build,
torch's determinism flags) is this machine's own. mmcv here is built without CUDA
(``FORCE_CUDA=0``), which is exactly the build the CUDA-ops check must refuse on a GPU.
"""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO_ROOT, run_tool, tool_env
from mmengine.config import Config

from mmdualtoken import device_checks, launch
from mmdualtoken.device_checks import (CPU_OPT_IN, check_cuda_ops, check_gpus_expected,
                                       configure_determinism, gpus_expected, names_devices)
from mmdualtoken.errors import LaunchError


@pytest.mark.parametrize('value, named', [('0', True), ('0,1', True), (' 3', True),
                                          ('GPU-8f6c2a1e-0000', True), ('MIG-1', True), ('', False),
                                          ('-1', False), ('NoDevFiles', False), ('-1,0', False)])
def test_cuda_visible_devices_names_devices_as_cuda_reads_it(value, named):
    assert names_devices(value) is named


def test_what_says_gpus_were_expected():
    assert gpus_expected({}) == []
    assert gpus_expected({'CUDA_VISIBLE_DEVICES': ''}) == []  # hidden on purpose
    assert gpus_expected({'SLURM_JOB_GPUS': '', 'SLURM_GPUS_ON_NODE': '0', 'GPUS': '0'}) == []
    assert gpus_expected({'SLURM_STEP_GPUS': '(null)', 'SLURM_GPUS': 'a100:0'}) == []
    # lists of GPU indices (GPU 0 is a GPU) and counts (N or TYPE:N)
    assert gpus_expected({
        'SLURM_STEP_GPUS': '0',
        'SLURM_GPUS_PER_NODE': 'a100:2'
    }) == ['SLURM_STEP_GPUS=0', 'SLURM_GPUS_PER_NODE=a100:2']
    assert gpus_expected({
        'CUDA_VISIBLE_DEVICES': '0,1',
        'SLURM_STEP_GPUS': '0,1',
        'SLURM_JOB_GPUS': '0,1,2,3',
        'GPUS': '8'
    }) == ['CUDA_VISIBLE_DEVICES=0,1', 'SLURM_STEP_GPUS=0,1', 'SLURM_JOB_GPUS=0,1,2,3', 'GPUS=8']


@pytest.mark.parametrize('environ', [{
    'CUDA_VISIBLE_DEVICES': '0,1'
}, {
    'SLURM_STEP_GPUS': '0',
    'CUDA_VISIBLE_DEVICES': ''
}, {
    'GPUS': '8'
}])
def test_expected_gpus_that_torch_does_not_see_stop_in_one_line(environ):
    assert not torch.cuda.is_available()  # this machine: torch sees no GPU
    with pytest.raises(LaunchError) as stopped:
        check_gpus_expected(environ)
    message = str(stopped.value)
    assert '\n' not in message
    assert message.startswith(f'GPUs were expected ({", ".join(gpus_expected(environ))}) but '
                              'torch sees none: torch ')
    assert torch.__version__ in message  # what torch sees, in its own words
    assert f'to run on the CPU on purpose, set {CPU_OPT_IN}=1' in message
    assert 'GRES=none' in message


def test_the_cpu_on_purpose_or_no_gpu_expected_runs():
    check_gpus_expected({'CUDA_VISIBLE_DEVICES': '0', CPU_OPT_IN: '1'})
    check_gpus_expected({'SLURM_STEP_GPUS': '0', 'GPUS': '8', CPU_OPT_IN: 'true'})
    check_gpus_expected({})  # a machine without GPUs: the CPU is the only device
    check_gpus_expected({'CUDA_VISIBLE_DEVICES': ''})


def test_gpus_seen_need_no_opt_in(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    check_gpus_expected({'CUDA_VISIBLE_DEVICES': '0,1', 'GPUS': '2'})


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_a_gpu_job_whose_torch_sees_no_gpu_stops_in_seconds(tool):
    """Launcher none: the same line as under torchrun and srun (the check runs before the
    config is read, whatever --launcher says)."""
    args = [osp.join(REPO_ROOT, 'configs', 'retinanet_dualtoken_s.py')]
    args += ['missing.pth'] if tool == 'test.py' else []
    env = {'CUDA_VISIBLE_DEVICES': '0'}  # CI sets no MMDUALTOKEN_CPU
    start = time.monotonic()
    proc = run_tool(tool, *args, cwd=REPO_ROOT, env=env, timeout=120, check=False)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'error: GPUs were expected (CUDA_VISIBLE_DEVICES=0) but torch sees none')
    # the opt-in gets past the check, to the next one (this config does not exist)
    proc = run_tool(
        tool,
        'no_such_config.py',
        *args[1:],
        cwd=REPO_ROOT,
        env=dict(env, **{CPU_OPT_IN: '1'}),
        check=False)
    assert proc.stderr.strip().splitlines()[-1] == 'error: Config file not found: ' \
        'no_such_config.py', proc.stderr[-3000:]


@pytest.mark.slow
def test_every_torchrun_rank_stops_with_the_line():
    """tools/dist_train.sh (torchrun, 2 processes) where the node's GPUs are not usable."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='0,1', PYTHON=sys.executable)
    env.pop(CPU_OPT_IN, None)
    from helpers import free_port
    proc = subprocess.run(
        [osp.join('tools', 'dist_train.sh'), 'configs/retinanet_dualtoken_s.py', '2'],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=tool_env(dict(env, PORT=str(free_port()))))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # the first rank to stop says why; torchrun then ends the other and names the failure
    assert any(
        line.startswith('error: GPUs were expected (CUDA_VISIBLE_DEVICES=0,1) but torch '
                        'sees none') for line in output.splitlines()), output[-3000:]
    assert 'exitcode  : 1' in output and 'Traceback' not in proc.stdout


def test_why_torch_sees_no_gpu_in_torchs_words(monkeypatch):
    """The reason in the line: this machine's (a CUDA build, no driver), a CPU-only build of
    torch (stand-in: torch.version.cuda None), and a CUDA that initialises yet shows no
    device (stand-in: torch.cuda.init patched to succeed)."""
    assert device_checks.why_no_cuda().startswith(
        f'torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no usable GPU: ')
    monkeypatch.setattr(torch.cuda, 'init', lambda: None)
    assert device_checks.why_no_cuda().endswith(' finds no GPU')
    monkeypatch.setattr(torch.version, 'cuda', None)
    assert device_checks.why_no_cuda() == f'torch {torch.__version__} is a build without CUDA'


def test_mmcv_lite_has_no_cuda_kernels_either(monkeypatch):
    """mmcv-lite has no mmcv.ops (stand-in: the module made unimportable)."""
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)
    assert device_checks.mmcv_cuda_version() is None


def test_a_detector_on_cuda_needs_mmcv_ops_with_cuda_kernels(monkeypatch):
    assert device_checks.mmcv_cuda_version() is None  # this mmcv: FORCE_CUDA=0
    cfg = Config(dict(default_scope='mmdet', model=dict(type='RetinaNet'), launcher='none'))
    check_cuda_ops(cfg)  # no GPU: the CPU ops serve
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(LaunchError) as stopped:
        check_cuda_ops(cfg)
    message = str(stopped.value)
    assert '\n' not in message and 'it was built without CUDA' in message
    assert 'https://download.openmmlab.com/mmcv/dist/cu' in message
    assert 'FORCE_CUDA=1' in message and 'docs/get_started.md' in message
    # through the tools' runner builder: before the Runner is built
    with pytest.raises(LaunchError, match='no CUDA kernels'):
        launch.build_runner(cfg)
    # classification and segmentation need no mmcv op; a CUDA build passes
    check_cuda_ops(Config(dict(default_scope='mmpretrain')))
    check_cuda_ops(Config(dict(default_scope='mmseg')))
    monkeypatch.setattr(device_checks, 'mmcv_cuda_version', lambda: '12.1')
    check_cuda_ops(cfg)


def test_get_started_says_how_to_get_mmcv_with_cuda_kernels(monkeypatch):
    """The page's example is the line the check gives on torch 2.1.2 built for CUDA 12.1."""
    with open(osp.join(REPO_ROOT, 'docs', 'get_started.md')) as f:
        page = f.read()
    monkeypatch.setattr(torch, '__version__', '2.1.2+cu121')
    monkeypatch.setattr(torch.version, 'cuda', '12.1')
    assert f'`{device_checks.wheel_index()}`' in page
    assert '`FORCE_CUDA=1 MMCV_WITH_OPS=1 pip install --no-build-isolation mmcv==2.1.0`' in page


@pytest.fixture
def deterministic_flags():
    """Put torch's determinism flags and CUBLAS_WORKSPACE_CONFIG back after the test."""
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    workspace = os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None)
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    os.environ.pop('CUBLAS_WORKSPACE_CONFIG', None)
    if workspace is not None:
        os.environ['CUBLAS_WORKSPACE_CONFIG'] = workspace


def test_deterministic_on_cuda_runs_with_cublas_workspace_and_a_warning(
        monkeypatch, deterministic_flags):
    cfg = Config(dict(randomness=dict(seed=0, deterministic=True)))
    assert not configure_determinism(cfg)  # the CPU: mmengine's flags are all it needs
    assert 'CUBLAS_WORKSPACE_CONFIG' not in os.environ
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)  # mmengine's logger asks
    assert not configure_determinism(Config(dict(randomness=dict(seed=0))))
    assert configure_determinism(cfg)
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    # through the tools' runner builder, around a Runner that seeds as mmengine's does
    built = []

    def runner_that_seeds(config):
        torch.use_deterministic_algorithms(True)  # mmengine's set_random_seed(deterministic)
        built.append(config)
        return 'runner'

    from mmengine.runner import Runner
    monkeypatch.setattr(Runner, 'from_cfg', staticmethod(runner_that_seeds))
    cfg = Config(dict(default_scope='mmpretrain', model=dict(), randomness=cfg.randomness))
    assert launch.build_runner(cfg) == 'runner' and built
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    # a user's own workspace setting is kept
    os.environ['CUBLAS_WORKSPACE_CONFIG'] = ':16:8'
    configure_determinism(cfg)
    assert os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':16:8'
