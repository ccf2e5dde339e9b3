"""Numerics in bf16, on degenerate images, at detection resolution, under torch.compile.

ONNX export: tests/test_models/test_onnx_export.py.
"""
import pytest
import torch
from helpers import config

from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 2, 1], num_heads=[1, 2, 4])


def test_bf16_autocast_agrees_with_fp32():
    torch.manual_seed(0)
    model = DualTokenViT(arch='tiny').eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        fp32 = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = model(x)
    for a, b in zip(fp32, bf16):
        b = b.float()
        assert torch.isfinite(b).all()
        # bf16 keeps 8 bits of mantissa: compare direction and scale of the feature maps
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cosine > 0.99
        assert (a - b).abs().mean() < 0.05 * a.abs().mean() + 0.05


@pytest.mark.parametrize('fill', [0., 1., -3.])
def test_constant_images_give_finite_outputs(fill):
    model = DualTokenViT(arch=ARCH).eval()
    with torch.no_grad():
        outs = model(torch.full((2, 3, 64, 96), fill))
    assert all(torch.isfinite(o).all() for o in outs)


def test_training_step_at_detection_resolution_has_finite_gradients():
    torch.manual_seed(0)
    model = DualTokenViT(arch='tiny', max_global_tokens=196).train()
    outs = model(torch.rand(1, 3, 800, 1333))
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
def test_torch_compile_trains_at_a_fixed_size_and_at_changing_sizes():
    """torch.compile captures forward and backward (dynamo and AOTAutograd, as for every
    backend) and gives eager's outputs; a new size compiles a new graph.

    aot_eager, not inductor: inductor's code generation is device-specific (C++ here, Triton on
    the GPUs users train on, where the GPU acceptance run compiles the training step), and on
    this CPU it costs about 40 s per graph. dynamic=False: with symbolic sizes (dynamic=True)
    inductor 2.14.1 fails on any permuted view saved for backward (pytorch/pytorch#185510).
    """
    torch.manual_seed(0)
    model = DualTokenViT(
        arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])).train()
    compiled = torch.compile(model, backend='aot_eager', dynamic=False)
    for size in [(64, 64), (64, 64), (72, 100)]:
        x = torch.rand(2, 3, *size)
        outs = compiled(x)
        for out, expected in zip(outs, model(x)):
            torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-3)
        model.zero_grad()
        sum(o.square().mean() for o in outs).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize('kind, size', [('classification', (224, 224)),
                                        ('detection, token budget', (512, 640))])
def test_the_backbone_compiles_to_one_graph_forward_and_backward(kind, size):
    """``--compile``, the GPU training path (docs/training.md): dynamo captures the whole
    backbone in one graph (``fullgraph=True`` raises at any graph break) and AOTAutograd its
    backward, for S as ImageNet trains it and as the detection configs build it, with the token
    budget engaged (at 512x640 stage 1's X_ds has 16x20 = 320 > 196 tokens). aot_eager: the
    capture inductor compiles from, without the device-specific code generation."""
    from mmengine.config import Config
    if kind == 'classification':
        cfg = dict(arch='small', out_indices=(2, ), gap_before_final_norm=True, drop_path_rate=.1)
    else:
        cfg = Config.fromfile(config('_base_/models/dualtoken_s_det_backbone.py'))
        cfg = dict(cfg.dualtoken_s_det_backbone, init_cfg=None)
        cfg.pop('type')
        assert cfg['max_global_tokens'] == 196
    torch.manual_seed(0)
    model = DualTokenViT(**cfg).train()
    torch._dynamo.reset()
    stats = torch._dynamo.utils.counters['stats']
    graphs = stats['unique_graphs']
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True, dynamic=False)
    outs = compiled(torch.rand(1, 3, *size))
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert stats['unique_graphs'] - graphs == 1
