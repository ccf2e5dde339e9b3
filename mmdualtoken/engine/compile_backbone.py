"""torch.compile the model's backbone when training starts (``tools/train.py --compile``).

mmengine's Runner, given ``compile`` in the config, compiles the model's whole ``train_step``:
data preprocessing, batch augmentation, the loss, the backward and the optimizer step. With
our configs that fails in torch 2.14.1: dynamo cannot trace the optimizer's step over the
param groups mmengine's optimizer constructor builds from a ``paramwise_cfg`` (ConfigDict
objects: "'UserDefinedDictVariable' object has no attribute 'items'"), after minutes spent
on the graphs before it. tools/train.py therefore takes the ``compile`` setting out of
mmengine's hands and gives it to this hook, which compiles the backbone alone: its forward
and, through AOTAutograd, its backward. The data preprocessor, neck, head and optimizer run
eagerly.

The backbone is compiled in place (``nn.Module.compile``, in torch since 2.1): parameters,
buffers and state-dict keys are unchanged, so checkpoints, ``--resume`` and ``load_from``
work as without it. That happens in ``before_train``, after the Runner has wrapped the model
(DDP), loaded or resumed its weights and called every hook's ``before_run``: a deep copy of
a compiled module (EMAHook copies the model in before_run) would still run the original
module's weights.

With ``dynamic=False`` (what ``--compile`` sets) each new input size, and evaluation mode,
compiles another graph; ``after_train`` logs how many were compiled.
"""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


def compiled_graph_count():
    """Graphs dynamo has compiled in this process, or None where torch does not count them
    (``torch._dynamo.utils.counters``: internal, present from torch 2.1 to 2.14)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return counters['stats']['unique_graphs']


@HOOKS.register_module()
class CompileBackboneHook(Hook):
    """Compile ``model.backbone`` with torch.compile when training starts.

    Args:
        **compile_kwargs: :func:`torch.compile`'s arguments (``backend``, ``mode``,
            ``dynamic``, ``options``, ...). None given: torch's defaults.

    Example:
        >>> custom_hooks = [dict(type='CompileBackboneHook', dynamic=False)]
    """
    priority = 'VERY_LOW'

    def __init__(self, **compile_kwargs):
        self.compile_kwargs = compile_kwargs
        self._graphs_before = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, 'backbone', None)
        if not isinstance(backbone, torch.nn.Module):
            raise TypeError(f'CompileBackboneHook: {type(model).__name__} has no backbone '
                            'module to compile')
        backbone.compile(**self.compile_kwargs)
        self._graphs_before = compiled_graph_count()
        arguments = ', '.join(f'{k}={v!r}' for k, v in self.compile_kwargs.items())
        runner.logger.info(
            f'torch.compile({type(backbone).__name__}{", " if arguments else ""}{arguments}): '
            'the backbone compiles at the first iteration (and at each new input size or '
            'mode); the first iterations are slow')

    def after_train(self, runner) -> None:
        count = compiled_graph_count()
        if count is not None and self._graphs_before is not None:
            runner.logger.info(f'torch.compile: {count - self._graphs_before} graph(s) of the '
                               'backbone compiled during training')
