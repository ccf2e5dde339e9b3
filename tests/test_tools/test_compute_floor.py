"""tools/analysis/compute_floor.py: the compute ops of one call, recorded and replayed alone."""
import torch
import torch.nn.functional as F
from helpers import load_tool


def test_recorder_keeps_exactly_the_compute_ops_with_copies_of_their_inputs():
    tool = load_tool('analysis/compute_floor.py')
    profile_ops = load_tool('analysis/profile_ops.py')
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8, requires_grad=True)
    with tool.ComputeOpRecorder() as rec:
        F.gelu(layer(x)).mul(2).sum().backward()
    names = [profile_ops.op_name(func) for func, _, _ in rec.calls]
    assert names and all(profile_ops.op_class(n) in tool.COMPUTE_CLASSES for n in names), names
    # forward addmm, and mm for both the input and the weight gradient
    assert names.count('aten::addmm') == 1 and names.count('aten::mm') == 2, names
    assert rec.ops > len(rec.calls) + 3  # gelu, mul, sum and their backward are not kept
    func, args, kwargs = rec.calls[0]
    first = next(a for a in args if isinstance(a, torch.Tensor) and a.shape == (4, 8))
    assert first is not x and torch.equal(first, x.detach())
    x.data.zero_()  # the recorded inputs are copies: the replay computes what was recorded
    torch.testing.assert_close(func(*args, **kwargs), F.linear(first, layer.weight, layer.bias))
    tool.replay_fn(rec.calls)()  # every recorded op replays


def test_floor_times_the_replay_against_the_whole_call():
    tool = load_tool('analysis/compute_floor.py')
    w = torch.randn(64, 64)

    def call():  # one matrix product among many element-wise ops
        y = torch.randn(64, 64) @ w
        for _ in range(200):
            y = y * 1.0001 + 0.1
        return y
    result = tool.floor({'toy': call}, warmup=1, repeats=3, desc='test')['toy']
    assert result['compute_ops'] == 1 and result['ops'] > 400
    assert 0 < result['floor_ms'] < result['full_ms']
    table = {'DualToken-ViT-S': dict(result), 'DualToken-ViT-T': dict(result),
             'ResNet-18': dict(result)}
    lines = tool.render({'batch 1': table}, batch=2)
    assert lines[2].startswith('| DualToken-ViT-S | batch 1 | ')
    bounds = [line for line in lines if line.startswith('- ')]
    assert len(bounds) == 1 and bounds[0].startswith('- batch 1: DualToken-ViT-S at its floor ')
    assert bounds[0].endswith("ResNet-18's measured speed "
                              f"(its whole call {result['full_ms']:.1f} ms)")
