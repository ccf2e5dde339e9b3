"""Deployment: explicit, opt-in conversions of a trained model and its ONNX export.

The model's own forward is plain PyTorch, the same on every device; nothing here runs unless
it is called. :func:`fuse_for_cpu` rewrites an eval-mode model for CPU inference (BatchNorm
folded into its conv, activations fused into the kernels before them).
:mod:`.mmdeploy_rewriters` (not imported here) serves mmdeploy's own export.
"""
from .cpu_fusion import fuse_for_cpu
from .onnx_export import export_onnx

__all__ = ['fuse_for_cpu', 'export_onnx']
