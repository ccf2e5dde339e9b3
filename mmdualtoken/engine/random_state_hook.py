"""Save and restore every rank's random number generators with each checkpoint.

mmengine restores the model, optimizer, schedulers and counters on ``--resume`` but not the
RNG states, so data augmentation, drop path, Mixup/CutMix draw other numbers after a resume
than an uninterrupted run with the same seed would. This hook stores, for every rank, the
Python, numpy and torch CPU generator states and, where CUDA is in use, the rank's CUDA
generator state (mmcv's DropPath and random erasing on GPU tensors draw from it). Only rank 0
writes the checkpoint (mmengine's ``Runner.save_checkpoint`` runs on the master alone), so in
a distributed run every rank sends its states to all (one all_gather) just before the
CheckpointHook saves: this hook runs before it (priority LOW) and asks it whether it will
save at this iteration or epoch, with the CheckpointHook's own rule (and after every
validation, where a best checkpoint may be saved). On resume each rank puts
back its own. The states are plain tensors, ints and lists: safe, weights_only loading
accepts them.

A resumed run then repeats the uninterrupted one bit for bit on CPU (with
``randomness=dict(seed=..., deterministic=True)`` and no validation between the save and the
resume point, since validation also draws from the generators). Epoch-based loops only: an
iteration-based loop re-runs the augmentations of the batches it skips on resume after this
hook has run. Resuming with another number of processes restores rank r from saved rank
r mod (saved ranks) and says so: the run continues correctly but not bit for bit.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

KEY = 'random_states'


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_random_states() -> dict:
    """This process's generator states, in types weights-only loading accepts."""
    version, key, position, has_gauss, gauss = np.random.get_state()
    python = random.getstate()
    return dict(
        python=[python[0], list(python[1]), python[2]],
        numpy=dict(version=version, key=torch.from_numpy(key.astype(np.int64)),
                   position=int(position), gauss_next=float(gauss) if has_gauss else None),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if _cuda_in_use() else None)


def restore_random_states(states: dict) -> None:
    """Put back what :func:`capture_random_states` returned (this process's generators)."""
    python = states['python']
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = states['numpy']
    key = n['key'].numpy().astype(np.uint32) if isinstance(n['key'], torch.Tensor) else n['key']
    np.random.set_state((n['version'], key, n['position'], 1 if n['gauss_next'] is not None
                         else 0, n['gauss_next'] or 0.0))
    torch.set_rng_state(states['torch'])
    if states.get('cuda') is not None and _cuda_in_use():
        torch.cuda.set_rng_state(states['cuda'])


def checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether the runner's CheckpointHook saves after this epoch (or iteration): its rule."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch:
            if by_epoch:
                return bool(hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner)))
            return bool(hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner)))
    return False


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Checkpoint the RNG states of every rank; restore each rank's own on resume."""
    priority = 'LOW'  # before the CheckpointHook (VERY_LOW) in after_train_iter/epoch

    def __init__(self):
        self._pending: Optional[list] = None
        self._gathered: Optional[list] = None

    def _gather(self) -> None:
        # every rank takes part (the decision is the same on all ranks); rank 0 keeps them
        self._gathered = all_gather_object(capture_random_states())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=False):
            self._gather()

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=True):
            self._gather()

    def after_val_epoch(self, runner, metrics=None) -> None:
        # the CheckpointHook may save a best checkpoint here (its own metric rule)
        if get_world_size() > 1:
            self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # rank 0 only (mmengine saves on the master); one process: its states now
        if get_world_size() == 1:
            ranks = [capture_random_states()]
        elif self._gathered is not None:
            ranks, self._gathered = self._gathered, None
        else:  # a save outside the CheckpointHook's moments: the other ranks are not here
            ranks = [capture_random_states()]
            runner.logger.warning('RandomStateHook: this checkpoint holds the random states '
                                  'of rank 0 only (saved outside the CheckpointHook).')
        checkpoint[KEY] = dict(ranks=ranks)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # the Runner may re-seed after loading (resume); apply the states in before_train
        saved = checkpoint.get(KEY)
        if saved is None:
            self._pending = None
        elif 'ranks' in saved:
            self._pending = saved['ranks']
        else:  # checkpoints of mmdualtoken 0.x: rank 0's CPU states only
            self._pending = [dict(saved, cuda=None)]

    def before_train(self, runner) -> None:
        if not self._pending or not getattr(runner, '_resume', False):
            return
        ranks, self._pending = self._pending, None
        rank, world_size = get_rank(), get_world_size()
        restore_random_states(ranks[rank % len(ranks)])
        message = (f'Restored the random states of rank {rank % len(ranks)} of the checkpoint '
                   f'(Python, numpy, torch CPU'
                   f'{", CUDA" if ranks[rank % len(ranks)].get("cuda") is not None else ""}).')
        if len(ranks) != world_size:
            message += (f' The checkpoint was written by {len(ranks)} processes, this run has '
                        f'{world_size}: it continues correctly but does not repeat the '
                        'uninterrupted run bit for bit.')
        runner.logger.info(message)
