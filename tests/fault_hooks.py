"""Hooks that cause faults inside a real tools/train.py run (tests/test_reliability/).

Loaded through a test config's ``custom_imports`` (``PYTHONPATH`` holds tests/). Each one
causes its fault at a chosen moment, from inside the process, so the moment is exact.
"""
import json
import os
import os.path as osp
import signal
import sys

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmdualtoken.engine.atomic_checkpoint import TMP_MARK


@HOOKS.register_module()
class KillDuringSaveHook(Hook):
    """SIGKILL this process in the middle of saving ``target`` (e.g. 'epoch_2.pth' or
    'last_checkpoint') at epoch ``epoch``.

    The kill comes at the last moment before the temporary file would be renamed over
    ``target`` (a Python audit hook on ``os.rename``, the event ``os.replace`` raises); the
    temporary file is first cut to half its length, so the folder is left as a kill while
    the bytes were being written leaves it. Nothing of the saving code is replaced.
    """
    priority = 'VERY_LOW'

    def __init__(self, epoch: int, target: str):
        self.epoch = epoch
        self.target = target
        self._armed = False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._armed or checkpoint.get('meta', {}).get('epoch') != self.epoch:
            return
        self._armed = True
        target = self.target

        def kill_before_rename(event, args):
            if event != 'os.rename':
                return
            src, dst = str(args[0]), str(args[1])
            if osp.basename(dst) == target and TMP_MARK in osp.basename(src):
                os.truncate(src, os.path.getsize(src) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(kill_before_rename)  # stays for the life of the process


def _loss_model(runner):
    model = runner.model
    return model.module if hasattr(model, 'module') else model


@HOOKS.register_module()
class PoisonLossHook(Hook):
    """Make loss term ``term`` NaN (or ``value``) at iteration ``iteration`` (1-based), in
    the model's own loss output, before the backward pass and the optimizer step; with
    ``rank``, on that distributed rank only.

    It also records whether the iteration changed the weights or the optimizer state
    (``nonfinite_iteration.json`` in the work dir, written by the poisoned rank), to check a
    skipped step.
    """
    priority = 'VERY_HIGH'

    def __init__(self, iteration: int, term: str, value: float = float('nan'), rank: int = None):
        self.iteration = iteration
        self.term = term
        self.value = value
        self.rank = rank
        self._active = False
        self._before = None

    def before_train(self, runner) -> None:

        def poison(module, args, kwargs, output):
            if not self._active or kwargs.get('mode') != 'loss':
                return output
            if self.term not in output:
                raise KeyError(f'PoisonLossHook: no loss term {self.term!r} in '
                               f'{sorted(output)}')
            value = output[self.term]
            bad = [v * self.value for v in value] if isinstance(value, list) else \
                value * self.value
            return dict(output, **{self.term: bad})

        _loss_model(runner).register_forward_hook(poison, with_kwargs=True)

    def _state(self, runner):
        params = {k: v.detach().clone() for k, v in _loss_model(runner).named_parameters()}
        optim = [
            v.clone() for state in runner.optim_wrapper.optimizer.state.values()
            for v in state.values() if isinstance(v, torch.Tensor)
        ]
        return params, optim

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        from mmengine.dist import get_rank
        self._active = runner.iter + 1 == self.iteration and self.rank in (None, get_rank())
        if self._active:
            self._before = self._state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self._active:
            return
        self._active = False
        params, optim = self._state(runner)
        before_params, before_optim = self._before
        record = dict(
            iteration=self.iteration,
            params_unchanged=all(torch.equal(params[k], before_params[k]) for k in params),
            optimizer_state_unchanged=len(optim) == len(before_optim)
            and all(torch.equal(a, b) for a, b in zip(optim, before_optim)),
            params_finite=all(bool(torch.isfinite(p).all()) for p in params.values()))
        with open(osp.join(runner.work_dir, 'nonfinite_iteration.json'), 'w') as f:
            json.dump(record, f)


@HOOKS.register_module()
class CorruptWeightHook(Hook):
    """After iteration ``iteration`` (1-based) write NaN into parameter ``name``: the loss of
    that iteration was finite, the weights are not."""
    priority = 'VERY_HIGH'

    def __init__(self, iteration: int, name: str):
        self.iteration = iteration
        self.name = name

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            with torch.no_grad():
                dict(_loss_model(runner).named_parameters())[self.name].view(-1)[0] = \
                    float('nan')
