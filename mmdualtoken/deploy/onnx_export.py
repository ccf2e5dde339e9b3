"""ONNX export and the ONNX Runtime session it is checked and timed in.

One export path for tools/deployment/export_onnx.py and the benchmark
(tools/analysis/benchmark.py):

* ``exporter='torchscript'``: torch's TorchScript-based exporter (the one mmdeploy uses),
  opset 17; optionally dynamic batch, height and width;
* ``exporter='dynamo'``: the torch.export-based exporter at opset 23 and a fixed shape: GELU
  and attention become ONNX's own Gelu and Attention nodes, the faster graph in ONNX Runtime.
  It needs a torch whose ``torch.onnx.export`` has the ``dynamo`` argument, and onnxscript.

:func:`ort_session` runs a graph on the CPU with ``threads`` intra-op threads, one inter-op
thread, sequential execution, every graph optimisation, and idle threads sleeping instead of
spinning (spinning threads compete with the caller for the cores: measured with 2 threads on
2 cores they made batch-1 latency 1.5-2.8x slower and very noisy).

onnx, onnxscript and onnxruntime are imported inside the functions: ``import mmdualtoken``
needs none of them. Without onnx (which torch's exporters need, even for a plain conv on
torch 2.1) :func:`export_onnx` stops with a :class:`MissingPackageError` that names the
``deploy`` extra, before torch's own message.
"""
import contextlib
import importlib
import inspect
import io
import statistics
import time
import warnings
from typing import Callable, Optional, Sequence

import torch

from ..errors import MissingPackageError

EXPORTERS = ('torchscript', 'dynamo')
OPSET = 17  # TorchScript-based exporter (mmdeploy's)
# torch.export-based graphs: the first opset with ONNX's Attention op (23), after Gelu (20),
# which ONNX Runtime runs as single kernels. Against that exporter's default (18),
# DualToken-ViT-S's optimised graph went from 1,889 to 1,501 nodes and its batch-1 latency
# from 26.0 to 22.2 ms (measured once, interleaved, 2 threads).
DYNAMO_OPSET = 23
OUTPUTS = ('stride8', 'stride16', 'stride32')  # DualTokenViT's three feature maps
SESSION_CONFIG = {'session.intra_op.allow_spinning': '0'}
# the deploy extra (requirements/deploy.txt), from a clone, or its two packages
INSTALL_DEPLOY = ('the deploy extra, pip install -e ".[deploy]" in the mmdualtoken folder, or '
                  'pip install onnx onnxruntime')


def require(package: str, needed_for: str) -> None:
    """Import ``package``, or stop with one line naming what to install.

    Raises:
        MissingPackageError: ``package`` cannot be imported.
    """
    try:
        importlib.import_module(package)
    except ImportError as e:
        reason = next(iter(str(e).splitlines()), type(e).__name__)
        raise MissingPackageError(f'{package} is not installed ({reason}): {needed_for}. '
                                  f'Install {INSTALL_DEPLOY}') from None


def _export_parameters() -> dict:
    return inspect.signature(torch.onnx.export).parameters


def dynamo_export_missing() -> str:
    """Why this torch cannot export with ``exporter='dynamo'`` ('' if it can)."""
    if 'dynamo' not in _export_parameters():
        return f'torch {torch.__version__} has no torch.export-based ONNX exporter'
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return 'the torch.export-based exporter needs onnxscript (pip install onnxscript)'
    return ''


def export_onnx(model: torch.nn.Module,
                path: str,
                shape: Sequence[int] = (224, 224),
                dynamic: bool = False,
                exporter: str = 'torchscript',
                output_names: Optional[Sequence[str]] = OUTPUTS) -> None:
    """Export ``model`` as its eval-mode (deployed) graph, with input ``image``.

    The model is traced in eval mode (BatchNorm on running statistics, no drop path) whatever
    mode it is in, and left in its mode.

    Args:
        model (nn.Module): The model, e.g. a DualTokenViT or a whole classifier.
        path (str): The ONNX file to write (one file, weights inside).
        shape (Sequence[int]): Height and width of the 1x3xHxW example. Defaults to
            (224, 224).
        dynamic (bool): Dynamic batch, height and width of the image and of every
            (N, C, H, W) output (TorchScript exporter only). Defaults to False.
        exporter (str): 'torchscript' (opset 17) or 'dynamo' (torch.export-based, opset 23,
            fixed shape). Defaults to 'torchscript'.
        output_names (Sequence[str], optional): Names of the outputs. Defaults to the
            backbone's ``('stride8', 'stride16', 'stride32')``.

    Raises:
        MissingPackageError: onnx is not installed (the ``deploy`` extra).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter {exporter!r}: use one of {", ".join(EXPORTERS)}')
    if exporter == 'dynamo' and dynamic:
        raise ValueError('dynamic axes need the torchscript exporter')
    require('onnx', "torch's ONNX exporters need it")
    names = list(output_names) if output_names else None
    kwargs = dict(input_names=['image'], output_names=names)
    params = _export_parameters()
    if exporter == 'dynamo':
        missing = dynamo_export_missing()
        if missing:
            raise RuntimeError(missing)
        kwargs.update(dynamo=True, opset_version=DYNAMO_OPSET)
        if 'external_data' in params:
            kwargs['external_data'] = False  # one file
    else:
        kwargs['opset_version'] = OPSET
        if 'dynamo' in params:  # torch 2.1 has no such argument (a TypeError there)
            kwargs['dynamo'] = False
        if dynamic:
            axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}}
            axes.update({n: {0: 'batch', 2: f'{n}_height', 3: f'{n}_width'} for n in names})
            kwargs['dynamic_axes'] = axes
    training = model.training
    model.eval()
    # the exporters' progress lines and the tracer's notes on the Python values it records:
    # checking the graph in ONNX Runtime is what tells whether it is right
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch.onnx.export(model, (torch.rand(1, 3, *shape), ), path, **kwargs)
    finally:
        model.train(training)


def ort_session(path: str, threads: int = 2, optimize: bool = True, **extra):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` on the CPU.

    Args:
        path (str | bytes): The ONNX file, or a serialised graph.
        threads (int): Intra-op threads. Defaults to 2.
        optimize (bool): Every graph optimisation; False runs the graph as it is.
            Defaults to True.
        **extra: More ``SessionOptions`` attributes (e.g. ``enable_profiling=True``).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    for key, value in extra.items():
        setattr(options, key, value)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def latency_ms(run: Callable[[], object], runs: int, warmup: int = 5) -> dict:
    """Time ``runs`` calls of ``run`` after ``warmup`` untimed ones.

    Returns:
        dict: ``median``, ``min`` and ``max`` in milliseconds, and ``spread``,
        (max - min) / median.
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
    return dict(
        median=median, min=min(times), max=max(times), spread=(max(times) - min(times)) / median)
