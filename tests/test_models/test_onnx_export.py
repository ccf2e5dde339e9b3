"""Both ONNX exporters give graphs that match PyTorch in ONNX Runtime at any input size.

* TorchScript-based (``torch.onnx.export(..., dynamo=False)``, ``dynamic_axes``, opset 17):
  the exporter mmdeploy uses. The graph is traced at one size; nothing size-dependent may be
  baked into it (no skipped resize at the traced size, the token budget's grid computed in
  the graph).
* torch.export-based (``dynamo=True``, ``dynamic_shapes``). With the token budget its
  symbolic sizes cannot express the budget grid (a float square root of the size), so that
  graph is exported at the deployment size 800x1333.

Each graph is run at 224x224, at the odd size 233x377 and, with the detection configs'
token budget (196 global tokens), at 800x1333; an ablation model (5x5 global tokens,
one-step downsampling) also at 64x64.
"""
import inspect

import onnxruntime as ort
import pytest
import torch

from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])
ONNX_ATOL = 1e-4  # fp32 ONNX Runtime vs PyTorch, outputs of unit scale (LayerNorm)
DETECTION_BUDGET = 196  # configs/retinanet_dualtoken_s.py
CASES = [  # (token budget, sizes checked in ONNX Runtime)
    (None, [(224, 224), (233, 377)]),
    (DETECTION_BUDGET, [(800, 1333), (233, 377)]),
]
OUTPUTS = ['stride8', 'stride16', 'stride32']


def build(budget):
    torch.manual_seed(0)
    return DualTokenViT(arch=ARCH, max_global_tokens=budget).eval()


def export_torchscript(model, path, example):
    kwargs = dict(dynamo=False) if 'dynamo' in inspect.signature(torch.onnx.export).parameters \
        else {}
    axes = {'image': {2: 'height', 3: 'width'}}
    axes.update({name: {2: f'{name}_h', 3: f'{name}_w'} for name in OUTPUTS})
    torch.onnx.export(
        model, (example, ),
        path,
        opset_version=17,
        input_names=['image'],
        output_names=OUTPUTS,
        dynamic_axes=axes,
        **kwargs)


def export_dynamo(model, path, example):
    height = torch.export.Dim('height', min=32, max=4096)
    width = torch.export.Dim('width', min=32, max=4096)
    torch.onnx.export(
        model, (example, ),
        path,
        dynamo=True,
        input_names=['image'],
        output_names=OUTPUTS,
        dynamic_shapes={'x': {
            2: height,
            3: width
        }})


def assert_runtime_matches(model, path, sizes):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for size in sizes:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {'image': x.numpy()})
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            assert tuple(g.shape) == tuple(e.shape), size
            torch.testing.assert_close(
                torch.from_numpy(g), e, atol=ONNX_ATOL, rtol=1e-3, msg=lambda m: f'{size}: {m}')


@pytest.mark.parametrize('budget, sizes', CASES, ids=['no_budget', 'budget196'])
def test_torchscript_exporter_any_size(tmp_path, budget, sizes):
    """Traced at 224x224 (where nothing is resized or pooled), run at other sizes."""
    model = build(budget)
    path = str(tmp_path / 'torchscript.onnx')
    export_torchscript(model, path, torch.rand(1, 3, 224, 224))
    assert_runtime_matches(model, path, sizes)


@pytest.mark.slow
def test_dynamo_exporter_any_size(tmp_path):
    model = build(None)
    path = str(tmp_path / 'dynamo.onnx')
    export_dynamo(model, path, torch.rand(1, 3, 96, 128))
    assert_runtime_matches(model, path, CASES[0][1])


@pytest.mark.slow
def test_dynamo_exporter_with_the_token_budget_at_the_detection_size(tmp_path):
    model = build(DETECTION_BUDGET)
    path = str(tmp_path / 'dynamo_budget.onnx')
    torch.onnx.export(
        model, (torch.rand(1, 3, 800, 1333), ),
        path,
        dynamo=True,
        input_names=['image'],
        output_names=OUTPUTS)
    assert_runtime_matches(model, path, [(800, 1333)])


def test_another_token_count_and_one_step_downsampling(tmp_path):
    """5x5 global tokens: X_ga and G are shrunk by bicubic interpolation, which ONNX
    Runtime's Resize cannot do on the token layout (the graph uses matrix products); the
    one-step downsampling pads to its stride. 64x64 shrinks G itself (X_ds is 2x2). The
    TorchScript exporter with dynamic sizes; the dynamo exporter exports the 5x5 grid at a fixed
    size (below) and the 7x7 one with dynamic sizes (above), which cover its resizes."""
    torch.manual_seed(0)
    model = DualTokenViT(arch=ARCH, grid_size=5, downsample='one_step').eval()
    path = str(tmp_path / 'torchscript.onnx')
    export_torchscript(model, path, torch.rand(1, 3, 224, 224))
    assert_runtime_matches(model, path, [(224, 224), (233, 377), (64, 64)])


@pytest.mark.slow
@pytest.mark.parametrize('grid_size', [7, 5])
def test_dynamo_exporter_at_a_fixed_size_skips_only_the_identity_resizes(tmp_path, grid_size):
    """Exported for one size (no dynamic shapes) the sizes are plain ints: at 224 with 7x7
    tokens no resize is recorded (the graph for every size multiplies by 7x7 identity
    matrices, 2 per resize); 5x5 tokens are still resized, by the matrix products: MatMuls
    whose first factor is a constant resize matrix (a layer's MatMul has its input first)."""
    import onnx
    torch.manual_seed(0)
    model = DualTokenViT(arch=ARCH, grid_size=grid_size).eval()
    path = str(tmp_path / 'static.onnx')
    torch.onnx.export(
        model, (torch.rand(1, 3, 224, 224), ),
        path,
        dynamo=True,
        input_names=['image'],
        output_names=OUTPUTS)
    graph = onnx.load(path).graph
    constants = {i.name for i in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == 'Constant' for o in n.output)
    resizes = sum(n.op_type == 'MatMul' and n.input[0] in constants for n in graph.node)
    assert (resizes == 0) == (grid_size == 7)
    assert_runtime_matches(model, path, [(224, 224)])
