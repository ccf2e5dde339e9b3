"""What tools/train.py and tools/test.py check about the device before anything is built.

A GPU job that cannot use its GPUs should stop in seconds with one line, not train for
hours on the CPU or crash at iteration 1:

* :func:`check_gpus_expected`: the environment says GPUs were meant to be used (the
  launcher's or Slurm's variables) and torch sees none;
* :func:`check_cuda_ops`: on CUDA, a detector needs mmcv's compiled ops with CUDA kernels,
  which an mmcv built on a GPU-less machine lacks;
* :func:`configure_determinism`: ``randomness.deterministic=True`` on CUDA, where cuBLAS
  needs a workspace setting and some backward kernels have no deterministic form.

Running on the CPU on purpose where GPUs are announced is one opt-in: ``MMDUALTOKEN_CPU=1``
(tools/slurm_train.sh and tools/slurm_test.sh set it with ``GRES=none``).
"""
import os
from typing import List, Mapping, Optional

import torch

from .errors import LaunchError

CPU_OPT_IN = 'MMDUALTOKEN_CPU'
# Slurm sets these where a job or step was given GPUs (--gres=gpu:N, --gpus...): lists of
# the GPUs' indices, and counts (N, or TYPE:N)
SLURM_GPU_LISTS = ('SLURM_STEP_GPUS', 'SLURM_JOB_GPUS')
SLURM_GPU_COUNTS = ('SLURM_GPUS_ON_NODE', 'SLURM_GPUS', 'SLURM_GPUS_PER_NODE',
                    'SLURM_GPUS_PER_TASK')


def cpu_opted_in(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user asked to run on the CPU on purpose (``MMDUALTOKEN_CPU=1``)."""
    return environ.get(CPU_OPT_IN, '').strip().lower() in ('1', 'true', 'yes', 'on')


def names_devices(visible: str) -> bool:
    """Whether a ``CUDA_VISIBLE_DEVICES`` value names at least one device.

    CUDA reads the list up to its first invalid entry: an index >= 0 or a ``GPU-``/``MIG-``
    UUID names a device; '', '-1' and Slurm's 'NoDevFiles' hide them all."""
    first = visible.split(',')[0].strip()
    return first.isdigit() or first.upper().startswith(('GPU-', 'MIG-'))


def gpus_expected(environ: Mapping[str, str] = os.environ) -> List[str]:
    """The variables (``NAME=value``) that say this process was meant to run on GPUs:
    ``CUDA_VISIBLE_DEVICES`` naming devices, Slurm's GPU variables, and ``GPUS``, which our
    Slurm scripts (as OpenMMLab's) pass to every task where they ask srun for GPUs."""
    found = []
    visible = environ.get('CUDA_VISIBLE_DEVICES')
    if visible is not None and names_devices(visible):
        found.append(f'CUDA_VISIBLE_DEVICES={visible}')
    for name in SLURM_GPU_LISTS + SLURM_GPU_COUNTS + ('GPUS', ):
        value = environ.get(name, '').strip()
        if name in SLURM_GPU_LISTS:
            given = value.lower() not in ('', 'none', '(null)')
        else:  # a count: '2', 'a100:2', '0' for none
            count = value.rsplit(':', 1)[-1]
            given = count.isdigit() and int(count) > 0
        if given:
            found.append(f'{name}={value}')
    return found


def why_no_cuda() -> str:
    """What torch says when asked to initialise CUDA (the driver's own reason), briefly."""
    if torch.version.cuda is None:
        return f'torch {torch.__version__} is a build without CUDA'
    try:
        torch.cuda.init()
    except Exception as error:  # torch's own message: no driver, driver too old, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return (f'torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no '
                f'usable GPU: {reason}')
    return f'torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no GPU'


def check_gpus_expected(environ: Mapping[str, str] = os.environ) -> None:
    """Stop when GPUs were expected here and torch sees none, unless the CPU is opted in.

    Causes seen on clusters: a driver older than the CUDA of the torch wheel, a job step that
    was not given its GPUs, a launcher that emptied ``CUDA_VISIBLE_DEVICES``. Without this
    check such a job trains on the CPU (torchrun and srun: one CPU process per GPU on gloo).
    """
    if torch.cuda.is_available() or cpu_opted_in(environ):
        return
    expected = gpus_expected(environ)
    if not expected:
        return
    visible = environ.get('CUDA_VISIBLE_DEVICES')
    sees = '' if visible is None else f', CUDA_VISIBLE_DEVICES={visible!r}'
    raise LaunchError(f'GPUs were expected ({", ".join(expected)}) but torch sees none: '
                      f'{why_no_cuda()}{sees}. Check the driver (nvidia-smi) against that '
                      f'CUDA and the job\'s GPU allocation; to run on the CPU on purpose, set '
                      f'{CPU_OPT_IN}=1 (tools/slurm_*.sh: GRES=none)')


def mmcv_cuda_version() -> Optional[str]:
    """The CUDA version mmcv's compiled ops were built with; None where they have no CUDA
    kernels (built without CUDA, e.g. ``FORCE_CUDA=0`` on a GPU-less node) or no ops at all
    (mmcv-lite)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError:
        return None
    version = get_compiling_cuda_version()
    return None if not version or version == 'not available' else version


def check_cuda_ops(cfg) -> None:
    """On CUDA, a detector needs mmcv's ops with CUDA kernels: RetinaNet's
    ``sigmoid_focal_loss``, Mask R-CNN's ``nms`` and ``RoIAlign``. Without them the run fails
    at iteration 1 ("implementation for device cuda:0 not found"); stop before building."""
    if not torch.cuda.is_available() or cfg.get('default_scope') != 'mmdet':
        return
    if mmcv_cuda_version() is not None:
        return
    import mmcv
    raise LaunchError(
        f'mmcv {mmcv.__version__} has no CUDA kernels for its compiled ops (nms, RoIAlign, '
        f'sigmoid_focal_loss), which mmdet\'s detectors need on a GPU: it was built without '
        f'CUDA. Install OpenMMLab\'s prebuilt wheel for your torch and CUDA ({wheel_index()}; '
        f'published for torch <= 2.1), or rebuild it with FORCE_CUDA=1 MMCV_WITH_OPS=1 and an '
        f'nvcc of CUDA {torch.version.cuda} (docs/get_started.md, "GPUs")')


def wheel_index() -> str:
    """The pip command for OpenMMLab's mmcv wheel index of this torch and CUDA."""
    cuda = (torch.version.cuda or '').replace('.', '')
    release = '.'.join(torch.__version__.split('+')[0].split('.')[:2])
    return (f'pip install "mmcv>=2.0.0,<2.2.0" -f '
            f'https://download.openmmlab.com/mmcv/dist/cu{cuda}/torch{release}/index.html')


CUBLAS_WORKSPACE = ':4096:8'  # one of the two values cuBLAS documents for reproducibility


def configure_determinism(cfg, logger: str = 'current') -> bool:
    """``randomness.deterministic=True`` on CUDA: make it run, and say what it does not fix.

    mmengine turns on ``torch.use_deterministic_algorithms(True)``, with which torch raises
    at the first op that has no deterministic CUDA kernel, and at the first cuBLAS call unless
    ``CUBLAS_WORKSPACE_CONFIG`` is set. Here that variable is set (when unset) before any CUDA
    work, and, once the Runner has seeded (:func:`relax_determinism`), ops without a
    deterministic kernel warn instead of raising. The backbone itself needs none of them: its
    token-grid resizes and pooling run as matrix products when deterministic algorithms are on
    (mmdualtoken.models.layers.token_grid.use_matrix_form). Returns True when it applies.
    """
    randomness = cfg.get('randomness') or {}
    if not (randomness.get('deterministic') and torch.cuda.is_available()):
        return False
    from mmengine.logging import print_log
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', CUBLAS_WORKSPACE)
    print_log(
        'randomness.deterministic=True on CUDA: CUBLAS_WORKSPACE_CONFIG='
        f'{os.environ["CUBLAS_WORKSPACE_CONFIG"]}, cuDNN deterministic; ops without a '
        'deterministic CUDA kernel (in the frameworks: bilinear upsampling\'s backward and '
        'the NLL loss in mmseg; mmcv\'s RoIAlign, which torch\'s flag does not reach) warn or '
        'stay nondeterministic, so a GPU run is '
        'not bit-exact; bit-exact repetition is tested on the CPU (docs/training.md)',
        logger=logger,
        level=30)
    return True


def relax_determinism() -> None:
    """After mmengine's ``set_random_seed`` (in the Runner): keep deterministic algorithms on,
    but let ops without a deterministic CUDA kernel warn rather than raise."""
    torch.use_deterministic_algorithms(True, warn_only=True)
