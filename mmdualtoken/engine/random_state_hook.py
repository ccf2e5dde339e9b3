"""Save and restore the random number generators with each checkpoint.

mmengine restores the model, optimizer, schedulers and counters on ``--resume`` but not the
RNG states, so data augmentation, drop path, Mixup/CutMix draw other numbers after a resume
than an uninterrupted run with the same seed would. This hook stores the Python, numpy and
torch generator states in the checkpoint (types that safe, weights_only loading accepts) and
puts them back before training continues, so a resumed run repeats the uninterrupted one bit
for bit on CPU (with ``randomness=dict(seed=..., deterministic=True)`` and no validation
between the save and the resume point, since validation also draws from the generators).
Epoch-based loops only: an iteration-based loop re-runs the augmentations of the batches it
skips on resume after this hook has run.
"""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

KEY = 'random_states'


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Checkpoint the RNG states; restore them when a run resumes."""
    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        version, key, position, gauss_next = _numpy_state()
        checkpoint[KEY] = dict(
            python=random.getstate(),
            numpy=dict(version=version, key=key, position=position, gauss_next=gauss_next),
            torch=torch.get_rng_state())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # the Runner may re-seed after loading (resume); apply the states in before_train
        self._pending = checkpoint.get(KEY)

    def before_train(self, runner) -> None:
        if not self._pending or not getattr(runner, '_resume', False):
            return
        states, self._pending = self._pending, None
        python = states['python']
        random.setstate((python[0], tuple(python[1]), python[2]))
        n = states['numpy']
        np.random.set_state((n['version'], n['key'], n['position'], 1 if n['gauss_next']
                             is not None else 0, n['gauss_next'] or 0.0))
        torch.set_rng_state(states['torch'])
        runner.logger.info('Restored the Python, numpy and torch random states of the '
                           'checkpoint.')


def _numpy_state():
    version, key, position, has_gauss, gauss = np.random.get_state()
    return version, key, int(position), float(gauss) if has_gauss else None
