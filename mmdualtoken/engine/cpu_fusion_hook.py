"""Convert the backbone for CPU inference when testing starts (``tools/test.py --fuse-for-cpu``).

:func:`mmdualtoken.deploy.fuse_for_cpu` replaces modules (BatchNorm folded into its conv,
activations fused into the kernels before them), so the state-dict keys of a converted model
differ from a trained one's: it must run after the checkpoint is loaded. mmengine's
``Runner.test()`` loads it in ``load_or_resume()`` and then runs the test loop, whose first
call is ``before_test``: this hook converts the backbone there. The neck and heads stay as
they are.

The conversion is for fp32 CPU inference. On a GPU the converted modules compute the plain
maths and gain nothing, so a model on another device than the CPU is refused with one line.
"""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..deploy import fuse_for_cpu
from ..errors import BadConfigError


@HOOKS.register_module()
class FuseForCPUHook(Hook):
    """Apply :func:`~mmdualtoken.deploy.fuse_for_cpu` to ``model.backbone`` before testing.

    Example:
        >>> custom_hooks = [dict(type='FuseForCPUHook')]
    """
    priority = 'VERY_LOW'

    def before_test(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, 'backbone', None)
        if not isinstance(backbone, torch.nn.Module):
            raise TypeError(f'FuseForCPUHook: {type(model).__name__} has no backbone module '
                            'to convert')
        devices = sorted({p.device.type for p in backbone.parameters()})
        if devices != ['cpu']:
            raise BadConfigError(
                f'--fuse-for-cpu (FuseForCPUHook) converts the backbone for CPU inference, but '
                f'the model is on {", ".join(devices)}: test without the flag, or on the CPU '
                '(CUDA_VISIBLE_DEVICES= python tools/test.py ...)')
        model.eval()  # the test loop would set it next; fuse_for_cpu needs it now
        fuse_for_cpu(backbone)
        converted = sum(
            type(m).__module__.startswith('mmdualtoken.deploy') for m in backbone.modules())
        runner.logger.info(f'fuse_for_cpu: {converted} modules of the backbone converted for '
                           'CPU inference')
