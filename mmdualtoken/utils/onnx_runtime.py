"""ONNX Runtime on CPU: one session set-up and one latency statistic.

tools/deployment/export_onnx.py runs the graphs it writes in :func:`ort_session`; the
benchmark (tools/analysis/benchmark.py) sets its sessions up the same way, so the figures
compare:

* ``intra_op_num_threads`` = ``threads``, ``inter_op_num_threads`` = 1, sequential execution:
  one call uses ``threads`` cores, nothing runs beside it;
* every graph optimisation (``ORT_ENABLE_ALL``);
* idle intra-op threads sleep instead of spinning (``session.intra_op.allow_spinning`` = 0):
  spinning threads compete with the caller for the cores; measured with 2 threads on 2 cores
  they made batch-1 latency 1.5-2.8x slower and very noisy.

onnxruntime is imported when a session is made: ``import mmdualtoken`` does not need it.
"""
import statistics
import time
from typing import Callable

SESSION_CONFIG = {'session.intra_op.allow_spinning': '0'}
# The opset of our torch.export-based graphs (export_onnx.py --exporter dynamo, the
# benchmark's): the first with ONNX's Attention op (23), after Gelu (20), which ONNX Runtime
# runs as single kernels. Against the exporter's default (18), DualToken-ViT-S's graph after
# ONNX Runtime's optimisations went from 1,889 to 1,501 nodes and its batch-1 latency from
# 26.0 to 22.2 ms (measured once, interleaved, 2 threads, 2026-11-24).
DYNAMO_OPSET = 23


def ort_session(path: str, threads: int = 2, optimize: bool = True, **extra):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` on the CPU.

    Args:
        path (str | bytes): The ONNX file, or a serialised graph.
        threads (int): Intra-op threads. Defaults to 2.
        optimize (bool): Every graph optimisation; False runs the graph as it is (one that
            ONNX Runtime optimised already, ``optimized_model_filepath``). Defaults to True.
        **extra: More ``SessionOptions`` attributes (e.g. ``enable_profiling=True``).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    for key, value in extra.items():
        setattr(options, key, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def latency_ms(run: Callable[[], object], runs: int, warmup: int = 5) -> dict:
    """Time ``runs`` calls of ``run`` after ``warmup`` untimed ones.

    Returns:
        dict: ``median``, ``min`` and ``max`` in milliseconds, and ``spread``,
        (max - min) / median, the benchmark's measure of noise.
    """
    if runs < 1:
        raise ValueError(f'runs must be at least 1, got {runs}')
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    return dict(median=median, min=min(times), max=max(times),
                spread=(max(times) - min(times)) / median)
