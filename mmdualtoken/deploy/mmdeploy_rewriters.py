"""mmdeploy's export on every torch we support: its rewriters need the TorchScript exporter.

mmdeploy 1.3.1 calls ``torch.onnx.export`` without a ``dynamo`` argument, and its rewriters
(its NMS and other ONNX symbolics, the functions it replaces while tracing) work with the
TorchScript-based exporter only. Since torch 2.9 ``torch.onnx.export`` defaults to
``dynamo=True``. The rewriter below makes ``dynamo=False`` the default again, the way
mmdeploy patches anything: registered with its FUNCTION_REWRITER, it replaces
``torch.onnx.export`` only inside mmdeploy's ``RewriterContext`` (while mmdeploy exports) and
restores torch's own on the way out. Where ``torch.onnx.export`` has no ``dynamo`` argument
(torch 2.1, for one) the call goes through unchanged.

This module imports mmdeploy. ``import mmdualtoken`` imports it only where mmdeploy is
already imported: mmdeploy's tools and its Python API load the model config, whose
``custom_imports`` import mmdualtoken. A program that imports mmdualtoken before mmdeploy
imports this module itself.
"""
import inspect

from mmdeploy.core import FUNCTION_REWRITER


@FUNCTION_REWRITER.register_rewriter('torch.onnx.export')
def onnx_export__torchscript(*args, **kwargs):
    """``torch.onnx.export`` with ``dynamo=False`` unless the caller passes ``dynamo``."""
    ctx = FUNCTION_REWRITER.get_context()
    if 'dynamo' in inspect.signature(ctx.origin_func).parameters:
        kwargs.setdefault('dynamo', False)
    return ctx.origin_func(*args, **kwargs)
