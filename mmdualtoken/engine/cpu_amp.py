"""Mixed precision on CPU: bf16 autocast inside mmengine's optim-wrapper protocol.

mmengine's AmpOptimWrapper is for GPUs (it asserts CUDA, NPU, MLU or MUSA): fp16 with loss
scaling. On a CPU, autocast runs in bfloat16, which has fp32's exponent range and needs no
loss scaling, so this wrapper is mmengine's plain OptimWrapper with ``optim_context`` entering
``torch.autocast('cpu', dtype=torch.bfloat16)``. ``tools/train.py --amp`` picks it when no GPU
is present and AmpOptimWrapper otherwise.
"""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward passes run under CPU autocast (bfloat16 by default).

    Args:
        dtype (str | torch.dtype): Autocast dtype: 'bfloat16' (default) or 'float16'.
        **kwargs: OptimWrapper's arguments (optimizer, accumulative_counts, clip_grad).
    """

    def __init__(self, dtype='bfloat16', **kwargs):
        super().__init__(**kwargs)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f'CPUAmpOptimWrapper dtype must be bfloat16 or float16, got {dtype}')
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
