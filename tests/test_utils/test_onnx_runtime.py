"""The ONNX Runtime session set-up and latency statistic of the deployment tool."""
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mmdualtoken.utils.onnx_runtime import latency_ms, ort_session


def identity_graph(path: str) -> str:
    tensor = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'identity',
                              [tensor], [out])
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
