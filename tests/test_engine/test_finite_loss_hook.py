"""FiniteLossHook's skip mode decides on all gradients in one fused check."""
import pytest
import torch
from helpers import OpRecorder

from mmdualtoken.engine.finite_loss_hook import all_finite

NAN, INF = float('nan'), float('inf')


@pytest.mark.parametrize('bad, finite', [(None, True), (NAN, False), (INF, False), (-INF, False),
                                         (3e38, True)])  # a large finite value stays finite
def test_all_finite_finds_any_nan_or_inf(bad, finite):
    grads = [torch.ones(5, 3), torch.zeros(4, dtype=torch.float64), torch.ones(2)]
    if bad is not None:
        grads[2][1] = bad
    assert all_finite(grads) is finite


def test_one_fused_check_per_dtype_not_one_per_tensor():
    grads = [torch.ones(8, 8) for _ in range(50)] + [torch.ones(3, dtype=torch.bfloat16)] * 2
    with OpRecorder() as rec:
        assert all_finite(grads)
    assert rec.count('_foreach_norm') == 2  # float32 and bfloat16
    assert len(rec.ops) < 15, rec.ops  # then a handful of ops on the 2 maxima
