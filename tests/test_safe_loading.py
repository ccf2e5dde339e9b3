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


class CreatesMarker:
    """Unpickling it would run code: its reconstruction writes a marker file."""

    def __init__(self, path, unpickled=False):
        self.path = path
        if unpickled:
            open(path, 'w').close()

    def __reduce__(self):
        return (CreatesMarker, (self.path, True))


def mmengine_checkpoint(weights: dict, prefix: str = 'backbone.') -> dict:
    """A checkpoint as mmengine's Runner writes it: meta, state_dict, message hub."""
    hub = MessageHub.get_instance('safe_loading_checkpoint')
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('best_score', np.float64(0.5))
    return dict(
        meta=dict(epoch=1, iter=3, seed=np.int64(0)),
        state_dict={
            prefix + k: v
            for k, v in weights.items()
        },
        message_hub=hub.state_dict())


@pytest.fixture(scope='module')
def tiny_backbone_state():
    from mmdualtoken.models import DualTokenViT
    torch.manual_seed(3)
    return DualTokenViT(arch='tiny').state_dict()


def test_load_pretrained_refuses_a_foreign_class(tmp_path, tiny_backbone_state):
    """DualTokenViT.load_pretrained (init_cfg Pretrained) loads an mmengine checkpoint
    safely and refuses, without running it, one that also holds a foreign object."""
    from mmdualtoken.models import DualTokenViT
    marker = tmp_path / 'marker'
    checkpoint = mmengine_checkpoint(tiny_backbone_state)
    legit, evil = tmp_path / 'legit.pth', tmp_path / 'evil.pth'
    torch.save(checkpoint, legit)
    torch.save(dict(checkpoint, payload=CreatesMarker(str(marker))), evil)

    model = DualTokenViT(arch='tiny')
    with pytest.raises(
            RuntimeError,
            match=r'Refusing to load the pretrained checkpoint '
            r'\S*evil\.pth: .*GLOBAL \S*CreatesMarker'):
        model.load_pretrained(str(evil), 'backbone.')
    assert not marker.exists(), 'the foreign class was unpickled'
    assert not torch.equal(model.global_tokens, tiny_backbone_state['global_tokens'])

    model.load_pretrained(str(legit), 'backbone.')
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_backbone_state[key]), key


@pytest.mark.slow
def test_converter_tool_refuses_a_foreign_class(tmp_path, tiny_backbone_state):
    """tools/model_converters/to_backbone_checkpoint.py: same checkpoint, same outcome."""
    import os
    import os.path as osp
    import subprocess
    import sys

    from helpers import REPO_ROOT, run_tool
    marker = tmp_path / 'marker'
    checkpoint = mmengine_checkpoint(tiny_backbone_state)
    legit, evil = tmp_path / 'legit.pth', tmp_path / 'evil.pth'
    torch.save(checkpoint, legit)
    torch.save(dict(checkpoint, payload=CreatesMarker(str(marker))), evil)
    tool = osp.join(REPO_ROOT, 'tools', 'model_converters', 'to_backbone_checkpoint.py')
    # the class is importable in the tool's process: an unsafe load would run it
    env = dict(
        os.environ,
        PYTHONPATH=osp.dirname(osp.abspath(__file__)),
        PYTHONWARNINGS='ignore',
        OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, tool,
         str(evil),
         str(tmp_path / 'out_evil.pth'), '--arch', 'tiny'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert 'CreatesMarker' in proc.stderr or 'Unsupported global' in proc.stderr, proc.stderr
    assert not marker.exists(), 'the foreign class was unpickled'
    assert not (tmp_path / 'out_evil.pth').exists()

    run_tool(
        'model_converters/to_backbone_checkpoint.py',
        str(legit),
        str(tmp_path / 'out.pth'),
        '--arch',
        'tiny',
        cwd=str(tmp_path))
    converted = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    assert converted.keys() == {'backbone.' + k for k in tiny_backbone_state}
    for key, value in tiny_backbone_state.items():
        assert torch.equal(converted['backbone.' + key], value), key


def test_mmengine_message_hub_checkpoint_loads(tmp_path):
    hub = MessageHub.get_instance('safe_loading_test')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('best_score', np.float64(0.5))
    ckpt = dict(
        meta=dict(epoch=1, iter=3, seed=np.int64(0)),
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
            return (os.system, ('echo should-not-run', ))

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
