#!/usr/bin/env python
"""Export the DualToken-ViT backbone to ONNX, check it in ONNX Runtime, time it.

    python tools/deployment/export_onnx.py [--arch small] [--max-global-tokens N]
        [--checkpoint CKPT] [--shape H W] [--dynamic | --exporter dynamo]
        [--out dualtoken_small.onnx]
        [--latency [--runs 50] [--threads 2]]

1. builds ``DualTokenViT(arch, max_global_tokens)`` in eval mode, with the backbone weights
   of ``--checkpoint`` (any layout tools/model_converters/to_backbone_checkpoint.py accepts,
   read with torch's weights-only loading) or random ones;
2. exports it with :func:`mmdualtoken.deploy.export_onnx`: torch's TorchScript-based
   exporter (the one mmdeploy uses), opset 17, input ``image``, outputs ``stride8``,
   ``stride16``, ``stride32``, traced at 1x3xHxW in eval mode; ``--dynamic`` makes batch,
   height and width dynamic axes. ``--exporter dynamo``
   exports with the torch.export-based exporter instead, at opset 23 and the fixed shape:
   GELU and attention become ONNX's Gelu and Attention nodes, the faster graph in ONNX
   Runtime (it needs onnxscript, and a torch that has that exporter);
3. runs the graph in ONNX Runtime on a random image and compares every output with PyTorch's
   (|difference| <= 1e-4 + 1e-3 x |PyTorch|, as tests/test_models/test_onnx_export.py), at
   1x3xHxW and, for a dynamic graph, also at batch 2 and another size (H+9)x(W+17); prints
   the largest difference and stops with an error above the tolerance;
4. ``--latency``: batch-1 latency at HxW in ONNX Runtime (median and spread of ``--runs``
   runs), in the session of :func:`mmdualtoken.deploy.onnx_export.ort_session`:
   ``--threads`` intra-op threads (default 2), one inter-op thread, sequential execution,
   every graph optimisation, idle threads not spinning.

A bad argument, a missing or unfitting checkpoint or a missing onnx or onnxruntime (the
``deploy`` extra) is one line, ``error: ...``, and exit code 1.
"""
import argparse
import os
import os.path as osp
import pickle
import time

import torch

from mmdualtoken.deploy.onnx_export import (DYNAMO_OPSET, EXPORTERS, OPSET, OUTPUTS,
                                            dynamo_export_missing, export_onnx, latency_ms,
                                            ort_session, require)
from mmdualtoken.errors import BadConfigError, LaunchError, MissingFileError, OnnxMismatchError
from mmdualtoken.launch import run_tool
from mmdualtoken.models import DualTokenViT

ATOL, RTOL = 1e-4, 1e-3  # fp32 ONNX Runtime vs PyTorch (tests/test_models/test_onnx_export.py)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--arch', default='small', help='tiny, small, tiny-mix or small-mix (default: small)')
    parser.add_argument(
        '--max-global-tokens',
        type=int,
        metavar='N',
        help='token budget for high resolutions (the detection configs use '
        '196; default: none)')
    parser.add_argument('--checkpoint', help='backbone weights (default: random ones)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[224, 224],
        metavar=('H', 'W'),
        help='input height and width the graph is traced at (default: 224 224)')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='dynamic batch, height and width (TorchScript exporter)')
    parser.add_argument(
        '--exporter',
        default='torchscript',
        help='torchscript (opset 17, what mmdeploy uses; default) or dynamo '
        '(torch.export-based, opset 23: fused Gelu and Attention nodes, the '
        'faster graph in ONNX Runtime; fixed shape)')
    parser.add_argument('--out', help='ONNX file to write (default: dualtoken_<arch>.onnx)')
    parser.add_argument(
        '--latency', action='store_true', help='print the batch-1 latency in ONNX Runtime')
    parser.add_argument('--runs', type=int, default=50, help='timed runs (default: 50)')
    parser.add_argument(
        '--threads', type=int, default=2, help='ONNX Runtime intra-op threads (default: 2)')
    return parser.parse_args(argv)


def build(arch: str, max_global_tokens, checkpoint) -> DualTokenViT:
    """The backbone in eval mode, with the weights of ``checkpoint`` if one is given."""
    try:
        model = DualTokenViT(arch=arch, max_global_tokens=max_global_tokens).eval()
    except ValueError as e:
        raise BadConfigError(str(e)) from None
    if checkpoint:
        load_backbone_weights(model, arch, checkpoint)
    return model


def load_backbone_weights(model: DualTokenViT, arch: str, path: str) -> None:
    """Load the backbone tensors of ``path`` (safe loading: torch's weights-only loader, on
    torch < 2.4 the same allow-list) into ``model``, a DualTokenViT of ``arch``."""
    from mmdualtoken.checkpoint import check_arch, extract_backbone_weights
    from mmdualtoken.safe_loading import load_checkpoint_safely
    try:
        loaded = load_checkpoint_safely(path)
    except pickle.UnpicklingError as e:
        refused = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadConfigError(f'--checkpoint {path}: safe (weights-only) loading refused an '
                             f'object in it ({refused[:200]})') from None
    except Exception as e:  # a truncated or foreign file
        raise BadConfigError(f'--checkpoint {path} is not a readable torch checkpoint '
                             f'({type(e).__name__}: {str(e)[:200]})') from None
    try:
        weights = extract_backbone_weights(loaded)
        check_arch(weights, arch)
    except (TypeError, ValueError) as e:
        raise BadConfigError(f'--checkpoint {path}: {e}') from None
    model.load_state_dict(weights, strict=True)
    print(f'[export] loaded {len(weights)} backbone tensors from {path}')


def verify(model: DualTokenViT, session, sizes) -> float:
    """Largest |ONNX Runtime - PyTorch| over every output at every (batch, H, W) of ``sizes``;
    OnnxMismatchError beyond the tolerance."""
    generator = torch.Generator().manual_seed(0)
    largest = 0.
    for batch, height, width in sizes:
        x = torch.rand(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {'image': x.numpy()})
        for name, e, g in zip(OUTPUTS, expected, got):
            g = torch.from_numpy(g)
            if tuple(g.shape) != tuple(e.shape):
                raise OnnxMismatchError(f'{name} at {batch}x3x{height}x{width}: ONNX Runtime '
                                        f'gives shape {tuple(g.shape)}, PyTorch '
                                        f'{tuple(e.shape)}')
            difference = (g - e).abs()
            largest = max(largest, float(difference.max()))
            excess = difference - (ATOL + RTOL * e.abs())
            if float(excess.max()) > 0:
                raise OnnxMismatchError(
                    f'{name} at {batch}x3x{height}x{width}: ONNX Runtime differs from PyTorch '
                    f'by up to {float(difference.max()):.3g} (tolerance {ATOL:g} + {RTOL:g} x '
                    '|PyTorch|): the exported graph is wrong')
    return largest


def main(argv=None):
    args = parse_args(argv)
    height, width = args.shape
    if min(height, width) < 32:
        raise BadConfigError(f'--shape {height} {width}: the backbone needs H, W >= 32')
    if args.threads < 1 or args.runs < 1:
        raise BadConfigError(f'--threads and --runs must be positive, got {args.threads} and '
                             f'{args.runs}')
    if args.exporter not in EXPORTERS:
        raise BadConfigError(f'--exporter {args.exporter!r}: use one of {", ".join(EXPORTERS)}')
    if args.exporter == 'dynamo':
        if args.dynamic:
            raise BadConfigError('--dynamic needs --exporter torchscript (the dynamo export is '
                                 'traced at one fixed --shape)')
        missing = dynamo_export_missing()
        if missing:
            raise LaunchError(f'--exporter dynamo: {missing}; --exporter torchscript works on '
                              'every supported torch')
    require('onnx', "torch's ONNX exporters need it")
    require('onnxruntime', 'the exported graph is checked in it')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        raise MissingFileError(f'--checkpoint: checkpoint not found: {args.checkpoint}')
    out = args.out or f'dualtoken_{args.arch}.onnx'

    budget = f', max_global_tokens={args.max_global_tokens}' if args.max_global_tokens else ''
    print(f'[export] DualTokenViT(arch={args.arch!r}{budget}), '
          f'{"weights of " + args.checkpoint if args.checkpoint else "random weights"}')
    model = build(args.arch, args.max_global_tokens, args.checkpoint)

    axes = 'dynamic batch, height and width' if args.dynamic else 'fixed shape'
    how = ('TorchScript exporter, opset ' +
           str(OPSET) if args.exporter == 'torchscript' else 'torch.export-based exporter, opset ' +
           str(DYNAMO_OPSET))
    print(f'[export] tracing at 1x3x{height}x{width} ({how}, {axes}) ...', flush=True)
    start = time.perf_counter()
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    export_onnx(model, out, (height, width), args.dynamic, args.exporter)
    print(f'[export] wrote {out} ({osp.getsize(out) / 2**20:.1f} MB) in '
          f'{time.perf_counter() - start:.1f} s')

    session = ort_session(out, threads=args.threads)
    sizes = [(1, height, width)]
    if args.dynamic:
        sizes.append((2, height + 9, width + 17))
    print(
        f'[verify] ONNX Runtime against PyTorch at '
        f'{", ".join(f"{b}x3x{h}x{w}" for b, h, w in sizes)} ...',
        flush=True)
    largest = verify(model, session, sizes)
    print(f'[verify] max |ONNX Runtime - PyTorch| = {largest:.2g} over the '
          f'{len(OUTPUTS)} outputs (tolerance {ATOL:g} + {RTOL:g} x |PyTorch|): OK')

    if args.latency:
        print(
            f'[latency] {args.runs} runs at batch 1, {args.threads} intra-op thread(s) ...',
            flush=True)
        feed = {'image': torch.rand(1, 3, height, width).numpy()}
        timing = latency_ms(lambda: session.run(None, feed), args.runs)
        print(f'[latency] ONNX Runtime, batch 1 at {height}x{width}, {args.threads} intra-op '
              f'thread(s): median {timing["median"]:.2f} ms, spread '
              f'{timing["spread"] * 100:.0f}% ((max - min) / median; min '
              f'{timing["min"]:.2f}, max {timing["max"]:.2f}) over {args.runs} runs')


if __name__ == '__main__':
    run_tool(main)
