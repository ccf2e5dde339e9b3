"""Save and restore every rank's random number generators with each checkpoint.

mmengine restores the model, optimizer, schedulers and counters on ``--resume`` but not the
RNG states, so data augmentation, drop path, Mixup/CutMix draw other numbers after a resume
than an uninterrupted run with the same seed would. This hook stores, for every rank, the
Python, numpy and torch CPU generator states and, where CUDA is in use, the rank's CUDA
generator state (drop path and random erasing on GPU tensors draw from it), and puts
each rank's own back on resume. The states are plain tensors, ints and lists: safe,
weights_only loading accepts them.

What is saved is the state the next training iteration starts from:

* Validation does not touch the training stream: ``before_val`` takes the states and
  ``after_val`` puts them back (a val dataloader iterator alone draws its base seed from
  torch's generator). A run that validates between a save and the next epoch therefore
  trains on exactly as if it had not validated, as the resumed run, which starts after that
  validation, does. Checkpoints saved during validation (``save_best``, after_val_epoch)
  hold the states taken in ``before_val``.
* Epoch-based loops: the states go back in ``before_train``; nothing between that and the
  first batch draws differently than after the save in the uninterrupted run.
* mmengine's ``IterBasedTrainLoop.run`` calls before_train and before_train_epoch, then
  fetches and discards the ``iter`` batches already trained (with worker processes that
  skip is what advances the workers' generators again, so it must stay), and only then
  trains. No hook runs between the skip and the first batch, so this hook wraps the loop's
  ``dataloader_iterator`` in before_train: the wrapper puts the states back right after the
  last skipped fetch and puts the original iterator back in place. A registered loop would
  do the same but every config (and every user config) would have to name it; the wrapper
  keeps the hook the only thing a config adds.

Only rank 0 writes the checkpoint (mmengine's ``Runner.save_checkpoint`` runs on the master
alone), so in a distributed run every rank sends its states to all (one all_gather) just
before the CheckpointHook saves: this hook runs before it (priority LOW) and asks it whether
it will save at this iteration or epoch, with the CheckpointHook's own rule (and after every
validation, where a best checkpoint may be saved, and the last checkpoint saved again to
record it: both get the states gathered then, which stay until the next training iteration).

With ``randomness=dict(seed=..., deterministic=True)`` a resumed run then repeats the
uninterrupted one bit for bit on CPU, losses and weights, in epoch- and iteration-based
loops, with or without validation in between (tests/test_reliability/test_resume.py: the
tiny classification, detection and segmentation configs). Resuming with another number of
processes restores rank r from saved rank r mod (saved ranks) and says so: the run continues
correctly but not bit for bit.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop
from mmengine.utils import apply_to

KEY = 'random_states'


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def capture_random_states() -> dict:
    """This process's generator states, in types weights-only loading accepts."""
    version, key, position, has_gauss, gauss = np.random.get_state()
    python = random.getstate()
    return dict(
        python=[python[0], list(python[1]), python[2]],
        numpy=dict(
            version=version,
            key=torch.from_numpy(key.astype(np.int64)),
            position=int(position),
            gauss_next=float(gauss) if has_gauss else None),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if _cuda_in_use() else None)


def restore_random_states(states: dict) -> None:
    """Put back what :func:`capture_random_states` returned (this process's generators).

    The states may arrive on any device: on a GPU, mmengine's ``Runner.resume`` maps the
    whole checkpoint onto it, and torch's generators take CPU byte tensors only (numpy
    takes host memory only), so every tensor is brought to the CPU first.
    """
    states = apply_to(states, lambda v: isinstance(v, torch.Tensor), lambda t: t.cpu())
    python = states['python']
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = states['numpy']
    key = n['key'].numpy().astype(np.uint32) if isinstance(n['key'], torch.Tensor) else n['key']
    np.random.set_state(
        (n['version'], key, n['position'], 1 if n['gauss_next'] is not None else 0, n['gauss_next']
         or 0.0))
    torch.set_rng_state(states['torch'])
    if states.get('cuda') is not None and _cuda_in_use():
        torch.cuda.set_rng_state(states['cuda'])


def checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether the runner's CheckpointHook saves after this epoch (or iteration): its rule."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch:
            if by_epoch:
                return bool(
                    hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                    or (hook.save_last and hook.is_last_train_epoch(runner)))
            return bool(
                hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_iter(runner)))
    return False


class RestoreAfterSkip:
    """Wraps an IterBasedTrainLoop's dataloader iterator for its resume skip: after the
    ``skip``-th fetch it calls ``restore`` and puts the wrapped iterator back on the loop."""

    def __init__(self, loop, skip: int, restore):
        self.loop, self.iterator = loop, loop.dataloader_iterator
        self.skip, self.restore, self.fetched = skip, restore, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        self.fetched += 1
        if self.fetched == self.skip:
            self.loop.dataloader_iterator = self.iterator
            self.restore()
        return batch


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Checkpoint the RNG states of every rank; restore each rank's own on resume."""
    priority = 'LOW'  # before the CheckpointHook (VERY_LOW) in after_train_iter/epoch

    def __init__(self):
        self._pending: Optional[list] = None
        self._gathered: Optional[list] = None
        self._before_val: Optional[dict] = None  # the training stream, during validation

    def _gather(self, states: Optional[dict] = None) -> None:
        # every rank takes part (the decision is the same on all ranks); rank 0 keeps them
        self._gathered = all_gather_object(states or capture_random_states())

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._gathered = None  # the states gathered for the last saves are out of date now

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=False):
            self._gather()

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=True):
            self._gather()

    def before_val(self, runner) -> None:
        self._before_val = capture_random_states()

    def after_val_epoch(self, runner, metrics=None) -> None:
        # the CheckpointHook may save a best checkpoint here (its own metric rule)
        if get_world_size() > 1:
            self._gather(self._before_val)

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore_random_states(self._before_val)
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # rank 0 only (mmengine saves on the master); one process: its training states
        if get_world_size() == 1:
            ranks = [self._before_val or capture_random_states()]
        elif self._gathered is not None:  # kept: a best save is followed by a re-save
            ranks = self._gathered
        else:  # a save outside the CheckpointHook's moments: the other ranks are not here
            ranks = [self._before_val or capture_random_states()]
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
        states = ranks[rank % len(ranks)]
        cuda = ', CUDA' if states.get('cuda') is not None else ''
        message = (f'Restored the random states of rank {rank % len(ranks)} of the checkpoint '
                   f'(Python, numpy, torch CPU{cuda})')
        if len(ranks) != world_size:
            message += (f'. The checkpoint was written by {len(ranks)} processes, this run has '
                        f'{world_size}: it continues correctly but does not repeat the '
                        'uninterrupted run bit for bit')

        def restore(skipped: int = 0) -> None:
            restore_random_states(states)
            runner.logger.info(
                message + (f', after the {skipped} batches the loop skips.' if skipped else '.'))

        loop = getattr(runner, 'train_loop', None)
        if (isinstance(loop, IterBasedTrainLoop) and type(loop).run is IterBasedTrainLoop.run
                and loop.iter > 0):
            # mmengine's run() fetches and discards `iter` batches after this hook: restore
            # after them (a loop with its own run() gets them now, as epoch-based loops)
            loop.dataloader_iterator = RestoreAfterSkip(loop, loop.iter, lambda: restore(loop.iter))
        else:
            restore()
