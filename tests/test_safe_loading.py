"""Safe (weights_only) loading of mmengine checkpoints, and refusal of anything else."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmdualtoken  # noqa: F401  (allow-lists mmengine's checkpoint types)


class NotAllowListed:
    """A class no checkpoint should be able to instantiate."""

    def __reduce__(self):
        return (NotAllowListed, ())


def test_torch_default_is_weights_only():
    import inspect
    assert torch.__version__ >= '2.6'
    # our code never turns it off: torch.load's default stays weights_only
    assert inspect.signature(torch.load).parameters['weights_only'].default is None


def test_mmengine_message_hub_checkpoint_loads(tmp_path):
    hub = MessageHub.get_instance('safe_loading_test')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('best_score', np.float64(0.5))
    ckpt = dict(meta=dict(epoch=1, iter=3, seed=np.int64(0)),
                state_dict=dict(w=torch.ones(2)),
                message_hub=hub.state_dict())
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, map_location='cpu', weights_only=True)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.current() == pytest.approx(1 / 3)
    assert loaded['message_hub']['runtime_info']['best_score'] == 0.5


def test_foreign_class_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1)), payload=NotAllowListed()), path)
    with pytest.raises(pickle.UnpicklingError, match='NotAllowListed'):
        torch.load(path, map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)


def test_arbitrary_callable_is_refused(tmp_path):
    class RunsCode:
        def __reduce__(self):
            import os
            return (os.system, ('echo should-not-run',))

    path = tmp_path / 'code.pth'
    torch.save(dict(x=RunsCode()), path)
    with pytest.raises(pickle.UnpicklingError, match='os.system|posix.system'):
        torch.load(path, map_location='cpu')


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    """The name 'getattr' in a checkpoint cannot reach anything but HistoryBuffer.mean & co."""
    class ReachesModuleGlobals:
        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'getattr.pth'
    torch.save(dict(x=ReachesModuleGlobals()), path)
    with pytest.raises(pickle.UnpicklingError, match="Refusing getattr"):
        torch.load(path, map_location='cpu')
