"""A hook for the resume tests: end a run cleanly after a given epoch or iteration, as an
interruption right after that checkpoint (and its validation) would, with the config, and so
the schedules, of the uninterrupted run. A shorter max_epochs/max_iters would not do: the
schedulers whose end defaults to it (CosineAnnealingLR in the classification recipe) would
follow another curve."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StopTrainingHook(Hook):
    """Set the train loop's ``stop_training`` after epoch ``epoch`` or iteration
    ``iteration`` (1-based); the loop still validates there if it is due, then ends."""

    def __init__(self, epoch: Optional[int] = None, iteration: Optional[int] = None):
        self.epoch, self.iteration = epoch, iteration

    def after_train_epoch(self, runner) -> None:
        if self.epoch is not None and runner.epoch + 1 == self.epoch:
            runner.train_loop.stop_training = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.iteration is not None and runner.iter + 1 == self.iteration:
            runner.train_loop.stop_training = True
