"""mmdualtoken.safe_loading.load_checkpoint_safely, what our checkpoint tools load with: every
mmengine checkpoint loads and nothing else does, on torch 2.14.1 here and on torch 2.1.2 in
tools/compat_matrix.sh (where torch's weights-only loader has no allow-list and the fallback,
:class:`AllowListUnpickler`, does the work)."""
import pickle

import numpy as np
import pytest
import torch
from helpers import RunsWhenUnpickled
from mmengine.logging import HistoryBuffer, MessageHub

from mmdualtoken.compat import has_safe_globals
from mmdualtoken.safe_loading import (AllowListUnpickler, load_checkpoint_safely,
                                      load_with_allow_list)

LOADERS = [load_checkpoint_safely, load_with_allow_list]


def mmengine_checkpoint(path):
    """A checkpoint as mmengine's Runner writes it: meta with numpy scalars, weights, an
    optimizer state, the message hub's HistoryBuffers."""
    hub = MessageHub.get_instance('checkpoint_loading_test')
    for i in range(3):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
    hub.update_info('best_score', np.float64(0.5))
    weights = {'backbone.w': torch.arange(6.).view(2, 3), 'backbone.b': torch.ones(3)}
    torch.save(
        dict(
            meta=dict(epoch=1, iter=3, seed=np.int64(7), mmengine_version='0.10.7'),
            state_dict=weights,
            optimizer=dict(
                state={0: dict(step=torch.tensor(3.), exp_avg=torch.zeros(2, 3))},
                param_groups=[dict(lr=1e-3, params=[0])]),
            message_hub=hub.state_dict()), path)
    return weights


@pytest.mark.parametrize('load', LOADERS, ids=lambda f: f.__name__)
def test_an_mmengine_checkpoint_loads(tmp_path, load):
    weights = mmengine_checkpoint(tmp_path / 'epoch_1.pth')
    loaded = load(tmp_path / 'epoch_1.pth')
    for key, value in weights.items():
        assert torch.equal(loaded['state_dict'][key], value)
    assert loaded['meta']['seed'] == 7 and loaded['optimizer']['param_groups'][0]['lr'] == 1e-3
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == pytest.approx(1 / 3)
    assert buffer.mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # statistics via getattr
    assert loaded['message_hub']['runtime_info']['best_score'] == 0.5


@pytest.mark.parametrize('load', LOADERS, ids=lambda f: f.__name__)
def test_a_foreign_class_is_refused_without_running_it(tmp_path, load):
    marker = tmp_path / 'marker'
    torch.save(
        dict(state_dict=dict(w=torch.ones(1)), payload=RunsWhenUnpickled(str(marker))),
        tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match=r'RunsWhenUnpickled'):
        load(tmp_path / 'evil.pth')
    assert not marker.exists()


@pytest.mark.parametrize('load', LOADERS, ids=lambda f: f.__name__)
def test_getattr_reaches_only_history_buffer_statistics(tmp_path, load):

    class ReachesInit:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    torch.save(dict(x=ReachesInit()), tmp_path / 'getattr.pth')
    with pytest.raises(pickle.UnpicklingError, match='Refusing getattr'):
        load(tmp_path / 'getattr.pth')


def test_the_fallback_names_the_refused_global():
    with pytest.raises(
            pickle.UnpicklingError,
            match=r'Unsupported global: GLOBAL os\.system is not in the allow-list'):
        AllowListUnpickler(__import__('io').BytesIO(b'')).find_class('os', 'system')


def test_this_torch_takes_the_documented_path(tmp_path, monkeypatch):
    """torch >= 2.4: torch's weights-only loader alone; older torch: it refuses an mmengine
    checkpoint and the allow-list unpickler loads it."""
    mmengine_checkpoint(tmp_path / 'epoch_1.pth')
    calls = []
    import mmdualtoken.safe_loading as safe_loading
    monkeypatch.setattr(safe_loading, 'load_with_allow_list',
                        lambda *a: calls.append(a) or load_with_allow_list(*a))
    load_checkpoint_safely(tmp_path / 'epoch_1.pth')
    assert bool(calls) != has_safe_globals()
    if not has_safe_globals():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / 'epoch_1.pth', weights_only=True)


def test_checkpoint_tools_read_a_full_mmengine_checkpoint(tmp_path):
    """The ONNX exporter's --checkpoint and the converter take a Runner's checkpoint as it is
    (message hub included), on this torch and, in the matrix, on torch 2.1."""
    from helpers import load_tool

    from mmdualtoken.models import DualTokenViT
    torch.manual_seed(0)
    trained = DualTokenViT(arch='tiny')
    path = tmp_path / 'epoch_12.pth'
    hub = MessageHub.get_instance('checkpoint_tools_test')
    hub.update_scalar('train/loss', 0.25)
    torch.save(
        dict(
            meta=dict(epoch=12, seed=np.int64(1)),
            message_hub=hub.state_dict(),
            state_dict={
                f'backbone.{k}': v
                for k, v in trained.state_dict().items()
            }), path)
    exporter = load_tool('deployment/export_onnx.py')
    model = DualTokenViT(arch='tiny')
    exporter.load_backbone_weights(model, 'tiny', str(path))
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    converter = load_tool('model_converters/to_backbone_checkpoint.py')
    converter.main([str(path), str(tmp_path / 'backbone.pth'), '--arch', 'tiny'])
    converted = load_checkpoint_safely(tmp_path / 'backbone.pth')['state_dict']
    assert converted.keys() == {f'backbone.{k}' for k in trained.state_dict()}
