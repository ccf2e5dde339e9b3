from .cpu_amp import CPUAmpOptimWrapper
from .cpu_distributed import CPUDistributedDataParallel, prepare_cpu_distributed
from .random_state_hook import RandomStateHook

__all__ = [
    'CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'RandomStateHook',
    'prepare_cpu_distributed'
]
