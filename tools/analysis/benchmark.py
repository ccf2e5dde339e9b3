#!/usr/bin/env python
"""Side-by-side CPU benchmark of DualToken-ViT and mmpretrain peers of similar size.

    python tools/analysis/benchmark.py [--threads 2] [--repeats 7] [--out docs/benchmark.md]

In one process and one run, with warm-up and interleaved repeats (every model is timed once
per round, so a noisy moment hits all alike), it measures per model: params, MACs at 224
(attention counted, mmdualtoken.utils.count_complexity), inference images/s at 224 for
batch 1 and 32, backbone latency at 512x512 and 800x1333 (batch 1; "x pixels" is that
latency over the per-image time at 224, batch 32, scaled by the pixel count), and a training
step (forward, backward, AdamW) at 224, batch 32. Achieved GMAC/s is compared with an fp32
GEMM peak measured in the same run (the better of the BLAS and oneDNN). For DualToken-ViT it also
reports the 800x1333 cost factor over pixel scaling with and without the token budget, the
speed-up of its fused inference kernels, torch.compile (inference speed-up; training forward
and backward at a fixed and at changing sizes; the training step compiled for its fixed size
against eager) and bf16 autocast, peak resident memory of a
RetinaNet-S training step and inference at 800x1333, and the ratios against issue 7's targets.

Issue 16's figures ("speed where users feel it"), each timed interleaved in one run and
reported with its spread ((max - min) / median): batch-1 latency at 224 in eager PyTorch and
in ONNX Runtime (every model exported by the same torch.export-based exporter at a fixed
size and opset 23, as ``export_onnx.py --exporter dynamo``; one session option set:
``--threads`` intra-op threads, sequential execution, all graph optimisations), with the
node counts of each exported graph; the training step above; and a RetinaNet training
iteration (forward, backward, AdamW) at 1333x800, batch 2, with the neck and head of
configs/retinanet_dualtoken_s.py on DualToken-ViT-S (its token budget), mmdet's ResNet-18
and mmpretrain's EdgeNeXt-small (the 3 last stages, the neck's input channels adapted).
Every target is printed with the measured figure beside it, and an unmet eager batch-1,
training or RetinaNet target (S and ResNet-18) with the best ratios S's present kernels and
its compute ops alone allow (tools/analysis/compute_floor.py, ``--skip-floor`` skips it).
The inference sections run with glibc malloc's defaults (as tools/test.py), the training
sections with freed memory kept in the heap (as tools/train.py trains on the CPU,
mmdualtoken/engine/cpu_heap.py; ``--release-cpu-memory``: defaults there too); the
RetinaNet-S iteration is also timed in both modes, in fresh processes alternated
(``--heap-rounds``), with its page faults and peak memory.
After the timed sections, tools/analysis/profile_ops.py profiles DualToken-ViT-S, ResNet-18
and EdgeNeXt-small (those of --models) for the section "Where the time goes" (``--skip-profile``
skips it).
Writes a markdown report and a PNG of throughput against MACs.
"""
import argparse
import collections
import contextlib
import io
import json
import logging
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

# every model's ONNX Runtime session: the deployment tool's set-up
from mmdualtoken.utils.onnx_runtime import DYNAMO_OPSET, ort_session  # noqa: E402
# tools/train.py's CPU memory setting, applied to the training sections
from mmdualtoken.engine.cpu_heap import keep_freed_cpu_memory  # noqa: E402

OURS = {
    'DualToken-ViT-T': osp.join(REPO_ROOT, 'configs', 'dualtoken_t_in1k.py'),
    'DualToken-ViT-S': osp.join(REPO_ROOT, 'configs', 'dualtoken_s_in1k.py'),
}
PEERS = {
    'EfficientFormer-l1': 'efficientformer-l1_3rdparty_8xb128_in1k',
    'EdgeNeXt-xsmall': 'edgenext-xsmall_3rdparty_in1k',
    'EdgeNeXt-small': 'edgenext-small_3rdparty_in1k',
    'ConvNeXt-V2-atto': 'convnext-v2-atto_3rdparty-fcmae_in1k',
    'ConvNeXt-V2-femto': 'convnext-v2-femto_3rdparty-fcmae_in1k',
    'MobileViT-xsmall': 'mobilevit-xsmall_3rdparty_in1k',
    'ResNet-18': 'resnet18_8xb32_in1k',
}
DENSE_SIZES = ((512, 512), (800, 1333))
DENSE_BUDGET = 196
FIXED_COST_SIZE = (32, 32)  # batch-1 input at which compute is negligible


def build(name: str) -> torch.nn.Module:
    from mmpretrain.apis import get_model
    torch.manual_seed(0)
    return get_model(OURS.get(name) or PEERS[name], pretrained=False).eval()


def sgemm_gmacs(n: int = 2048, repeats: int = 5) -> dict:
    """fp32 GEMM GMAC/s (n x n x n) of the two libraries torch calls on CPU.

    ``addmm``/``mm`` go to the BLAS (MKL in the PyPI wheels), and oneDNN runs convolutions and
    our fused Linear layers; on some CPUs (AMD among them) they differ by 2x, so the peak is
    the better of the two.
    """
    a, b = torch.rand(n, n), torch.rand(n, n)
    runs = {'blas': lambda: torch.mm(a, b)}
    if hasattr(torch.ops.mkldnn, '_linear_pointwise') and torch.backends.mkldnn.is_available():
        bt = b.t().contiguous()
        runs['onednn'] = lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, 'none', [],
                                                                    None)
    result = {}
    for name, run in runs.items():
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        result[name] = n ** 3 / min(times) / 1e9
    result['peak'] = max(result.values())
    return result


def interleaved(fns: Dict[str, Callable], warmup: int, repeats: int,
                desc: str) -> Dict[str, List[float]]:
    """Seconds per call of each function, timed round-robin after ``warmup`` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc=desc, unit='round', leave=False):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_spread(values: List[float]) -> tuple:
    med = statistics.median(values)
    return med, (max(values) - min(values)) / med if med else 0.


def inference_fn(model, batch: int, size=(224, 224)):
    x = torch.rand(batch, 3, *size)

    def run():
        with torch.no_grad():
            model(x)
    return run


def batch_one_ms(models: Dict[str, torch.nn.Module], size, warmup: int, repeats: int,
                 desc: str) -> Dict[str, float]:
    """Median batch-1 ms at ``size`` of the models that accept it, interleaved (some peers
    only accept their training size: they are left out, said on the console)."""
    fns = {}
    for n, m in models.items():
        try:
            with torch.no_grad():
                m(torch.rand(1, 3, *size))
            fns[n] = inference_fn(m, 1, size)
        except Exception as e:
            print(f'{n} at {size}: {type(e).__name__}')
    times = interleaved(fns, warmup, repeats, desc)
    return {n: statistics.median(t) * 1e3 for n, t in times.items()}


def train_step_fn(model, batch: int):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.rand(batch, 3, 224, 224), torch.randint(0, 1000, (batch, ))

    def run():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return run


# ------------------------------------------------------------------ ONNX Runtime, batch 1
GRAPH_OPS = ('Transpose', 'Reshape', 'Einsum', 'Conv', 'MatMul')  # counted per graph


def export_onnx(model: torch.nn.Module, path: str, size=(224, 224)) -> dict:
    """Export ``model`` in eval mode (batch 1, fixed ``size``) with the torch.export-based
    exporter: a deployed graph (BatchNorm on running statistics, no drop path) whatever mode
    the model was left in (torch 2.14's exporter keeps the module's mode).

    Returns the node counts of the written graph: 'nodes' and one entry per GRAPH_OPS.
    """
    import onnx
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        torch.onnx.export(model, (torch.rand(1, 3, *size), ), path, dynamo=True,
                          opset_version=DYNAMO_OPSET, input_names=['image'])
    counts = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    return dict(nodes=sum(counts.values()), **{op: counts.get(op, 0) for op in GRAPH_OPS})


def ort_latency(models: Dict[str, torch.nn.Module], threads: int, warmup: int, repeats: int,
                size=(224, 224)) -> dict:
    """Batch-1 latency (ms) in ONNX Runtime, interleaved: {name: dict(ms, spread, graph)}.

    A model whose export fails gets dict(error=...) instead.
    """
    results, fns = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in tqdm(models.items(), desc='ONNX export', unit='model', leave=False):
            path = osp.join(tmp, f'{len(fns)}.onnx')
            try:
                graph = export_onnx(model, path, size)
                session = ort_session(path, threads)
            except Exception as e:  # report it; the other models still run
                results[name] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:150]}')
                continue
            x = {'image': torch.rand(1, 3, *size).numpy()}
            fns[name] = lambda session=session, x=x: session.run(None, x)
            results[name] = dict(graph=graph)
        times = interleaved(fns, warmup, repeats, 'ONNX Runtime b1')
    for name, t in times.items():
        med, spread = median_spread(t)
        results[name].update(ms=med * 1e3, spread=spread)
    return results


# ------------------------------------------------------------------ RetinaNet training
DET_CONFIG = osp.join(REPO_ROOT, 'configs', 'retinanet_dualtoken_s.py')
DET_BACKBONES = {  # name: (backbone config, channels into the neck); None: the config's own
    'DualToken-ViT-S': None,
    # mmdet's ResNet-18 as its RetinaNet configs train it (stem and stage 1 frozen, BN eval)
    'ResNet-18': (dict(type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3),
                       frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=True),
                       norm_eval=True, style='pytorch'), [128, 256, 512]),
    'EdgeNeXt-small': (dict(type='mmpretrain.EdgeNeXt', arch='small', out_indices=(1, 2, 3),
                            drop_path_rate=0.1, gap_before_final_norm=False),
                       [96, 160, 304]),
}


def build_detector(name: str) -> torch.nn.Module:
    """RetinaNet of configs/retinanet_dualtoken_s.py with the backbone ``name`` (see
    DET_BACKBONES): same neck (strides 8-32 in, P3-P7 out) and head."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    from mmdet.registry import MODELS
    import mmpretrain.models  # noqa: F401  (registers mmpretrain.EdgeNeXt)
    cfg = Config.fromfile(DET_CONFIG).model
    if DET_BACKBONES[name] is not None:
        backbone, in_channels = DET_BACKBONES[name]
        cfg.backbone = Config(backbone)
        cfg.neck.in_channels = in_channels
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    # its per-parameter init log goes to mmengine's logger, whose handler holds the real
    # stdout (redirecting sys.stdout does not reach it): thousands of lines around the bars
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.train()


def detection_batch(batch: int, size=(800, 1333)) -> tuple:
    """Images padded as mmdet pads them (to a multiple of 32) and one box per image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = size
    padded = (-(-h // 32) * 32, -(-w // 32) * 32)
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=padded,
                                             batch_input_shape=padded, scale_factor=(1., 1.),
                                             ori_shape=(h, w)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[w * .1, h * .1, w * .4, h * .6]]), labels=torch.tensor([3]))
        samples.append(sample)
    return torch.rand(batch, 3, *padded), samples


DET_PHASES = ('backbone', 'neck', 'head + losses', 'backward', 'optimizer')


def detector_train_fn(model, batch: int, size=(800, 1333), phases: dict = None):
    """One training iteration: forward, losses, backward, AdamW step. The forward is
    SingleStageDetector.loss in its parts, so that ``phases`` (if given) collects the seconds
    of each of DET_PHASES per call."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, samples = detection_batch(batch, size)

    def run():
        optimizer.zero_grad(set_to_none=True)
        marks = [time.perf_counter()]
        features = model.backbone(x)
        marks.append(time.perf_counter())
        features = model.neck(features)
        marks.append(time.perf_counter())
        loss, _ = model.parse_losses(model.bbox_head.loss(features, samples))
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if phases is not None:
            for phase, start, end in zip(DET_PHASES, marks, marks[1:]):
                phases.setdefault(phase, []).append(end - start)
    return run


def detection_training(names, batch: int, size, warmup: int, repeats: int) -> dict:
    """Seconds per RetinaNet training iteration, interleaved:
    {name: dict(s, spread, phases={phase: median s of the timed calls})}."""
    phases = {n: {} for n in names}
    fns = {n: detector_train_fn(build_detector(n), batch, size, phases[n]) for n in names}
    times = interleaved(fns, warmup, repeats, f'RetinaNet train {size[1]}x{size[0]}')
    return {n: dict(zip(('s', 'spread'), median_spread(t)),
                    phases={k: statistics.median(v[-repeats:]) for k, v in phases[n].items()})
            for n, t in times.items()}


HEAP_MODES = ('kept', 'released')  # tools/train.py on the CPU, and --release-cpu-memory
HEAP_WARMUP = 2  # iterations: the kept heap reaches its peak in the first two


def heap_worker(mode: str, iterations: int, batch: int, size, threads: int) -> dict:
    """Run in a fresh process (:func:`cpu_heap_runs`): RetinaNet-S training iterations with
    freed memory ``mode`` ('kept': keep_freed_cpu_memory; 'released': glibc's defaults).
    Seconds and minor page faults of each timed iteration, and the process's peak GB."""
    import resource
    torch.set_num_threads(threads)
    if mode == 'kept' and not keep_freed_cpu_memory(logger='silent'):
        raise RuntimeError('keep_freed_cpu_memory() did not apply (not glibc?)')
    run = detector_train_fn(build_detector('DualToken-ViT-S'), batch, size)
    for _ in range(HEAP_WARMUP):
        run()
    seconds, faults = [], []
    for _ in range(iterations):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    with open('/proc/self/status') as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024**2
    return dict(seconds=seconds, faults=faults, peak_gb=peak)


def cpu_heap_runs(rounds: int, iterations: int, batch: int, size, threads: int) -> dict:
    """The RetinaNet-S iteration with freed memory kept in the heap against glibc's defaults:
    a fresh process per run (the setting is process-wide), the modes alternated ``rounds``
    times. {mode: dict(s, spread, faults, peak_gb)} over all timed iterations of the mode."""
    runs = {mode: [] for mode in HEAP_MODES}
    here = osp.dirname(osp.abspath(__file__))
    for _ in tqdm(range(rounds), desc='CPU heap, RetinaNet-S', unit='round', leave=False):
        for mode in HEAP_MODES:
            code = (f'import json, sys; sys.path.insert(0, {here!r}); import benchmark; '
                    f'print(json.dumps(benchmark.heap_worker('
                    f'{mode!r}, {iterations}, {batch}, {tuple(size)!r}, {threads})))')
            out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONWARNINGS='ignore'))
            if out.returncode:
                return dict(error=(out.stderr.strip().splitlines() or ['no output'])[-1][:300])
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {}
    for mode, done in runs.items():
        seconds = [t for r in done for t in r['seconds']]
        result[mode] = dict(zip(('s', 'spread'), median_spread(seconds)),
                            faults=statistics.median(f for r in done for f in r['faults']),
                            peak_gb=max(r['peak_gb'] for r in done))
    return result


def peak_memory(kind: str) -> float:
    """Peak resident memory (GB) of a fresh process running a RetinaNet-S step at 800x1333."""
    code = f'''
import torch, sys
sys.path.insert(0, {REPO_ROOT!r})
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
cfg = Config.fromfile({osp.join(REPO_ROOT, 'configs', 'retinanet_dualtoken_s.py')!r})
with DefaultScope.overwrite_default_scope('mmdet'):
    model = MODELS.build(cfg.model)
x = torch.rand(2, 3, 800, 1344)
samples = []
for _ in range(2):
    s = DetDataSample(metainfo=dict(img_shape=(800, 1333), pad_shape=(800, 1344),
                                    batch_input_shape=(800, 1344), scale_factor=(1., 1.),
                                    ori_shape=(800, 1333)))
    s.gt_instances = InstanceData(bboxes=torch.tensor([[100., 100., 400., 500.]]),
                                  labels=torch.tensor([3]))
    samples.append(s)
if {kind!r} == 'train':
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss, _ = model.parse_losses(model.loss(x, samples))
    loss.backward()
    opt.step()
else:
    model.eval()
    with torch.no_grad():
        model.predict(x[:1], samples[:1])
# VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak
with open('/proc/self/status') as f:
    print(next(int(l.split()[1]) for l in f if l.startswith('VmHWM')) / 1024 ** 2)
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    return float(out.stdout.strip().splitlines()[-1])


def without_fusion(fn: Callable) -> Callable:
    """``fn`` run with the fused inference kernels off (the plain modules, same weights)."""
    from mmdualtoken.models.layers import fusion_disabled

    def run():
        with fusion_disabled():
            return fn()
    return run


def compile_and_bf16(model, batch: int, warmup: int, repeats: int) -> dict:
    """DualToken-ViT-S: fused kernels, torch.compile and bf16 autocast against plain eager."""
    x = torch.rand(batch, 3, 224, 224)
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(x)
    compile_seconds = time.perf_counter() - start

    def bf16():
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            model(x)

    times = interleaved({'eager': inference_fn(model, batch),
                         'plain': without_fusion(inference_fn(model, batch)),
                         'compiled': lambda: _no_grad(compiled, x),
                         'bf16': bf16}, warmup, repeats, 'compile/bf16')
    eager = statistics.median(times['eager'])
    result = dict(compile_seconds=compile_seconds,
                  fusion_speedup=statistics.median(times['plain']) / eager,
                  compile_speedup=eager / statistics.median(times['compiled']),
                  bf16_speedup=eager / statistics.median(times['bf16']))
    # training: forward and backward through the compiled model, at one size and at changing
    # sizes (dynamic=False: one specialised graph per size; README, "Speed on CPU", says why
    # not dynamic=True on torch 2.14.1)
    model.train()
    try:
        start = time.perf_counter()
        trained = torch.compile(model, dynamic=False)
        sizes = ((224, 224), (224, 224), (256, 320), (193, 257))
        for size in tqdm(sizes, desc='compile fwd+bwd', unit='size', leave=False):
            trained(torch.rand(2, 3, *size)).sum().backward()  # classifier logits
        result['train_compile'] = (
            f'ran forward and backward at 224x224 (twice), 256x320 and 193x257 in '
            f'{time.perf_counter() - start:.0f} s, compilation included (inductor reuses its '
            f'on-disk cache of earlier runs)')
    except Exception as e:
        result['train_compile'] = f'FAILED ({type(e).__name__}: {str(e).splitlines()[0][:200]})'
    finally:
        model.eval()
    return result


def compiled_batch_one(names, warmup: int, repeats: int) -> dict:
    """Batch-1 latency at 224 of each model eager and compiled as a whole graph for
    deployment (torch.compile, inductor with freezing: weights folded into constants, ops
    fused), interleaved: {name: dict(eager_ms, compiled_ms, compile_s)}, or dict(error=...).
    What a compiler reaches where eager pays a fixed cost per op."""
    import torch._inductor.config as inductor_config
    fns, result = {}, {}
    x = torch.rand(1, 3, 224, 224)
    with inductor_config.patch(freezing=True):
        for name in names:
            model = build(name).eval()
            try:
                compiled = torch.compile(model, dynamic=False)
                start = time.perf_counter()
                _no_grad(compiled, x)
                result[name] = dict(compile_s=time.perf_counter() - start)
            except Exception as e:  # report it; the other figures still stand
                result[name] = dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:150]}')
                continue
            fns[name + ' eager'] = inference_fn(model, 1)
            fns[name] = lambda compiled=compiled: _no_grad(compiled, x)
        times = interleaved(fns, warmup, repeats, 'compiled b1')
    for name in result:
        if name in times:
            result[name].update(eager_ms=statistics.median(times[name + ' eager']) * 1e3,
                                compiled_ms=statistics.median(times[name]) * 1e3)
    return result


def compiled_batch_one_line(result: dict, ours: str = 'DualToken-ViT-S',
                            peer: str = 'ResNet-18') -> str:
    """The compiled batch-1 latencies of ``ours`` and ``peer``, or why they are missing."""
    mine, theirs = (result or {}).get(ours), (result or {}).get(peer)
    what = 'Compiled for deployment (torch.compile, inductor with freezing), batch 1 at 224'
    if not mine or not theirs:
        return f'{what}: not measured'
    failed = [f'{n} FAILED ({r["error"]})' for n, r in ((ours, mine), (peer, theirs))
              if 'error' in r]
    if failed:
        return f'{what}: ' + '; '.join(failed)
    return (f'{what}: {ours} {mine["compiled_ms"]:.1f} ms (eager {mine["eager_ms"]:.1f}), '
            f'{peer} {theirs["compiled_ms"]:.1f} ms (eager {theirs["eager_ms"]:.1f}): {ours} '
            f'at {theirs["compiled_ms"] / mine["compiled_ms"]:.2f}x {peer}\'s speed when both '
            f'are compiled; first calls (compilation) {mine["compile_s"]:.0f} s and '
            f'{theirs["compile_s"]:.0f} s.')


def compiled_training(model, batch: int, warmup: int, repeats: int) -> dict:
    """Training step (224, fwd + bwd + AdamW) of ``model`` eager and under
    ``torch.compile(dynamic=False)`` (one graph for the fixed size), interleaved.

    Returns dict(eager_ips, compiled_ips, spreads, compile_seconds) or dict(error=...).
    """
    compiled = torch.compile(model, dynamic=False)
    steps = {'eager': train_step_fn(model, batch), 'compiled': train_step_fn(compiled, batch)}
    try:
        start = time.perf_counter()
        steps['compiled']()  # compiles forward and backward
        compile_seconds = time.perf_counter() - start
        times = interleaved(steps, warmup, repeats, 'compiled training')
    except Exception as e:  # report it; the other figures still stand
        return dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')
    finally:
        model.eval()
    result = dict(compile_seconds=compile_seconds)
    for name, t in times.items():
        med, spread = median_spread(t)
        result[f'{name}_ips'], result[f'{name}_spread'] = batch / med, spread
    return result


def kernel_choices(batch: int, repeats: int) -> list:
    """The layout and kernel choices of the backbone, timed at DualToken-ViT-S's shapes.

    Returns rows (operation, candidate, milliseconds); "(ours)" marks what the model runs.
    """
    from mmdualtoken.models.layers import ConvNormAct, OneDNNLinear
    from mmdualtoken.models.layers.token_grid import tokens_to_nchw
    torch.manual_seed(0)
    tokens = torch.rand(batch, 28, 28, 56)  # stage 1 of S at 224
    hidden = torch.rand(batch, 28, 28, 224)
    stem_map = torch.rand(batch, 28, 112, 112).contiguous(memory_format=torch.channels_last)
    dwconv = torch.nn.Conv2d(56, 56, 7, padding=3, groups=56)
    fc1, fc2, gelu = OneDNNLinear(56, 224), OneDNNLinear(224, 56), torch.nn.GELU()
    stem_layer = ConvNormAct(28, 28, 3, padding=1, groups=28, norm_cfg=dict(type='BN'),
                             act_cfg=dict(type='GELU')).eval()

    cases = {
        ('depthwise 7x7 conv of (B, 28, 28, 56) tokens', 'channels-last view (ours)'):
            lambda: dwconv(tokens_to_nchw(tokens)).permute(0, 2, 3, 1),
        ('depthwise 7x7 conv of (B, 28, 28, 56) tokens', 'NCHW copy and back'):
            lambda: dwconv(tokens.permute(0, 3, 1, 2).contiguous()).permute(
                0, 2, 3, 1).contiguous(),
        ('Linear 56 -> 224 + GELU', 'oneDNN, GELU fused (ours)'): lambda: fc1(tokens, gelu),
        ('Linear 56 -> 224 + GELU', 'addmm (BLAS), then GELU'):
            without_fusion(lambda: fc1(tokens, gelu)),
        ('Linear 224 -> 56', 'oneDNN (ours)'): lambda: fc2(hidden),
        ('Linear 224 -> 56', 'addmm (BLAS)'): without_fusion(lambda: fc2(hidden)),
        ('stem DW 3x3 conv + BN + GELU, (B, 28, 112, 112)', 'BN folded, GELU fused (ours)'):
            lambda: stem_layer(stem_map),
        ('stem DW 3x3 conv + BN + GELU, (B, 28, 112, 112)', 'conv, BN, GELU'):
            without_fusion(lambda: stem_layer(stem_map)),
    }
    with torch.no_grad():
        times = interleaved(cases, 2, repeats, 'kernel choices')
    return [(op, candidate, statistics.median(t) * 1e3) for (op, candidate), t in times.items()]


def profile_tool():
    """tools/analysis/profile_ops.py as a module (it imports this one as ``benchmark``)."""
    here = osp.dirname(osp.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import profile_ops
    return profile_ops


def _no_grad(fn, x):
    with torch.no_grad():
        return fn(x)


def plot(rows: dict, path: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in rows.items():
        ours = name.startswith('DualToken')
        ax.scatter(r['macs'], r['ips32'], s=60, marker='*' if ours else 'o',
                   color='tab:red' if ours else 'tab:blue')
        ax.annotate(name, (r['macs'], r['ips32']), textcoords='offset points', xytext=(4, 4),
                    fontsize=8)
    ax.set_xlabel('MACs at 224 (G, attention counted)')
    ax.set_ylabel('images/s (224, batch 32, inference)')
    ax.set_title(f'CPU throughput vs compute ({torch.get_num_threads()} threads)')
    ax.grid(alpha=.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--models', nargs='+', default=list(OURS) + list(PEERS),
                        choices=list(OURS) + list(PEERS))
    parser.add_argument('--skip-extras', action='store_true',
                        help='skip torch.compile, bf16 and memory (quick runs)')
    parser.add_argument('--ort-repeats', type=int, default=30,
                        help='interleaved rounds of the ONNX Runtime batch-1 latency')
    parser.add_argument('--skip-ort', action='store_true', help='skip ONNX Runtime')
    parser.add_argument('--det-size', type=int, nargs=2, default=(800, 1333),
                        metavar=('H', 'W'), help='image size of the RetinaNet iteration')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--det-repeats', type=int, default=5)
    parser.add_argument('--det-models', nargs='*', default=list(DET_BACKBONES),
                        choices=list(DET_BACKBONES),
                        help='RetinaNet backbones (none: skip the section)')
    parser.add_argument('--heap-rounds', type=int, default=2,
                        help='rounds of the RetinaNet-S iteration with freed CPU memory kept '
                        'against glibc\'s defaults, fresh processes alternated (0: skip)')
    parser.add_argument('--heap-iterations', type=int, default=2,
                        help='timed iterations per process of --heap-rounds')
    parser.add_argument('--release-cpu-memory', action='store_true',
                        help='time the training sections with glibc malloc\'s defaults; by '
                        'default they keep freed memory in the heap from the training step '
                        'on, as tools/train.py trains on the CPU')
    parser.add_argument('--skip-floor', action='store_true',
                        help='skip the replays of every op and of the compute ops alone '
                        '(tools/analysis/compute_floor.py)')
    parser.add_argument('--skip-profile', action='store_true',
                        help='skip the op profile (tools/analysis/profile_ops.py) of those of '
                             'DualToken-ViT-S, ResNet-18, EdgeNeXt-small in --models; with '
                             '--skip-extras it runs in its quick form')
    parser.add_argument('--out', help='write the markdown report here (PNG beside it)')
    args = parser.parse_args(argv)
    if args.out:  # fail now, not after minutes of timing
        out_dir = osp.dirname(osp.abspath(args.out))
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            parser.error(f'cannot create the folder of --out {args.out!r}: {e}')
        if not os.access(out_dir, os.W_OK):
            parser.error(f'cannot write into {out_dir!r} (--out {args.out!r})')
    torch.set_num_threads(args.threads)
    from mmdualtoken.models import DualTokenViT
    from mmdualtoken.utils import count_complexity

    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    models = {name: build(name) for name in tqdm(args.models, desc='building', unit='model')}
    rows = {}
    for name, model in models.items():
        c = count_complexity(model)
        rows[name] = dict(params=c.params / 1e6, macs=c.macs / 1e9)
    gemm = sgemm_gmacs()
    peak = gemm['peak']
    print('fp32 GEMM: ' + ', '.join(f'{k} {v:.1f}' for k, v in gemm.items()) + ' GMAC/s')

    for batch, key in ((1, 'ips1'), (args.batch, 'ips32')):
        times = interleaved({n: inference_fn(m, batch) for n, m in models.items()},
                            args.warmup, args.repeats, f'inference b{batch}')
        for name, t in times.items():
            med, spread = median_spread(t)
            rows[name][key] = batch / med
            rows[name][key + '_spread'] = spread
            if batch == 1:
                rows[name]['eager_ms'] = med * 1e3
    # the per-call cost that does not scale with pixels (op dispatch, kernel set-up,
    # reading the weights): batch-1 latency at FIXED_COST_SIZE, where compute is negligible
    for name, ms in batch_one_ms(models, FIXED_COST_SIZE, args.warmup, args.repeats,
                                 'fixed cost b1').items():
        rows[name]['fixed_ms'] = ms
    for name, r in rows.items():
        r['gmacs'] = r['macs'] * r['ips32']
        r['peak_fraction'] = r['gmacs'] / peak

    # dense latency of the backbones (batch 1); DualToken-ViT also with the token budget
    backbones = {n: m.backbone for n, m in models.items()}
    for n in [n for n in models if n in OURS]:
        budget = DualTokenViT(arch=models[n].backbone.arch_settings,
                              max_global_tokens=DENSE_BUDGET).eval()
        budget.load_state_dict(models[n].backbone.state_dict())
        backbones[n + ' (budget)'] = budget
    for size in ((224, 224), *DENSE_SIZES):
        for n, ms in batch_one_ms(backbones, size, 1, max(3, args.repeats // 2),
                                  f'latency {size}').items():
            rows.setdefault(n, {})[f'lat{size[0]}x{size[1]}'] = ms
    # cost at 800x1333 over pixel scaling of the per-image time at 224 (batch 32)
    pixels = 800 * 1333 / 224 ** 2
    for n, r in rows.items():
        reference = rows.get(n.replace(' (budget)', ''), {}).get('ips32')
        if 'lat800x1333' in r and reference:
            r['dense_factor'] = r['lat800x1333'] / 1e3 / (pixels / reference)

    # the sections above are inference, timed with glibc malloc's defaults as tools/test.py
    # runs; from here on freed memory stays in the heap, as tools/train.py trains on the CPU
    heap_kept = not args.release_cpu_memory and keep_freed_cpu_memory(logger='silent')
    times = interleaved({n: train_step_fn(m, args.batch) for n, m in models.items()},
                        1, max(3, args.repeats // 2), 'train step')
    for name, t in times.items():
        med, spread = median_spread(t)
        rows[name]['train_ips'] = args.batch / med
        rows[name]['train_ips_spread'] = spread

    floor_results = {}
    if not args.skip_floor:  # lower bounds of the batch-1, training and RetinaNet targets
        from compute_floor import DET_FLOOR_MODELS, PROFILE_MODELS, floors
        names = [n for n in args.models if n in OURS or n in PROFILE_MODELS]
        floor_results = floors(names, args.batch, args.warmup, args.repeats,
                               [n for n in DET_FLOOR_MODELS if n in args.det_models],
                               args.det_batch, tuple(args.det_size),
                               0 if args.skip_ort else args.ort_repeats)

    ort_results = {}
    if not args.skip_ort:
        ort_results = ort_latency(models, args.threads, args.warmup, args.ort_repeats)
    det_results = {}
    if args.det_models:
        det_results = detection_training(args.det_models, args.det_batch,
                                         tuple(args.det_size), min(1, args.warmup),
                                         args.det_repeats)
    heap_results = {}
    if 'DualToken-ViT-S' in args.det_models and args.heap_rounds > 0:
        heap_results = cpu_heap_runs(args.heap_rounds, args.heap_iterations, args.det_batch,
                                     tuple(args.det_size), args.threads)

    extras = {}
    if not args.skip_extras:
        extras['kernels'] = kernel_choices(args.batch, args.repeats)
        small = build('DualToken-ViT-S')
        try:
            extras.update(compile_and_bf16(small, args.batch, args.warmup, args.repeats))
        except Exception as e:  # report it; the other figures still stand
            extras['compile_error'] = f'{type(e).__name__}: {str(e)[:300]}'
        extras['compiled_b1'] = compiled_batch_one(('DualToken-ViT-S', 'ResNet-18'),
                                                   args.warmup, args.repeats * 3)
        extras['compiled_training'] = compiled_training(
            build('DualToken-ViT-S'), args.batch, 1, max(3, args.repeats // 2))
        try:
            extras['mem_train'] = peak_memory('train')
            extras['mem_infer'] = peak_memory('infer')
        except subprocess.CalledProcessError as e:
            extras['memory_error'] = e.stderr.strip().splitlines()[-1][:300]

    if not args.skip_profile:  # after every timed section: profiling never overlaps one
        profile_ops = profile_tool()
        names = [n for n in profile_ops.PROFILE_MODELS if n in args.models]
        if names:
            extras['profile'] = profile_ops.profile_models(
                names, args.threads, quick=args.skip_extras, onnx=not args.skip_ort)

    extras.update(ort=ort_results, det=det_results, heap=heap_results, heap_kept=heap_kept,
                  floor=floor_results)
    report = render(rows, extras, gemm, args)
    print(report)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(report)
        png = osp.splitext(args.out)[0] + '.png'
        plot({n: r for n, r in rows.items() if 'ips32' in r}, png)
        print(f'wrote {args.out} and {png}')
    return rows, extras


def _fmt(value, spec='.1f'):
    return format(value, spec) if isinstance(value, (int, float)) else 'n/a'


TARGETS = (  # (what, ours, peers, metric, the ratio it must reach); from issue 7
    ('S GMAC/s vs the best of EdgeNeXt-small, EfficientFormer-l1, ConvNeXt-V2-femto',
     'DualToken-ViT-S', ('EdgeNeXt-small', 'EfficientFormer-l1', 'ConvNeXt-V2-femto'),
     'gmacs', 1.2),
    ('S images/s vs ResNet-18', 'DualToken-ViT-S', ('ResNet-18', ), 'ips32', 1.0),
    ('T images/s vs EdgeNeXt-xsmall', 'DualToken-ViT-T', ('EdgeNeXt-xsmall', ), 'ips32', 1.0),
)
DENSE_FACTOR_LIMIT = 1.15


def target_lines(rows: dict) -> list:
    """One line per target of issue 7: the measured ratio and whether it is met."""
    lines = []
    for what, ours, peers, metric, needed in TARGETS:
        present = [p for p in peers if metric in rows.get(p, {})]
        if metric not in rows.get(ours, {}) or not present:
            continue
        best = max(present, key=lambda p: rows[p][metric])
        ratio = rows[ours][metric] / rows[best][metric]
        lines.append(f'- {what}: {ratio:.2f}x (best peer {best}; target {needed:.2f}x: '
                     f'{"met" if ratio >= needed else "NOT met"})')
    for n in ('DualToken-ViT-T', 'DualToken-ViT-S'):
        plain, budget = rows.get(n, {}), rows.get(n + ' (budget)', {})
        if 'dense_factor' in budget:
            factor = budget['dense_factor']
            lines.append(
                f'- {n[-1]} at 800x1333 over pixel scaling: {factor:.2f}x with the '
                f'{DENSE_BUDGET}-token budget (target <= {DENSE_FACTOR_LIMIT}x: '
                f'{"met" if factor <= DENSE_FACTOR_LIMIT else "NOT met"}), '
                f'{_fmt(plain.get("dense_factor"), ".2f")}x without it')
    return lines


SPEED_TARGETS = (  # issue 16: (what, source, metric, peer, ratio S must reach, unit)
    # source 'rows' / 'ort' / 'det'; for times (ms, s) the ratio is peer time / S time
    ('batch-1 latency at 224, eager', 'rows', 'eager_ms', 'ResNet-18', 1.0, 'ms'),
    ('batch-1 latency at 224, ONNX Runtime', 'ort', 'ms', 'ResNet-18', 1.0, 'ms'),
    ('training step at 224 (fwd, bwd, AdamW)', 'rows', 'train_ips', 'ResNet-18', 1.2, 'img/s'),
    ('training step at 224 (fwd, bwd, AdamW)', 'rows', 'train_ips', 'EdgeNeXt-small', 1.3,
     'img/s'),
    ('RetinaNet training iteration', 'det', 's', 'ResNet-18', 1.0, 's'),
    ('inference at 224, large batch', 'rows', 'ips32', 'ResNet-18', 1.3, 'img/s'),
)


FLOOR_SCENARIOS = {  # (source, metric) of SPEED_TARGETS: compute_floor's scenario
    ('rows', 'eager_ms'): 'batch 1', ('ort', 'ms'): 'ONNX Runtime batch 1',
    ('rows', 'train_ips'): 'training step', ('det', 's'): 'RetinaNet iteration'}


def floor_bounds(floor: dict, source: str, metric: str, peer: str,
                 ours: str = 'DualToken-ViT-S'):
    """The highest ratios (S's speed over ``peer``'s) S could reach on ``metric`` of
    ``source``: with its present kernels (every op replayed, less the loop; in ONNX Runtime
    its whole call) and with its compute ops alone, each against the peer's whole call, from
    compute_floor's interleaved run; None where that run has no such figures."""
    table = floor.get(FLOOR_SCENARIOS.get((source, metric)), {})
    if ours in table and peer in table:
        whole = table[peer]['full_ms']
        return whole / table[ours]['kernels_ms'], whole / table[ours]['floor_ms']
    return None


def floor_verdict(present: float, compute: float, needed: float) -> str:
    """What the two floors say about a target S must reach at ratio ``needed``."""
    if present >= needed:
        return 'not excluded by its present kernels'
    if compute >= needed:
        return ('out of reach with its present kernels; only fewer or faster kernels (fused '
                'norms, activations and residuals) could reach it')
    return 'out of reach without other kernels or other maths'


def speed_target_lines(rows: dict, ort: dict, det: dict, floor: dict = None) -> list:
    """One line per target of issue 16: both figures, the ratio and the target beside it;
    for an unmet target with floors (``floor``, compute_floor.floors), the best ratios its
    present kernels and its compute ops alone allow, and what that says."""
    sources = dict(rows=rows, ort=ort, det=det)
    ours, lines = 'DualToken-ViT-S', []
    for what, source, metric, peer, needed, unit in SPEED_TARGETS:
        table = sources[source]
        mine, theirs = table.get(ours, {}).get(metric), table.get(peer, {}).get(metric)
        target = (f'S no slower than {peer}' if needed == 1.0 else
                  f'S >= {needed:.2f}x {peer}')
        if mine is None or theirs is None:
            lines.append(f'- {what}: n/a, not measured in this run (target: {target})')
            continue
        ratio = theirs / mine if unit in ('ms', 's') else mine / theirs
        line = (f'- {what}: S {mine:.{3 if unit == "s" else 1}f} {unit}, {peer} '
                f'{theirs:.{3 if unit == "s" else 1}f} {unit}: S at {ratio:.2f}x '
                f'{peer}\'s speed (target: {target}; '
                f'{"met" if ratio >= needed else "NOT met"})')
        bounds = floor_bounds(floor or {}, source, metric, peer) if ratio < needed else None
        if bounds is not None:
            present, compute = bounds
            line += (f'; at most {present:.2f}x with its present kernels, {compute:.2f}x with '
                     f'its compute ops alone: {floor_verdict(present, compute, needed)}')
        lines.append(line)
    return lines


def _spread(r: dict, key: str) -> str:
    return f' ({r[key] * 100:.0f}%)' if key in r else ''


def speed_sections(rows: dict, extras: dict, args) -> list:
    """The batch-1 (eager, ONNX Runtime) table, the RetinaNet table and issue 16's targets."""
    ort, det = extras.get('ort') or {}, extras.get('det') or {}
    lines = ['', '## Batch-1 latency at 224: eager and ONNX Runtime', '',
             f'Median ms of interleaved calls (spread = (max - min) / median). ONNX Runtime '
             f'{_ort_version()}: each model exported by torch.onnx.export(dynamo=True, '
             f'opset_version={DYNAMO_OPSET}) at '
             f'1x3x224x224, {args.threads} intra-op threads, sequential, all graph '
             f'optimisations, idle threads not spinning, '
             f'{getattr(args, "ort_repeats", "n/a")} rounds. Node counts are of the exported '
             f'graph, before ONNX Runtime optimises it. "Fixed cost": eager batch-1 ms at '
             f'{FIXED_COST_SIZE[0]}x{FIXED_COST_SIZE[1]}, where compute is negligible (op '
             f'dispatch, kernel set-up, reading the weights).', '',
             '| model | eager ms (spread) | fixed cost ms | ONNX Runtime ms (spread) | '
             'ONNX nodes | ' + ' | '.join(GRAPH_OPS) + ' |',
             '|---|---|---|---|---|' + '---|' * len(GRAPH_OPS)]
    for n, r in rows.items():
        if 'eager_ms' not in r and n not in ort:
            continue
        o = ort.get(n, {})
        graph = o.get('graph', {})
        ort_cell = (f'{o["ms"]:.1f}{_spread(o, "spread")}' if 'ms' in o else
                    f'failed: {o["error"]}' if 'error' in o else 'n/a')
        lines.append(f'| {n} | {_fmt(r.get("eager_ms"))}{_spread(r, "ips1_spread")} | '
                     f'{_fmt(r.get("fixed_ms"))} | {ort_cell} | {graph.get("nodes", "n/a")} | '
                     + ' | '.join(str(graph.get(op, 'n/a')) for op in GRAPH_OPS) + ' |')
    if det:
        h, w = getattr(args, 'det_size', (800, 1333))
        lines += ['', f'## RetinaNet training iteration, {w}x{h}, batch '
                      f'{getattr(args, "det_batch", 2)}', '',
                  'Forward, losses, backward and AdamW step of configs/retinanet_dualtoken_s.py '
                  '(FPN neck, RetinaNet head) with each backbone; DualToken-ViT-S with the '
                  'config\'s 196-token budget, ResNet-18 as mmdet trains it (stem and stage 1 '
                  'frozen, BN in eval mode), EdgeNeXt-small (mmpretrain) all trainable; '
                  'interleaved. The phases are medians of the same calls (forward split into '
                  'backbone, neck, and head with its losses).', '',
                  '| backbone | s / iteration (spread) | '
                  + ' | '.join(f'{p} s' for p in DET_PHASES) + ' |',
                  '|---|---|' + '---|' * len(DET_PHASES)]
        lines += [f'| {n} | {r["s"]:.3f}{_spread(r, "spread")} | '
                  + ' | '.join(_fmt(r.get('phases', {}).get(p), '.2f') for p in DET_PHASES)
                  + ' |' for n, r in det.items()]
    lines += heap_lines(extras.get('heap'), args)
    lines += fixed_cost_lines(rows)
    if 'compiled_b1' in extras:
        lines += ['', compiled_batch_one_line(extras['compiled_b1'])]
    if extras.get('floor'):
        from compute_floor import render as render_floor
        det_call = ('' if 'RetinaNet iteration' not in extras['floor'] else
                    f'; the RetinaNet iteration above at {args.det_size[1]}x{args.det_size[0]}, '
                    f'batch {args.det_batch}')
        lines += ['', '## What the kernels allow: two floors', '',
                  'tools/analysis/compute_floor.py: one call (batch 1 at 224; training step '
                  f'at 224, batch {args.batch}: forward, backward, AdamW{det_call}) recorded, '
                  'then replayed back to back, interleaved with the whole call in its own run. '
                  '"Every op": all of the call\'s ops, each on the outputs of the ops before '
                  'it, with no Python module code and no autograd engine; less the replay '
                  'loop\'s own cost (the same number of no-op calls), it is the floor of any '
                  'runtime that keeps these kernels (where the replay is the slower one, the '
                  'whole call stands for them). "Compute ops alone": the matrix products, '
                  'convolutions and attention (their backward ops included) on copies of '
                  'their inputs; everything else (norms, activations, element-wise, copies, '
                  'the optimizer) costs nothing there: the floor of any change that keeps the '
                  'maths and these compute kernels, however well it fuses the rest.'
                  + ('' if 'ONNX Runtime batch 1' not in extras['floor'] else
                     ' In ONNX Runtime (batch 1, exported as in the latency table above) the '
                     'whole call is its C++ executor running its present kernels, with no '
                     'replay; "compute ops alone" is the graph\'s matrix products, '
                     'convolutions and attention as ONNX Runtime optimised it (fused forms, '
                     'NCHWc layout), run as a graph of their own on the values the whole '
                     'graph gives them; "ops per call" counts the optimised graph\'s nodes.'),
                  '']
        lines += render_floor(extras['floor'], args.batch)
    lines += ['', '## Targets (issue 16), from this run', '']
    lines += speed_target_lines(rows, ort, det, extras.get('floor'))
    return lines


def heap_lines(heap: dict, args) -> list:
    """The RetinaNet-S iteration with freed CPU memory kept against glibc's defaults."""
    if not heap:
        return []
    h, w = getattr(args, 'det_size', (800, 1333))
    what = (f'CPU memory (mmdualtoken/engine/cpu_heap.py): the RetinaNet-S iteration at {w}x{h}, '
            f'batch {getattr(args, "det_batch", 2)}, in fresh processes (the setting is '
            f'process-wide), the two modes alternated {getattr(args, "heap_rounds", "n/a")} '
            f'times, {HEAP_WARMUP} warm-up iterations each')
    if 'error' in heap:
        return ['', f'{what}: FAILED ({heap["error"]}).']
    kept, released = heap['kept'], heap['released']

    def mode(r):
        return (f'{r["s"]:.2f} s{_spread(r, "spread")}, {r["faults"]:,.0f} page faults per '
                f'iteration, peak {r["peak_gb"]:.2f} GB')
    return ['', f'{what}: freed memory kept in the heap (tools/train.py\'s default on the CPU) '
                f'{mode(kept)}; glibc\'s defaults (--release-cpu-memory) {mode(released)}. '
                f'Kept: {released["s"] / kept["s"]:.2f}x faster, '
                f'{kept["peak_gb"] / released["peak_gb"]:.2f}x the peak memory.']


def fixed_cost_lines(rows: dict, ours: str = 'DualToken-ViT-S', peer: str = 'ResNet-18') -> list:
    """Batch-1 latency split into the fixed cost per call and the part that grows with the
    pixels (eager ms minus fixed cost), and the fixed cost ``ours`` would need to match
    ``peer`` with its own pixel-dependent part."""
    mine, theirs = rows.get(ours, {}), rows.get(peer, {})
    if not all(k in r for r in (mine, theirs) for k in ('eager_ms', 'fixed_ms')):
        return []
    scaling = {n: r['eager_ms'] - r['fixed_ms'] for n, r in ((ours, mine), (peer, theirs))}
    needed = theirs['eager_ms'] - scaling[ours]
    return ['', f'Batch-1 latency at 224 = fixed cost + a part that grows with the pixels: '
                f'{ours} {mine["fixed_ms"]:.1f} + {scaling[ours]:.1f} ms, {peer} '
                f'{theirs["fixed_ms"]:.1f} + {scaling[peer]:.1f} ms. To match {peer} with its '
                f'own pixel-dependent part, {ours} would need a fixed cost of {needed:.1f} ms '
                f'per call ({needed / mine["fixed_ms"]:.2f}x of its measured one).']


def compiled_training_line(result: dict, batch: int) -> str:
    """The compiled training step against eager, for the extras."""
    if not result:
        return 'torch.compile(dynamic=False), training step: not measured'
    if 'error' in result:
        return f'torch.compile(dynamic=False), training step: FAILED ({result["error"]})'
    return (f'torch.compile(dynamic=False), training step at 224 batch {batch} (fwd, bwd, '
            f'AdamW): {result["compiled_ips"]:.1f} img/s ({result["compiled_spread"] * 100:.0f}%)'
            f' vs eager {result["eager_ips"]:.1f} ({result["eager_spread"] * 100:.0f}%), '
            f'{result["compiled_ips"] / result["eager_ips"]:.2f}x; first call (compilation) '
            f'{result["compile_seconds"]:.0f} s')


def _heap_mode(extras: dict) -> str:
    if extras.get('heap_kept'):
        return 'kept in the heap, as tools/train.py trains on the CPU'
    return 'released by glibc malloc\'s defaults (--release-cpu-memory)'


def _ort_version() -> str:
    try:
        import onnxruntime
        return onnxruntime.__version__
    except ImportError:
        return '(not installed)'


def render(rows: dict, extras: dict, gemm: dict, args) -> str:
    peak = gemm['peak']
    lines = [
        '# CPU benchmark', '',
        'Generated by `python tools/analysis/benchmark.py --out docs/benchmark.md`; figures '
        'from one run on this machine (do not compare across runs).', '',
        f'torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved '
        f'repeats after {args.warmup} warm-up calls. fp32 GEMM peak {peak:.1f} GMAC/s '
        f'(n=2048; ' + ', '.join(f'{k} {v:.1f}' for k, v in gemm.items() if k != 'peak') +
        '); "of peak" is achieved GMAC/s over it. Training figures (train img/s, the '
        f'RetinaNet iteration) with freed CPU memory {_heap_mode(extras)}; inference with '
        'glibc malloc\'s defaults.',
        '',
        '| model | params (M) | MACs 224 (G) | img/s b1 | img/s b32 (spread) | GMAC/s | '
        'of peak | train img/s b32 (spread) | ms 512x512 | ms 800x1333 | 800x1333 x pixels |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for n, r in rows.items():
        spread = f' ({r["ips32_spread"] * 100:.0f}%)' if 'ips32_spread' in r else ''
        of_peak = f'{r["peak_fraction"] * 100:.0f}%' if 'peak_fraction' in r else 'n/a'
        lines.append(
            f'| {n} | {_fmt(r.get("params"), ".2f")} | {_fmt(r.get("macs"), ".3f")} | '
            f'{_fmt(r.get("ips1"))} | {_fmt(r.get("ips32"))}{spread} | '
            f'{_fmt(r.get("gmacs"))} | {of_peak} | '
            f'{_fmt(r.get("train_ips"))}{_spread(r, "train_ips_spread")} | '
            f'{_fmt(r.get("lat512x512"))} | '
            f'{_fmt(r.get("lat800x1333"))} | {_fmt(r.get("dense_factor"), ".2f")} |')
    lines += ['', '## Targets (issue 7), ratios from this run', ''] + target_lines(rows)
    lines += speed_sections(rows, extras, args)
    if extras.get('compile_error'):
        lines += ['', f'torch.compile/bf16 failed: {extras["compile_error"]}']
    if 'compile_speedup' in extras:
        lines += ['', '## DualToken-ViT-S extras', '',
                  f'- Fused oneDNN inference kernels (mmdualtoken/models/layers/onednn_fusion.py):'
                  f' {extras["fusion_speedup"]:.2f}x over the same model with plain modules '
                  f'(224, batch {args.batch}).',
                  f'- torch.compile (default backend), inference: {extras["compile_speedup"]:.2f}x '
                  f'over eager at 224 batch {args.batch} (first call '
                  f'{extras["compile_seconds"]:.0f} s); eager runs the fused oneDNN kernels, '
                  f'compiled graphs the plain modules through inductor.',
                  f'- torch.compile, training (batch 2): {extras["train_compile"]}.',
                  f'- {compiled_training_line(extras.get("compiled_training"), args.batch)}',
                  f'- bf16 autocast: {extras["bf16_speedup"]:.2f}x over fp32 eager.']
    if extras.get('memory_error'):
        lines += ['', f'Memory measurement failed: {extras["memory_error"]}']
    if 'mem_train' in extras:
        lines += [f'- Peak resident memory, RetinaNet-S at 800x1333: training step (batch 2, '
                  f'AdamW) {extras["mem_train"]:.2f} GB, inference (batch 1) '
                  f'{extras["mem_infer"]:.2f} GB.']
    if extras.get('kernels'):
        lines += ['', f'## Kernel and layout choices (DualToken-ViT-S shapes, batch {args.batch})',
                  '', '| operation | candidate | ms (median) |', '|---|---|---|']
        lines += [f'| {op} | {candidate} | {ms:.2f} |' for op, candidate, ms in extras['kernels']]
    if extras.get('profile'):
        lines += profile_tool().render(extras['profile'])
    lines += ['', '![throughput vs MACs](benchmark.png)']
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    main()
