from .cpu_distributed import CPUDistributedDataParallel, prepare_cpu_distributed

__all__ = ['CPUDistributedDataParallel', 'prepare_cpu_distributed']
