"""--amp: one flag, bf16 (fp16 on GPUs older than Ampere) + loss scaling on GPUs, bf16
autocast on CPU."""
import pytest
import torch
from mmengine.config import Config

from mmdualtoken.engine import CPUAmpOptimWrapper
from mmdualtoken.errors import BadConfigError
from mmdualtoken.launch import enable_amp


def config(**optim_wrapper):
    return Config(dict(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3), **optim_wrapper)))


@pytest.mark.parametrize(
    'cuda, capability, wrapper, dtype',
    [
        (True, (9, 0), 'AmpOptimWrapper', 'bfloat16'),  # H100
        (True, (8, 0), 'AmpOptimWrapper', 'bfloat16'),  # A100
        (True, (7, 0), 'AmpOptimWrapper', 'float16'),  # V100: no native bf16
        (False, None, 'CPUAmpOptimWrapper', 'bfloat16')
    ])
def test_amp_picks_the_wrapper_and_precision_of_the_machine(monkeypatch, cuda, capability, wrapper,
                                                            dtype):
    """Stand-ins: torch.cuda's answers on GPUs of those compute capabilities."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('test_amp')  # the logger exists before CUDA is faked
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda *_: capability)
    cfg = config()
    assert enable_amp(cfg) == wrapper == cfg.optim_wrapper.type
    assert cfg.optim_wrapper.dtype == dtype
    if cuda:  # mmengine's GPU wrapper, its loss scaler on
        assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_amp_keeps_a_configured_amp_wrapper_and_refuses_others():
    cfg = config(type='CPUAmpOptimWrapper', dtype='float16')
    assert enable_amp(cfg) == 'CPUAmpOptimWrapper' and cfg.optim_wrapper.dtype == 'float16'
    with pytest.raises(BadConfigError, match='--amp needs optim_wrapper.type OptimWrapper'):
        enable_amp(config(type='ApexOptimWrapper'))


def test_cpu_amp_wrapper_trains_in_bf16_autocast():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16  # the matmul ran under CPU autocast
    wrapper.update_params(out.float().square().mean())
    assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)
    assert not torch.is_autocast_cpu_enabled()  # left on exit


def test_cpu_amp_wrapper_refuses_other_dtypes():
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        CPUAmpOptimWrapper(dtype='float32', optimizer=torch.optim.SGD([torch.zeros(1)], lr=1))
