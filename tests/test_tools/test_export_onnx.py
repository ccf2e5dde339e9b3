"""tools/deployment/export_onnx.py: export, check in ONNX Runtime, time; one-line errors."""
import re
import sys

import onnx
import pytest
import torch
from helpers import load_tool, run_tool

from mmdualtoken.checkpoint import to_backbone_checkpoint
from mmdualtoken.launch import LaunchError
from mmdualtoken.models import DualTokenViT
from mmdualtoken.utils.onnx_runtime import ort_session

TOOL = 'deployment/export_onnx.py'
MINI = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])


def test_dynamic_export_is_verified_and_timed(tmp_path):
    """T traced at 64x96 with dynamic axes: checked at 1x3x64x96 and 2x3x73x113."""
    out = tmp_path / 'graphs' / 'tiny.onnx'  # a folder that does not exist yet
    proc = run_tool(TOOL, '--arch', 'tiny', '--shape', '64', '96', '--dynamic', '--out',
                    str(out), '--latency', '--runs', '3', '--threads', '1',
                    cwd=str(tmp_path), timeout=300)
    assert '[verify] ONNX Runtime against PyTorch at 1x3x64x96, 2x3x73x113' in proc.stdout
    largest = re.search(r'max \|ONNX Runtime - PyTorch\| = (\S+) over the 3 outputs', proc.stdout)
    assert largest and float(largest.group(1)) < 1e-4, proc.stdout
    latency = re.search(r'batch 1 at 64x96, 1 intra-op thread\(s\): median (\d+\.\d+) ms, spread '
                        r'\d+% .* over 3 runs', proc.stdout)
    assert latency and float(latency.group(1)) > 0, proc.stdout
    image = onnx.load(str(out)).graph.input[0]
    assert image.name == 'image'
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == \
        ['batch', 3, 'height', 'width']


def test_checkpoint_weights_are_what_is_exported(tmp_path):
    """A classification-layout checkpoint (backbone. keys, a head beside them): the graph
    computes with its weights, not random ones."""
    torch.manual_seed(1)
    trained = DualTokenViT(arch='tiny').eval()
    checkpoint = to_backbone_checkpoint(dict(state_dict=trained.state_dict()), 'tiny')
    checkpoint['state_dict']['head.fc.weight'] = torch.zeros(4, 192)
    torch.save(checkpoint, tmp_path / 'tiny.pth')
    out = tmp_path / 'tiny.onnx'
    proc = run_tool(TOOL, '--arch', 'tiny', '--checkpoint', 'tiny.pth', '--shape', '64', '64',
                    '--out', str(out), cwd=str(tmp_path), timeout=300)
    assert 'loaded 525 backbone tensors from tiny.pth' in proc.stdout
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = trained(x)
    got = ort_session(str(out), threads=1).run(None, {'image': x.numpy()})
    for e, g in zip(expected, got):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-4, rtol=1e-3)


def test_missing_checkpoint_is_one_line(tmp_path):
    proc = run_tool(TOOL, '--arch', 'tiny', '--checkpoint', 'work_dirs/none.pth', '--out',
                    'x.onnx', cwd=str(tmp_path), check=False)
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
    with pytest.raises(LaunchError, match=r"t.pth: This checkpoint is not a DualTokenViT "
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
    tool.export(model, path, (64, 64), dynamic=False)
    session = ort_session(path, threads=1)
    assert tool.verify(model, session, [(1, 64, 64)]) < 1e-4
    with torch.no_grad():
        model.norm2.bias += 1e-3  # PyTorch's model moves away from the exported graph
    with pytest.raises(tool.OnnxMismatchError, match=r'stride32 at 1x3x64x64: ONNX Runtime '
                       r'differs from PyTorch by up to 0.001'):
        tool.verify(model, session, [(1, 64, 64)])



def test_dynamo_exporter_writes_one_file_with_fused_attention_and_gelu(tmp_path):
    """--exporter dynamo: opset 23, ONNX's own Attention and Gelu nodes (no erf or softmax
    decompositions), the weights inside the one file, checked in ONNX Runtime."""
    out = tmp_path / 'tiny_dynamo.onnx'
    proc = run_tool(TOOL, '--arch', 'tiny', '--shape', '64', '96', '--exporter', 'dynamo',
                    '--out', str(out), cwd=str(tmp_path), timeout=300)
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
    with pytest.raises(LaunchError, match='--exporter dynamo: the torch.export-based exporter '
                       r'needs onnxscript \(pip install onnxscript\); --exporter torchscript'):
        tool.main(['--arch', 'tiny', '--exporter', 'dynamo', '--out', out])
    assert not (tmp_path / 'x.onnx').exists()
