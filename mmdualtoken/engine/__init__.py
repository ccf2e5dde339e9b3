from .cpu_distributed import CPUDistributedDataParallel, prepare_cpu_distributed
from .random_state_hook import RandomStateHook

__all__ = ['CPUDistributedDataParallel', 'RandomStateHook', 'prepare_cpu_distributed']
