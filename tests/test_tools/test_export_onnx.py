"""The shared ONNX export and ONNX Runtime session (mmdualtoken/deploy/onnx_export.py), and
tools/deployment/export_onnx.py: export, check in ONNX Runtime, time; one-line errors."""
import inspect
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import REPO_ROOT, load_tool, run_tool
from onnx import TensorProto, helper

from mmdualtoken.checkpoint import to_backbone_checkpoint
from mmdualtoken.deploy import export_onnx
from mmdualtoken.deploy.onnx_export import latency_ms, ort_session
from mmdualtoken.errors import LaunchError, MissingPackageError, OnnxMismatchError
from mmdualtoken.models import DualTokenViT

TOOL = 'deployment/export_onnx.py'
MINI = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])


def test_dynamic_export_is_verified_and_timed(tmp_path):
    """T traced at 64x96 with dynamic axes: checked at 1x3x64x96 and 2x3x73x113."""
    out = tmp_path / 'graphs' / 'tiny.onnx'  # a folder that does not exist yet
    proc = run_tool(
        TOOL,
        '--arch',
        'tiny',
        '--shape',
        '64',
        '96',
        '--dynamic',
        '--out',
        str(out),
        '--latency',
        '--runs',
        '3',
        '--threads',
        '1',
        cwd=str(tmp_path),
        timeout=300)
    assert '[verify] ONNX Runtime against PyTorch at 1x3x64x96, 2x3x73x113' in proc.stdout
    largest = re.search(r'max \|ONNX Runtime - PyTorch\| = (\S+) over the 3 outputs', proc.stdout)
    assert largest and float(largest.group(1)) < 1e-4, proc.stdout
    latency = re.search(
        r'batch 1 at 64x96, 1 intra-op thread\(s\): median (\d+\.\d+) ms, spread '
        r'\d+% .* over 3 runs', proc.stdout)
    assert latency and float(latency.group(1)) > 0, proc.stdout
    image = onnx.load(str(out)).graph.input[0]
    assert image.name == 'image'
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == \
        ['batch', 3, 'height', 'width']


@pytest.mark.slow
def test_checkpoint_weights_are_what_is_exported(tmp_path):
    """A classification-layout checkpoint (backbone. keys, a head beside them): the graph
    computes with its weights, not random ones."""
    torch.manual_seed(1)
    trained = DualTokenViT(arch='tiny').eval()
    checkpoint = to_backbone_checkpoint(dict(state_dict=trained.state_dict()), 'tiny')
    checkpoint['state_dict']['head.fc.weight'] = torch.zeros(4, 192)
    torch.save(checkpoint, tmp_path / 'tiny.pth')
    out = tmp_path / 'tiny.onnx'
    proc = run_tool(
        TOOL,
        '--arch',
        'tiny',
        '--checkpoint',
        'tiny.pth',
        '--shape',
        '64',
        '64',
        '--out',
        str(out),
        cwd=str(tmp_path),
        timeout=300)
    assert 'loaded 525 backbone tensors from tiny.pth' in proc.stdout
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = trained(x)
    got = ort_session(str(out), threads=1).run(None, {'image': x.numpy()})
    for e, g in zip(expected, got):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-4, rtol=1e-3)


def test_missing_checkpoint_is_one_line(tmp_path):
    proc = run_tool(
        TOOL,
        '--arch',
        'tiny',
        '--checkpoint',
        'work_dirs/none.pth',
        '--out',
        'x.onnx',
        cwd=str(tmp_path),
        check=False)
    assert proc.returncode == 1
    assert proc.stderr == 'error: --checkpoint: checkpoint not found: work_dirs/none.pth\n'
    assert not (tmp_path / 'x.onnx').exists()


def test_bad_arguments_and_a_missing_onnxruntime_are_launch_errors(tmp_path, monkeypatch):
    tool = load_tool(TOOL)
    out = str(tmp_path / 'x.onnx')
    with pytest.raises(LaunchError, match=r"Unknown arch 'huge' for DualTokenViT"):
        tool.main(['--arch', 'huge', '--out', out])
    with pytest.raises(LaunchError, match='max_global_tokens must be None'):
        tool.main(['--max-global-tokens', '0', '--out', out])
    with pytest.raises(LaunchError, match=r'--shape 16 64: the backbone needs H, W >= 32'):
        tool.main(['--shape', '16', '64', '--out', out])
    torch.save(dict(state_dict=DualTokenViT(arch='tiny').state_dict()), tmp_path / 't.pth')
    with pytest.raises(
            LaunchError,
            match=r"t.pth: This checkpoint is not a DualTokenViT "
            r"arch='small' backbone"):
        tool.main(['--arch', 'small', '--checkpoint', str(tmp_path / 't.pth'), '--out', out])
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime fails
    with pytest.raises(LaunchError, match='onnxruntime is not installed'):
        tool.main(['--arch', 'tiny', '--out', out])


def test_a_graph_that_differs_from_pytorch_fails_verification(tmp_path):
    tool = load_tool(TOOL)
    torch.manual_seed(0)
    model = DualTokenViT(arch=MINI).eval()
    path = str(tmp_path / 'mini.onnx')
    export_onnx(model, path, (64, 64))
    session = ort_session(path, threads=1)
    assert tool.verify(model, session, [(1, 64, 64)]) < 1e-4
    with torch.no_grad():
        model.norm2.bias += 1e-3  # PyTorch's model moves away from the exported graph
    with pytest.raises(
            OnnxMismatchError,
            match=r'stride32 at 1x3x64x64: ONNX Runtime '
            r'differs from PyTorch by up to 0.001'):
        tool.verify(model, session, [(1, 64, 64)])


@pytest.mark.slow
def test_dynamo_exporter_writes_one_file_with_fused_attention_and_gelu(tmp_path):
    """--exporter dynamo: opset 23, ONNX's own Attention and Gelu nodes (no erf or softmax
    decompositions), the weights inside the one file, checked in ONNX Runtime."""
    out = tmp_path / 'tiny_dynamo.onnx'
    proc = run_tool(
        TOOL,
        '--arch',
        'tiny',
        '--shape',
        '64',
        '96',
        '--exporter',
        'dynamo',
        '--out',
        str(out),
        cwd=str(tmp_path),
        timeout=300)
    assert 'torch.export-based exporter, opset 23, fixed shape' in proc.stdout
    assert '[verify] ONNX Runtime against PyTorch at 1x3x64x96' in proc.stdout
    assert 'Skipping constant folding' not in proc.stdout + proc.stderr
    model = onnx.load(str(out))
    assert max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')) == 23
    ops = [n.op_type for n in model.graph.node]
    blocks = sum(DualTokenViT(arch='tiny').arch_settings['depths'])
    assert ops.count('Attention') == 2 * blocks and 'Gelu' in ops  # aggregation, broadcast
    assert not {'Erf', 'Softmax'} & set(ops)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no external data file


def test_dynamo_exporter_errors_name_the_way_out(tmp_path, monkeypatch):
    tool = load_tool(TOOL)
    out = str(tmp_path / 'x.onnx')
    with pytest.raises(LaunchError, match="--exporter 'onnx': use one of torchscript, dynamo"):
        tool.main(['--exporter', 'onnx', '--out', out])
    with pytest.raises(LaunchError, match='--dynamic needs --exporter torchscript'):
        tool.main(['--exporter', 'dynamo', '--dynamic', '--out', out])
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # import onnxscript fails
    with pytest.raises(
            LaunchError,
            match='--exporter dynamo: the torch.export-based exporter '
            r'needs onnxscript \(pip install onnxscript\); --exporter torchscript'):
        tool.main(['--arch', 'tiny', '--exporter', 'dynamo', '--out', out])
    assert not (tmp_path / 'x.onnx').exists()


def identity_graph(path: str) -> str:
    tensor = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'identity', [tensor],
                              [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    return path


def test_session_options(tmp_path):
    """Threads as asked, one inter-op thread, sequential, every optimisation, no spinning."""
    session = ort_session(identity_graph(str(tmp_path / 'identity.onnx')), threads=3)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    assert session.get_providers() == ['CPUExecutionProvider']


def test_latency_counts_only_the_timed_runs():
    calls = []
    timing = latency_ms(lambda: calls.append(1), runs=4, warmup=2)
    assert len(calls) == 6
    assert 0 < timing['min'] <= timing['median'] <= timing['max']
    assert timing['spread'] == pytest.approx((timing['max'] - timing['min']) / timing['median'])
    with pytest.raises(ValueError, match='runs must be at least 1'):
        latency_ms(lambda: None, runs=0)


def test_export_is_of_the_eval_graph_and_leaves_the_mode(tmp_path):
    """A model in training mode is exported as deployed (BatchNorm on its running statistics,
    no dropout), under the given output names, and is left in training mode."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Dropout(0.5),
        torch.nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()
    path = str(tmp_path / 'm.onnx')
    export_onnx(model, path, shape=(32, 32), output_names=['pooled'])
    assert model.training and all(m.training for m in model)
    assert [o.name for o in onnx.load(path).graph.output] == ['pooled']
    x = torch.rand(1, 3, 32, 32)
    (out, ) = ort_session(path, 1).run(None, {'image': x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_torchscript_export_passes_dynamo_only_where_torch_has_it(tmp_path, monkeypatch):
    """torch 2.1's ``torch.onnx.export`` has no ``dynamo`` argument (a TypeError there): the
    TorchScript export passes ``dynamo=False`` only where the signature has it."""
    seen = []

    def export_21(model,
                  args,
                  f,
                  export_params=True,
                  verbose=False,
                  training=None,
                  input_names=None,
                  output_names=None,
                  opset_version=None,
                  dynamic_axes=None):
        seen.append(dict(opset_version=opset_version, dynamic_axes=dynamic_axes))

    def export_new(model, args, f, *, dynamo=True, **kwargs):
        seen.append(dict(dynamo=dynamo, **kwargs))

    model = torch.nn.Conv2d(3, 4, 3)
    monkeypatch.setattr(torch.onnx, 'export', export_21)
    export_onnx(model, str(tmp_path / 'a.onnx'), dynamic=True, output_names=['y'])
    assert seen[-1]['opset_version'] == 17
    assert seen[-1]['dynamic_axes']['y'] == {0: 'batch', 2: 'y_height', 3: 'y_width'}
    assert 'dynamo' not in inspect.signature(torch.onnx.export).parameters
    with pytest.raises(RuntimeError, match='has no torch.export-based ONNX exporter'):
        export_onnx(model, str(tmp_path / 'b.onnx'), exporter='dynamo')
    monkeypatch.setattr(torch.onnx, 'export', export_new)
    export_onnx(model, str(tmp_path / 'c.onnx'))
    assert seen[-1]['dynamo'] is False and seen[-1]['opset_version'] == 17
    with pytest.raises(ValueError, match='dynamic axes need the torchscript exporter'):
        export_onnx(model, str(tmp_path / 'd.onnx'), dynamic=True, exporter='dynamo')


def test_importing_the_package_imports_no_onnx():
    """onnx, onnxscript and onnxruntime are imported where they are used, not by
    ``import mmdualtoken`` nor by ``import mmdualtoken.deploy``; nor is mmdeploy, whose export
    rewriter only a process that has imported mmdeploy registers, and torch.onnx.export stays
    torch's own."""
    code = ('import sys, torch; export = torch.onnx.export; import mmdualtoken, '
            'mmdualtoken.deploy; print(sorted({"onnx", "onnxscript", "onnxruntime", "mmdeploy"} '
            '& set(sys.modules)), torch.onnx.export is export)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[] True', out.stdout + out.stderr


def test_a_missing_onnx_is_one_line_naming_the_deploy_extra(tmp_path, monkeypatch):
    """Without onnx (torch 2.1's exporter needs it even for a plain conv) the export stops
    before torch's exporter starts, in one line that says what to install; the tool prints it
    as ``error: ...``."""
    monkeypatch.setitem(sys.modules, 'onnx', None)  # import onnx fails
    with pytest.raises(MissingPackageError) as raised:
        export_onnx(torch.nn.Conv2d(3, 4, 3), str(tmp_path / 'conv.onnx'), output_names=['y'])
    message = str(raised.value)
    assert re.fullmatch(r'onnx is not installed \(.+\): .*pip install -e "\.\[deploy\]".*', message)
    assert 'pip install onnx onnxruntime' in message and not (tmp_path / 'conv.onnx').exists()
    # the tool as a process whose onnx does not import
    code = ('import runpy, sys; sys.modules["onnx"] = None; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    proc = subprocess.run([
        sys.executable, '-c', code,
        osp.join(REPO_ROOT, 'tools', TOOL), '--arch', 'tiny', '--out', 'x.onnx'
    ],
                          cwd=tmp_path,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr == f'error: {message}\n'
    assert not (tmp_path / 'x.onnx').exists()
