"""Distributed training on machines without a GPU, with the documented commands unchanged.

mmengine's launcher path assumes GPUs in two places: ``init_dist`` calls
``torch.cuda.set_device(local_rank)`` before creating the process group, and the Runner wraps
the model in DDP with ``device_ids=[local_rank]``, which DDP refuses for a CPU module. When
CUDA is unavailable, :func:`prepare_cpu_distributed` creates the gloo process group itself
(the Runner then skips init_dist) and makes the Runner use
:class:`CPUDistributedDataParallel`, which ignores device ids. ``env_cfg.dist_cfg.timeout``
(seconds) means what it means for mmengine's ``init_dist``: the process group's timeout.
"""
import datetime
import os

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMDistributedDataParallel for CPU modules: device ids are meaningless there."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Set up a gloo process group and the CPU DDP wrapper when launched without a GPU.

    Returns True when it did (a launcher other than 'none' and no CUDA device).
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return False
    if cfg.launcher != 'pytorch':
        raise ValueError(f'On machines without a GPU only --launcher pytorch (torchrun, '
                         f'tools/dist_train.sh) is supported, got {cfg.launcher!r}')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'  # nccl needs GPUs
    if not dist.is_initialized():
        # env_cfg.dist_cfg.timeout (seconds, tools' --dist-timeout) as mmengine's init_dist
        # reads it on GPUs: how long a collective waits for the other ranks
        timeout = dist_cfg.get('timeout')
        kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        cfg.model_wrapper_cfg = dict(wrapper, type='CPUDistributedDataParallel')
        cfg.model_wrapper_cfg.setdefault('broadcast_buffers', False)
        cfg.model_wrapper_cfg.setdefault(
            'find_unused_parameters', cfg.get('find_unused_parameters', False))
    return True
