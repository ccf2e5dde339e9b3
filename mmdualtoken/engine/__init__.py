from .atomic_checkpoint import AtomicCheckpointHook, AtomicLocalBackend, atomic_write
from .compile_backbone import CompileBackboneHook
from .cpu_amp import CPUAmpOptimWrapper
from .cpu_distributed import CPUDistributedDataParallel, prepare_cpu_distributed
from .cpu_fusion_hook import FuseForCPUHook
from .cpu_heap import keep_freed_cpu_memory
from .finite_loss_hook import FiniteLossHook
from .random_state_hook import RandomStateHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CompileBackboneHook', 'CPUAmpOptimWrapper',
    'CPUDistributedDataParallel', 'FiniteLossHook', 'FuseForCPUHook', 'RandomStateHook',
    'atomic_write', 'keep_freed_cpu_memory', 'prepare_cpu_distributed'
]
