"""Stop (or skip the step) when the loss becomes NaN or Inf; never save non-finite weights.

mmdet's CheckInvalidLossHook asserts at an interval (every 50 iterations by default), after
the optimizer step has already written NaN into the weights, and a CheckpointHook running
in between may save them. :class:`FiniteLossHook` checks every iteration and works with the
models of the three frameworks (their ``train_step`` returns mmengine's ``log_vars``):

* after each iteration, before the hooks that save, average or log it (priority
  ABOVE_NORMAL; the CheckpointHook is VERY_LOW), it checks the loss terms (the ``log_vars``
  whose name contains ``loss``, as mmengine's ``parse_losses`` sums them): a handful of
  scalars, which the logger reads anyway;
* ``on_nonfinite='stop'`` (the default) raises :class:`TrainingDivergedError` naming the
  iteration and every loss term; the last checkpoint saved stays the last good one;
* ``on_nonfinite='skip'`` leaves the weights and the optimizer state as they were: an
  optimizer step pre-hook drops the gradients (``grad = None``, which torch's optimizers
  skip) when any of them is NaN or Inf. The gradients are the same on every rank after
  DDP's all-reduce, so all ranks skip together. The check is one ``_foreach_norm`` per
  device and dtype and one synchronisation (:func:`all_finite`). ``max_consecutive_skips``
  skipped steps in a row stop the run as ``'stop'`` would. (mmengine's AmpOptimWrapper on
  GPUs already skips steps with non-finite gradients through its loss scaler.)
* whatever the mode, :meth:`before_save_checkpoint` refuses (raises) to save a checkpoint
  whose weights hold NaN or Inf.
"""
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from ..errors import TrainingDivergedError

MODES = ('stop', 'skip')


def _value(v) -> float:
    return float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)


def nonfinite_tensors(state_dict: dict) -> list:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or Inf."""
    return [
        name for name, t in state_dict.items() if isinstance(t, torch.Tensor)
        and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def all_finite(tensors: list) -> bool:
    """Whether every element of ``tensors`` is finite, in one synchronisation: the largest
    absolute value of each tensor (``torch._foreach_norm`` with ord=inf per device and dtype,
    as ``clip_grad_norm_`` computes norms: torch's multi-tensor kernel on GPUs where it has
    one for that order, else one norm per tensor) is NaN or Inf exactly when the tensor holds
    a NaN or an Inf, and a finite maximum cannot overflow."""
    groups = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    maxima = [torch.stack(torch._foreach_norm(g, float('inf'))).max() for g in groups.values()]
    device = maxima[0].device
    return bool(torch.isfinite(torch.stack([m.to(device) for m in maxima])).all())


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Check the loss for NaN and Inf every iteration.

    Args:
        on_nonfinite (str): ``'stop'`` raises :class:`TrainingDivergedError`; ``'skip'``
            skips the optimizer step (weights and optimizer state unchanged) and goes on.
            Defaults to 'stop'.
        max_consecutive_skips (int): In ``'skip'`` mode, stop after this many skipped steps
            in a row. Defaults to 10.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, on_nonfinite: str = 'stop', max_consecutive_skips: int = 10):
        if on_nonfinite not in MODES:
            raise ValueError(f'FiniteLossHook: on_nonfinite must be one of {MODES}, '
                             f'got {on_nonfinite!r}')
        if max_consecutive_skips < 1:
            raise ValueError(f'FiniteLossHook: max_consecutive_skips must be >= 1, got '
                             f'{max_consecutive_skips}')
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self._step_skipped = False
        self._handles = []

    # skip mode: drop non-finite gradients before the optimizer uses them
    def before_train(self, runner) -> None:
        if self.on_nonfinite != 'skip':
            return
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        for w in wrappers:
            self._handles.append(w.optimizer.register_step_pre_hook(self._skip_nonfinite))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _skip_nonfinite(self, optimizer, args, kwargs) -> None:
        grads = [
            p.grad for group in optimizer.param_groups for p in group['params']
            if p.grad is not None
        ]
        if grads and not all_finite(grads):
            for group in optimizer.param_groups:
                for p in group['params']:
                    p.grad = None  # torch's optimizers leave parameters without grad as is
            self._step_skipped = True
        return None

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        step_skipped, self._step_skipped = self._step_skipped, False
        # a handful of scalars (mmengine's logger reads each of them with .item() as well)
        terms = {k: _value(v) for k, v in (outputs or {}).items() if 'loss' in k}
        finite = all(math.isfinite(v) for v in terms.values())
        if finite and not step_skipped:
            self.consecutive_skips = 0
            return
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        described = ', '.join(f'{k}={v:.4g}' for k, v in terms.items())
        what = (f'non-finite loss ({described})'
                if not finite else f'non-finite gradients with a finite loss ({described})')
        if self.on_nonfinite == 'stop':
            raise TrainingDivergedError(
                f'Training diverged at {where}: {what}. Stopped before any checkpoint held '
                'these weights: the last checkpoint saved is the last good one. Lower the '
                'learning rate, clip gradients (optim_wrapper.clip_grad) or skip such steps '
                "(FiniteLossHook on_nonfinite='skip').")
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if not step_skipped:  # e.g. a loss scaler skipped it, or a term without gradient
            runner.logger.warning(f'FiniteLossHook: {what} at {where}; the optimizer '
                                  'step did not see non-finite gradients.')
        else:
            runner.logger.warning(f'FiniteLossHook: {what} at {where}; optimizer step '
                                  f'skipped, weights unchanged ({self.skipped_steps} skipped '
                                  'so far).')
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise TrainingDivergedError(
                f'Training diverged: {self.consecutive_skips} consecutive optimizer steps '
                f'skipped for non-finite values, the last at {where}: {what}. Lower the '
                'learning rate or clip gradients (optim_wrapper.clip_grad).')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint.get('state_dict', {}))
        if bad:
            meta = checkpoint.get('meta', {})
            raise TrainingDivergedError(
                f'Refusing to save the checkpoint of epoch {meta.get("epoch")}, iteration '
                f'{meta.get("iter")}: {len(bad)} weight tensor(s) hold NaN or Inf (first: '
                f'{bad[0]}); the last checkpoint saved is the last good one.')
