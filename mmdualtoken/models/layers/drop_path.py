"""A residual connection with stochastic depth (drop path) on its branch."""
import torch
import torch.nn as nn


class ResidualDropPath(nn.Module):
    """``x + DropPath(branch)``: the residual branch of each sample is dropped with
    probability ``drop_prob`` in training, and the kept ones are scaled by 1 / (1 - p).

    What mmcv's ``DropPath`` followed by the residual addition computes, in 3 ops (a Bernoulli
    mask per sample, then one ``addcmul``) instead of 6 (mmcv draws uniform numbers, adds,
    floors, divides, multiplies, then the caller adds); one ``add`` in evaluation or at
    ``drop_prob=0``. The masks have mmcv's distribution and come from torch's generator of
    the branch's device, but are drawn differently: a seed gives other masks than mmcv's.

    Args:
        drop_prob (float): Probability of dropping a sample's branch. Defaults to 0.
    """

    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        if not 0 <= drop_prob < 1:
            raise ValueError(f'drop_prob must be in [0, 1), got {drop_prob}')
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0:
            return x + branch
        keep = 1 - self.drop_prob
        mask = branch.new_empty((branch.shape[0], ) + (1, ) * (branch.dim() - 1)).bernoulli_(keep)
        return torch.addcmul(x, branch, mask, value=1 / keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'
