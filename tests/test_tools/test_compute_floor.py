"""tools/analysis/compute_floor.py: one call recorded, then replayed: every op, or the compute
ops alone."""
import pytest
import torch
import torch.nn.functional as F
from helpers import load_tool, run_tool


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
    assert 0 < result['loop_ms'] < result['every_op_ms']
    table = {'DualToken-ViT-S': dict(result), 'DualToken-ViT-T': dict(result),
             'ResNet-18': dict(result)}
    lines = tool.render({'batch 1': table}, batch=2)
    assert lines[2].startswith('| DualToken-ViT-S | batch 1 | ')
    assert f'| {result["every_op_ms"]:.1f} ({result["loop_ms"]:.1f}) |' in lines[2]
    bounds = [line for line in lines if line.startswith('- ')]
    kernels = result['kernels_ms']
    assert kernels == min(result['every_op_ms'] - result['loop_ms'], result['full_ms'])
    assert len(bounds) == 1 and bounds[0].startswith(
        f'- batch 1: DualToken-ViT-S with its present kernels {kernels:.1f} ms would run at ')
    assert bounds[0].endswith(f"with its compute ops alone {result['floor_ms']:.1f} ms at "
                              f"{result['full_ms'] / result['floor_ms']:.2f}x "
                              f"(its whole call {result['full_ms']:.1f} ms)")
    # the RetinaNet iteration in seconds, the training step in images per second
    detector = tool.render({'RetinaNet iteration': table}, batch=2)[-1]
    assert detector.startswith('- RetinaNet iteration: DualToken-ViT-S with its present '
                               f'kernels {kernels / 1e3:.3f} s would run at ')
    assert detector.endswith(f"(its whole call {result['full_ms'] / 1e3:.3f} s)")
    training = tool.render({'training step': table}, batch=2)[-1]
    assert training.endswith(f"(its whole call {2 / result['full_ms'] * 1e3:.1f} img/s)")


def test_present_kernels_never_exceed_the_whole_call(monkeypatch):
    """Where the replay of every op is the slower one (large inputs), the whole call stands
    for the present kernels: the call itself runs them."""
    tool = load_tool('analysis/compute_floor.py')
    seconds = {'toy': 1.0, 'toy every op': 1.2, 'toy loop': .01, 'toy floor': .5}
    monkeypatch.setattr(tool.benchmark, 'interleaved',
                        lambda fns, warmup, repeats, desc: {k: [seconds[k]] for k in fns})
    result = tool.floor({'toy': lambda: torch.ones(2) @ torch.ones(2)}, 1, 1, 'test')['toy']
    assert result['every_op_ms'] == pytest.approx(1200)
    assert result['kernels_ms'] == result['full_ms'] == pytest.approx(1000)


def test_call_recorder_replays_every_op_on_the_outputs_before_it():
    """The every-op replay computes what the call computed: earlier outputs flow in as
    references (views, lists, several outputs, in-place ops), everything else is a copy."""
    tool = load_tool('analysis/compute_floor.py')
    layer = torch.nn.Linear(6, 6)
    x = torch.randn(3, 6)

    def call():
        with torch.no_grad():
            y = layer(x)
            a, b = y.split(3, dim=1)          # two outputs
            z = torch.cat([a, b * 2], dim=1)  # a list of earlier outputs
            z.add_(y.t().t())                 # views and an in-place op
            return F.gelu(z).sum(0)
    expected = call()
    with tool.CallRecorder() as rec:
        call()
    assert rec.ops == len(rec.calls)
    slots = [a for _, args, _, _ in rec.calls for a in tool.tree_flatten(args)[0]
             if isinstance(a, tool.Slot)]
    assert len(slots) >= 8  # every op after the Linear reads an earlier output
    x.data.zero_()  # the input and the weights were copied: the replay computes the call
    replay = tool.dataflow_replay_fn(rec.calls)
    torch.testing.assert_close(replay(), expected)
    torch.testing.assert_close(replay(), expected)  # and again: nothing is consumed

    def refuse(*args, **kwargs):
        raise AssertionError('a dry run calls no recorded op')
    dry = [(refuse, ) + tuple(c[1:]) for c in rec.calls]
    assert tool.dataflow_replay_fn(dry, dry_run=True)() is not None
    with pytest.raises(AssertionError, match='calls no recorded op'):
        tool.dataflow_replay_fn(dry)()


def test_replay_refuses_an_earlier_output_nested_deeper_than_a_list():
    tool = load_tool('analysis/compute_floor.py')
    calls = [(torch.ops.aten.zeros.default, ([2], ), {}, [0]),
             (torch.ops.aten.cat.default, ([[tool.Slot(0)]], ), {}, [1])]
    with pytest.raises(ValueError, match='nested deeper than a list'):
        tool.dataflow_replay_fn(calls)


def test_onnx_runtime_compute_nodes_compute_what_the_whole_graph_computes(tmp_path):
    """compute_subgraph keeps exactly the optimised graph's compute nodes, fed the values the
    whole graph gives them: a model that ends in a compute node (Linear) gives its output."""
    import numpy as np
    import onnx
    tool = load_tool('analysis/compute_floor.py')
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                torch.nn.GELU(), torch.nn.Conv2d(16, 16, 3, groups=16),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, 10))
    path, optimised_path = str(tmp_path / 'm.onnx'), str(tmp_path / 'opt.onnx')
    tool.benchmark.export_onnx(model, path, size=(32, 32))
    whole = tool.benchmark.ort_session(path, 1, optimized_model_filepath=optimised_path,
                                       log_severity_level=3)
    optimised = onnx.load(optimised_path)
    image = np.random.rand(1, 3, 32, 32).astype(np.float32)
    sub, feeds = tool.compute_subgraph(optimised, image)
    compute = [n.name for n in optimised.graph.node if n.op_type in tool.ORT_COMPUTE_OPS]
    assert [n.name for n in sub.graph.node] == compute and len(compute) == 3  # 2 convs, Gemm
    assert len(optimised.graph.node) > len(compute)  # GELU, the pooling... are left out
    assert feeds['image'] is image  # the first convolution reads the image itself
    assert len(feeds) == 3  # and each later compute node a value the whole graph computed
    alone = tool.benchmark.ort_session(sub.SerializeToString(), 1, optimize=False)
    outputs = dict(zip([o.name for o in alone.get_outputs()], alone.run(None, feeds)))
    last = sub.graph.node[-1].output[0]
    assert last == optimised.graph.output[0].name  # the Linear gives the model's output
    np.testing.assert_allclose(outputs[last], whole.run(None, {'image': image})[0],
                               rtol=1e-5, atol=1e-6)


def test_onnx_runtime_floor_times_the_compute_nodes_against_the_whole_call():
    tool = load_tool('analysis/compute_floor.py')
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    result = tool.ort_floor({'toy': model}, threads=1, warmup=1, repeats=3,
                            size=(32, 32))['toy']
    assert result['compute_ops'] == 2 and result['ops'] > 2
    assert result['kernels_ms'] == result['full_ms'] > 0 and result['floor_ms'] > 0
    lines = tool.render({'ONNX Runtime batch 1': {'DualToken-ViT-S': result,
                                                  'ResNet-18': result}}, batch=2)
    assert lines[2] == (f'| DualToken-ViT-S | ONNX Runtime batch 1 | {result["ops"]} | 2 | '
                        f'{result["full_ms"]:.1f} | - | {result["floor_ms"]:.1f} | '
                        f'{result["floor_ms"] / result["full_ms"]:.2f} |')
    assert lines[-1].startswith('- ONNX Runtime batch 1: DualToken-ViT-S with its present '
                                f'kernels {result["full_ms"]:.1f} ms would run at 1.00x ')


def test_command_line_prints_both_floors(tmp_path):
    """``python tools/analysis/compute_floor.py`` end to end, in a tiny form: one of our
    models and a peer, training step at batch 2, the RetinaNet iteration of the peer at
    64x96, one round."""
    proc = run_tool('analysis/compute_floor.py', '--models', 'DualToken-ViT-T', 'ResNet-18',
                    '--batch', '2', '--repeats', '1', '--threads', '1', '--det-models',
                    'ResNet-18', '--det-size', '64', '96', '--ort-repeats', '1',
                    cwd=str(tmp_path))
    rows = [line for line in proc.stdout.splitlines() if line.startswith('| ')]
    for name, scenario in [('DualToken-ViT-T', 'batch 1'), ('DualToken-ViT-T', 'training step'),
                           ('ResNet-18', 'batch 1'), ('ResNet-18', 'training step'),
                           ('ResNet-18', 'RetinaNet iteration'),
                           ('DualToken-ViT-T', 'ONNX Runtime batch 1'),
                           ('ResNet-18', 'ONNX Runtime batch 1')]:
        assert any(line.startswith(f'| {name} | {scenario} | ') for line in rows), rows
    assert all(line.count('|') == 9 for line in rows)
    # bounds are drawn for DualToken-ViT-S only: none without it
    assert not any(line.startswith('- ') for line in proc.stdout.splitlines())
