"""Distributed training on machines without a GPU, with the documented commands unchanged.

mmengine's launcher path assumes GPUs in two places: ``init_dist`` calls
``torch.cuda.set_device(local_rank)`` before creating the process group (with ``--launcher
pytorch`` as with ``--launcher slurm``), and the Runner wraps the model in DDP with
``device_ids=[local_rank]``, which DDP refuses for a CPU module. When CUDA is unavailable,
:func:`prepare_cpu_distributed` creates the gloo process group itself (the Runner then skips
init_dist) and makes the Runner use :class:`CPUDistributedDataParallel`, which ignores device
ids. ``env_cfg.dist_cfg.timeout`` (seconds) means what it means for mmengine's ``init_dist``:
the process group's timeout.

Under srun (``--launcher slurm``, tools/slurm_train.sh) the ranks are read from Slurm's
variables as mmengine's ``_init_dist_slurm`` reads them (:func:`torch_env_from_slurm`).
"""
import datetime
import os
import subprocess

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from ..errors import BadConfigError, LaunchError


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMDistributedDataParallel for CPU modules: device ids are meaningless there."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def torch_env_from_slurm(port=None) -> None:
    """Set torch's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from srun's
    variables, as mmengine's ``_init_dist_slurm`` does (without its ``torch.cuda``).

    MASTER_ADDR, unless set, is the first host of the job step (``scontrol show hostnames``),
    where rank 0 runs; MASTER_PORT is ``port`` (``env_cfg.dist_cfg.port``), else the
    environment's, else 29500.
    """
    missing = [
        name for name in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST')
        if name not in os.environ
    ]
    if missing:
        raise LaunchError(f'--launcher slurm needs the variables srun sets ({", ".join(missing)} '
                          f'missing): start it through srun (tools/slurm_train.sh, '
                          f'tools/slurm_test.sh)')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_STEP_NODELIST', os.environ['SLURM_NODELIST'])
        try:
            hosts = subprocess.run(['scontrol', 'show', 'hostnames', nodes],
                                   check=True,
                                   capture_output=True,
                                   text=True).stdout.split()
            os.environ['MASTER_ADDR'] = hosts[0]
        except (OSError, subprocess.CalledProcessError, IndexError) as e:
            raise LaunchError(f'--launcher slurm: `scontrol show hostnames {nodes}` gave no '
                              f'host ({type(e).__name__}: {e}); set MASTER_ADDR to the host '
                              f'of rank 0') from e
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ['SLURM_LOCALID']


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Set up a gloo process group and the CPU DDP wrapper when launched without a GPU.

    Returns True when it did (a launcher other than 'none' and no CUDA device).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in ('pytorch', 'slurm'):
        raise BadConfigError(f'On machines without a GPU --launcher pytorch (torchrun, '
                             f'tools/dist_train.sh) and --launcher slurm (srun, '
                             f'tools/slurm_train.sh) are supported, got {launcher!r}')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'  # nccl needs GPUs
    if not dist.is_initialized():
        if launcher == 'slurm':
            torch_env_from_slurm(dist_cfg.get('port'))
        # env_cfg.dist_cfg.timeout (seconds, tools' --dist-timeout) as mmengine's init_dist
        # reads it on GPUs: how long a collective waits for the other ranks
        timeout = dist_cfg.get('timeout')
        kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
        dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(wrapper, type='CPUDistributedDataParallel')
        cfg.model_wrapper_cfg.setdefault('broadcast_buffers', False)
        cfg.model_wrapper_cfg.setdefault('find_unused_parameters',
                                         cfg.get('find_unused_parameters', False))
    return True
