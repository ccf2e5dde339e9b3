#!/usr/bin/env python
"""Benchmark DualToken-ViT against mmpretrain and mmdet peers of similar size.

    python tools/analysis/benchmark.py --out docs/benchmark.md   # also docs/benchmark.png
    python tools/analysis/benchmark.py cpu --quick --out /tmp/b.md  # tiny sizes, seconds
    python tools/analysis/benchmark.py gpu --out docs/gpu.md  # one GPU: `gpu --help`

``cpu`` (the default command), fp32: inference throughput (224, batch 32) and batch-1 latency
of DualToken-ViT T and S, plain and after ``mmdualtoken.deploy.fuse_for_cpu``, against
mmpretrain's ResNet-18, EdgeNeXt-small, EfficientFormer-L1 and ConvNeXt-V2-femto; batch-1
latency in ONNX Runtime (``mmdualtoken.deploy.export_onnx``); the training step (224, batch
32, AdamW); the RetinaNet iteration of configs/retinanet_dualtoken_s.py (1333x800, batch 2)
against mmdet's ResNet-18 in it; the peak memory of each training step in a fresh process.
Each measurement is interleaved: after warm-up, every round calls each model once (a noisy
moment hits all alike); a figure is the median of the rounds, its spread (max - min) /
median. Training runs as tools/train.py on the CPU (freed memory kept in the heap).
``gpu``: correctness, AMP and SDPA checks, speed and memory on one GPU (:func:`gpu_benchmark`).
"""
import argparse
import copy
import functools
import itertools
import math
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from multiprocessing import get_context

import torch
import torch.nn.functional as F

from mmdualtoken import DualTokenViT
from mmdualtoken.deploy import export_onnx, fuse_for_cpu
from mmdualtoken.deploy.onnx_export import EXPORTERS, dynamo_export_missing, ort_session
from mmdualtoken.engine.cpu_heap import keep_freed_cpu_memory

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OURS = {
    'DualToken-ViT-T': 'configs/dualtoken_t_in1k.py',
    'DualToken-ViT-S': 'configs/dualtoken_s_in1k.py'
}
PEERS = {
    'ResNet-18': 'resnet18_8xb32_in1k',
    'EdgeNeXt-small': 'edgenext-small_3rdparty_in1k',
    'EfficientFormer-L1': 'efficientformer-l1_3rdparty_8xb128_in1k',
    'ConvNeXt-V2-femto': 'convnext-v2-femto_3rdparty-fcmae_in1k'
}
FUSED = ' + fuse_for_cpu'
# RetinaNet backbones, None: the config's; else (backbone, neck in_channels): mmdet's R18
DET_BACKBONES = {
    'DualToken-ViT-S':
    None,
    'ResNet-18': (dict(
        type='ResNet',
        depth=18,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch'), [128, 256, 512])
}
log = functools.partial(print, file=sys.stderr, flush=True)  # progress, beside tqdm's bars
try:  # progress bars where tqdm is installed; the bare GPU machine may lack it
    from tqdm import tqdm
except ImportError:

    def tqdm(iterable, **_):
        return iterable


QUICK = dict(
    batch=2, repeats=1, warmup=1, onnx_repeats=2, det_size=(96, 128), det_batch=1, det_repeats=1)


def interleaved(fns: dict, warmup: int, repeats: int, desc: str) -> dict:
    """Seconds per call of each function: ``warmup`` untimed calls of each, then ``repeats``
    rounds in which each is called once. Returns {name: [seconds of each round]}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc=desc, unit='round', file=sys.stderr):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_spread(values) -> tuple:
    """(median, (max - min) / median) of ``values``."""
    median = statistics.median(values)
    return median, (max(values) - min(values)) / median if median else 0.


def summarise(times: dict, scale=lambda s: s) -> dict:
    """{name: (scale(median seconds), spread)} of :func:`interleaved`'s times."""
    return {n: (scale(statistics.median(t)), median_spread(t)[1]) for n, t in times.items()}


def peak_rss_gib(fn, *args) -> float:
    """Peak resident memory (GiB) of a fresh process that runs ``fn(*args)``.

    ``fn`` must be importable by name (a module-level function): it runs in a process of the
    'spawn' start method, so the peak (Linux's VmHWM) counts that process alone.
    """
    with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as pool:
        return pool.submit(_run_and_measure, fn, *args).result()


def _run_and_measure(fn, *args) -> float:
    fn(*args)
    with open('/proc/self/status') as f:  # ru_maxrss would carry the forking parent's peak
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 2**20


def build(name: str) -> torch.nn.Module:
    """mmpretrain's classifier ``name`` (a key of OURS or PEERS), random weights, eval mode."""
    from mmpretrain.apis import get_model
    torch.manual_seed(0)
    config = osp.join(REPO_ROOT, OURS[name]) if name in OURS else PEERS[name]
    return get_model(config, pretrained=False).eval()


def inference_fn(model, batch: int, size: tuple):
    """A forward of a random batch, without autograd."""
    x = torch.rand(batch, 3, *size)
    return torch.no_grad()(lambda: model(x))


def training_step(model, loss, scaler=None):
    """One training step: ``loss()`` of ``model``, backward, AdamW on the trainable weights
    (through ``scaler``, a GradScaler, where given)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run():
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss().backward()
            optimizer.step()
        else:
            scaler.scale(loss()).backward()
            scaler.step(optimizer)
            scaler.update()

    return run


def train_step_fn(model, batch: int, size: tuple):
    """Classification: cross-entropy of a random batch."""
    x, y = torch.rand(batch, 3, *size), torch.randint(0, 1000, (batch, ))
    return training_step(model.train(), lambda: F.cross_entropy(model(x), y))


def build_detector(name: str) -> torch.nn.Module:
    """RetinaNet of configs/retinanet_dualtoken_s.py on the backbone ``name`` (DET_BACKBONES),
    in training mode: the same FPN neck (strides 8-32 in, P3-P7 out) and head."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs/retinanet_dualtoken_s.py')).model
    if DET_BACKBONES[name] is not None:
        backbone, cfg.neck.in_channels = DET_BACKBONES[name]
        cfg.backbone = Config(backbone)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg).train()


def detector_step_fn(model, batch: int, size: tuple):
    """RetinaNet: the losses of an mmdet-padded batch with one box per image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    (h, w), padded = size, tuple(-(-s // 32) * 32 for s in size)
    samples = []
    for _ in range(batch):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                pad_shape=padded,
                batch_input_shape=padded,
                scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[w * .1, h * .1, w * .4, h * .6]]), labels=torch.tensor([3]))
        samples.append(sample)
    x = torch.rand(batch, 3, *padded)
    return training_step(model, lambda: model.parse_losses(model.loss(x, samples))[0])


def training_worker(kind: str, name: str, batch: int, size: tuple, threads: int) -> None:
    """Two training steps ('cls') or RetinaNet iterations ('det') of ``name`` as tools/train.py
    runs them on the CPU: the process function of the peak-memory measurement."""
    torch.set_num_threads(threads)
    keep_freed_cpu_memory(logger='silent')
    step = (
        train_step_fn(build(name), batch, size) if kind == 'cls' else detector_step_fn(
            build_detector(name), batch, size))
    for _ in range(2):  # the second step holds the optimizer state and the gradients
        step()


def onnx_latency(models: dict, args) -> dict:
    """Batch-1 ms in ONNX Runtime of each model, interleaved; an export that fails is
    reported as its error and the others still run."""
    fns, result = {}, {}
    feed = {'image': torch.rand(1, 3, args.size, args.size).numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(models.items()):
            log(f'ONNX export ({args.exporter}): {name}')
            path = osp.join(tmp, f'{i}.onnx')
            try:
                export_onnx(
                    model,
                    path, (args.size, args.size),
                    exporter=args.exporter,
                    output_names=['scores'])
            except Exception as e:  # one model's exporter failure is a result too
                result[name] = f'export failed: {type(e).__name__}'
                log(f'{name}: {result[name]}: {e}')
                continue
            fns[name] = functools.partial(ort_session(path, args.threads).run, None, feed)
        times = interleaved(fns, args.warmup, args.onnx_repeats, 'ONNX Runtime, batch 1')
    return {**result, **summarise(times, lambda s: s * 1e3)}


def cpu_benchmark(args) -> dict:
    """Every measurement of the ``cpu`` command: {section: {row: (value, spread) or GiB}}."""
    torch.set_num_threads(args.threads)
    size, batch = (args.size, args.size), args.batch
    models = {n: build(n) for n in tqdm(args.models, desc='building', file=sys.stderr)}
    res = dict(params={n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in models.items()})
    infer = {
        r: models[r] if r in models else fuse_for_cpu(copy.deepcopy(models[r[:-len(FUSED)]]))
        for r in args.rows
    }
    times = interleaved({
        n: inference_fn(m, batch, size)
        for n, m in infer.items()
    }, args.warmup, args.repeats, f'inference, batch {batch}')
    res['throughput'] = summarise(times, lambda s: batch / s)
    times = interleaved({
        n: inference_fn(m, 1, size)
        for n, m in infer.items()
    }, args.warmup, args.repeats, 'inference, batch 1')
    res['latency'] = summarise(times, lambda s: s * 1e3)
    if not args.skip_onnx:
        res['onnx'] = onnx_latency(models, args)
    del infer
    keep_freed_cpu_memory(logger='silent')  # from here on, as tools/train.py on the CPU
    times = interleaved({
        n: train_step_fn(m, batch, size)
        for n, m in models.items()
    }, args.warmup, args.repeats, f'training step, batch {batch}')
    res['train'] = summarise(times, lambda s: batch / s)
    del models, times
    jobs = [('cls', n, batch, size) for n in args.models]
    if not args.skip_det:
        dets = {
            n: detector_step_fn(build_detector(n), args.det_batch, args.det_size)
            for n in DET_BACKBONES
        }
        times = interleaved(dets, args.warmup, args.det_repeats, 'RetinaNet iteration')
        res['det'] = summarise(times)
        del dets, times
        jobs += [('det', n, args.det_batch, args.det_size) for n in DET_BACKBONES]
    if not args.skip_memory:
        for kind, name, *job in jobs:
            log(f'peak memory, {"training step" if kind == "cls" else "RetinaNet"}: {name}')
            res.setdefault(f'{kind}_peak', {})[name] = peak_rss_gib(training_worker, kind, name,
                                                                    *job, args.threads)
    return res


def cell(res: dict, section: str, name: str, fmt: str = '.1f') -> str:
    """A table cell: value (spread), a bare value, an error, or '-' when not measured."""
    value = res.get(section, {}).get(name)
    if isinstance(value, tuple):
        return f'{value[0]:{fmt}} ({value[1] * 100:.0f}%)'
    return '-' if value is None else value if isinstance(value, str) else f'{value:{fmt}}'


def table(res: dict, header: list, rows: list, columns: list) -> list:
    """Markdown lines: ``header``, then per row its name and a cell per (section, format)."""
    lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    return lines + [
        f'| {n} | ' + ' | '.join(cell(res, s, n, f) for s, f in columns) + ' |' for n in rows
    ]


def machine() -> str:
    """CPU model, cores, OS, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    if osp.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')),
                       cpu)
    return (f'{cpu}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}; '
            f'Python {platform.python_version()}, torch {torch.__version__}')


def render(res: dict, args) -> str:
    """The markdown report of :func:`cpu_benchmark`'s results."""
    b, s, ours, peer = args.batch, f'{args.size}x{args.size}', 'DualToken-ViT-S', 'ResNet-18'
    onnx = (f'ONNX Runtime {version("onnxruntime")}: exported by '
            f'`mmdualtoken.deploy.export_onnx` ({args.exporter} exporter), {args.threads} '
            f'intra-op threads, {args.onnx_repeats} rounds.' if 'onnx' in res else '')
    lines = [
        '# CPU benchmark', '',
        f'Generated by `python tools/analysis/benchmark.py {" ".join(args.argv)}`: one '
        'run on one machine; compare figures within it, not across runs.', '',
        f'- Machine: {machine()}.',
        f'- Threads: {args.threads}; {args.warmup} warm-up call(s), then {args.repeats} '
        'interleaved round(s) (each model once per round); a figure is the median, the '
        'spread in brackets is (max - min) / median.', '', f'## Inference, fp32, {s}', '',
        '"+ fuse_for_cpu": the model converted by `mmdualtoken.deploy.fuse_for_cpu` (BN '
        f'folded into the convs, GELU fused into the Linear and conv kernels). {onnx}', ''
    ]
    lines += table(res, [
        'model', 'params (M)', f'img/s, batch {b}', 'ms, batch 1', 'ONNX Runtime ms, batch 1'
    ], args.rows, [('params', '.2f'), ('throughput', '.1f'), ('latency', '.1f'), ('onnx', '.1f')])
    ips = {n: v[0] for n, v in res['throughput'].items()}
    if ours in ips and peer in ips:
        lines += [
            '', f'At batch {b}, {ours}{FUSED} runs at {ips[ours + FUSED] / ips[peer]:.2f}x '
            f'{peer}\'s throughput ({ips[ours] / ips[peer]:.2f}x plain).'
        ]
    lines += [
        '', f'## Training step, {s}, batch {b}', '',
        'Forward, cross-entropy, backward and AdamW step of the plain model, freed '
        'memory kept in the heap as tools/train.py trains on the CPU. Peak memory: the '
        'resident set of a fresh process that builds the model and runs two steps '
        '(Python and torch included).', ''
    ]
    lines += table(res, ['model', 'img/s', 'peak memory (GiB)'], args.models, [('train', '.1f'),
                                                                               ('cls_peak', '.2f')])
    if 'det' in res:
        lines += [
            '', f'## RetinaNet training iteration, {args.det_size[1]}x{args.det_size[0]}, '
            f'batch {args.det_batch}', '',
            'configs/retinanet_dualtoken_s.py (FPN neck, RetinaNet head): losses, '
            'backward and AdamW step; DualToken-ViT-S with the config\'s token budget, '
            'ResNet-18 as mmdet trains it (stem and stage 1 frozen, BN in eval mode). '
            'Peak memory as above.', ''
        ]
        lines += table(res, ['backbone', 's / iteration', 'peak memory (GiB)'], DET_BACKBONES,
                       [('det', '.3f'), ('det_peak', '.2f')])
    lines += [
        '', '## Rerun', '', '    python tools/analysis/benchmark.py --out docs/benchmark.md', '',
        'Options: `--threads N`, `--models ...`, `--skip-onnx`, `--skip-det`, '
        '`--skip-memory`, `--det-size H W`; `--quick` runs everything at tiny sizes.'
    ]
    if args.out:
        lines += ['', f'![throughput and latency]({osp.splitext(osp.basename(args.out))[0]}.png)']
    return '\n'.join(lines) + '\n'


def plot(res: dict, args, path: str) -> None:
    """Bars of throughput and of batch-1 latency (PyTorch and ONNX Runtime) per model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = args.rows
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.5), sharey=True)
    y = list(range(len(rows)))
    colours = ['tab:red' if n.startswith('DualToken') else 'tab:blue' for n in rows]
    onnx = [res.get('onnx', {}).get(n) for n in rows]
    left.barh(y, [res['throughput'][n][0] for n in rows], color=colours)
    right.barh([i - .2 for i in y], [res['latency'][n][0] for n in rows], .4, color=colours)
    right.barh([i + .2 for i in y], [v[0] if isinstance(v, tuple) else 0 for v in onnx],
               .4,
               color=colours,
               alpha=.4)
    left.set(yticks=y, yticklabels=rows, xlabel=f'img/s, batch {args.batch} (higher is better)')
    right.set(xlabel='ms, batch 1: PyTorch (solid), ONNX Runtime (light)')
    left.invert_yaxis()
    fig.suptitle(f'CPU fp32, {args.size}x{args.size}, torch {torch.__version__}, '
                 f'threads: {args.threads}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------- gpu
DET_CFG = 'configs/_base_/models/dualtoken_s_det_backbone.py'
TIMM = {
    'ResNet-18': 'resnet18',
    'EdgeNeXt-small': 'edgenext_small',
    'EfficientFormer-L1': 'efficientformer_l1',
    'ConvNeXt-V2-femto': 'convnextv2_femto'
}
# peer backbones at 1333x800, outputs at strides 8-32: (mmpretrain overrides, timm indices)
DET_PEERS = {
    'ResNet-18': (dict(out_indices=(1, 2, 3)), (2, 3, 4)),
    'EdgeNeXt-small': (dict(out_indices=(1, 2, 3), gap_before_final_norm=False), (1, 2, 3))
}
GPU_QUICK = dict(
    size=64,
    batch=2,
    infer_batch=2,
    det_size=(96, 128),
    det_batch=1,
    warmup=1,
    repeats=1,
    amp_steps=3,
    amp_batch=2,
    budget=4,
    compile_backend='eager')
TOLERANCE = 1e-4  # fp32 on the device vs the CPU: ||a - b|| / ||b|| of each output
# SDPA implementations by profiler names (aten ops, CUDA kernels), the first match winning:
# cuDNN's kernel names also say 'flash'
SDPA_KINDS = (('cudnn', ('cudnn_attention', 'fort_native_sdpa')), ('flash', ('flash', )),
              ('memory-efficient', ('efficient_attention', 'memeffattention',
                                    'fmha_cutlass')), ('math', ('attention_math', )))
HALF = {'bf16': torch.bfloat16, 'fp16': torch.float16}


class LinearHead(torch.nn.Linear):
    """configs/dualtoken_*_in1k.py's head: a linear classifier of the backbone's last output."""

    def forward(self, feats):
        return super().forward(feats[-1])


def ours(name: str, det: dict = None) -> torch.nn.Module:
    """DualToken-ViT ``name`` without mmpretrain, initialised as in training: the classifier of
    configs/dualtoken_*_in1k.py, or the backbone of DET_CFG with the overrides ``det``."""
    from mmengine.config import Config
    torch.manual_seed(0)
    arch = dict(zip(OURS, ('tiny', 'small')))[name]
    if det is None:
        net = DualTokenViT(arch, out_indices=(2, ), gap_before_final_norm=True, drop_path_rate=.1)
    else:
        cfg = Config.fromfile(osp.join(REPO_ROOT, DET_CFG)).dualtoken_s_det_backbone.to_dict()
        cfg.update(arch=arch, init_cfg=None, **det)
        net = DualTokenViT(**{k: v for k, v in cfg.items() if k != 'type'})
    net.init_weights()
    return net if det is not None else torch.nn.Sequential(net, LinearHead(
        net.embed_dims[-1], 1000))


@functools.lru_cache(None)
def peer_source() -> str:
    """What builds the peers: mmpretrain where it imports, else timm, else why neither."""
    try:
        import mmpretrain.apis
        return f'mmpretrain {mmpretrain.__version__}'
    except Exception as e:  # missing, or one of its dependencies
        why = f'mmpretrain: {type(e).__name__}: {e}'
    try:
        import timm
        return f'timm {timm.__version__} ({why})'
    except ImportError as e:
        return f'neither ({why}; timm: {e}): carry mmpretrain, see `benchmark.py gpu --help`'


def peer(name: str, det: bool = False) -> torch.nn.Module:
    """Peer ``name`` with random weights (:func:`peer_source`): the classifier, or (``det``) the
    backbone with outputs at strides 8-32."""
    torch.manual_seed(0)
    if peer_source().startswith('mmpretrain'):
        from mmpretrain.apis import get_model
        model = get_model(
            PEERS[name], pretrained=False, **dict(backbone=DET_PEERS[name][0]) if det else {})
        return model.backbone if det else model
    if not peer_source().startswith('timm'):
        raise ImportError(peer_source())
    import timm
    return timm.create_model(
        TIMM[name],
        pretrained=False,
        **dict(features_only=True, out_indices=DET_PEERS[name][1]) if det else {})


def step_fn(model, x, y, dtype, scaler=None, losses=None):
    """:func:`training_step` under ``dtype`` autocast on ``x``'s device: cross-entropy against
    ``y``, or for a backbone (``y`` None) the sum of its outputs' means; each loss appended to
    ``losses`` where given."""

    def loss():
        with torch.autocast(x.device.type, dtype):
            out = model(x)
            value = F.cross_entropy(out, y) if y is not None else sum(o.mean() for o in out)
        if losses is not None:
            losses.append(value.item())
        return value

    model.to(x.device).train()  # (mmpretrain's ResNet.train returns None)
    return training_step(model, loss, scaler)


def infer_fn(model, x, dtype):
    """A forward under ``dtype`` autocast (None: fp32), without autograd."""
    model.to(x.device).eval()

    def run():
        with torch.no_grad(), torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            model(x)

    return run


def timed(res: dict, key: str, makers: dict, args, scale, desc: str) -> None:
    """Build each function (``makers``: {name: builder}), call it twice alone, then all
    :func:`interleaved`. res[key]: the scaled figures or why a model did not run; res[key +
    '_first']: seconds of the first call; res[key + '_peak']: peak GiB allocated since before
    the build (model, inputs, gradients, AdamW state, activations)."""
    fns, cuda = {}, args.device == 'cuda'
    res[key], res[key + '_first'], res[key + '_peak'] = {}, {}, {}
    for name, make in makers.items():
        log(f'{desc}, first calls: {name}')
        try:
            if cuda:
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            fn = make()
            fn = functools.partial(lambda f: (f(), torch.cuda.synchronize()), fn) if cuda else fn
            start = time.perf_counter()
            fn()
            res[key + '_first'][name] = time.perf_counter() - start
            fns[name] = fn
            fn()
            res[key + '_peak'][name] = ((torch.cuda.max_memory_allocated() - base) /
                                        2**30 if cuda else 'CUDA only')
        except Exception as e:  # a model that cannot run here is a row that says why
            fns.pop(name, None)
            res[key][name] = f'not run: {type(e).__name__}: {str(e).splitlines()[0][:150]}'
            log(f'{name}: {res[key][name]}')
    figures = summarise(interleaved(fns, args.warmup, args.repeats, desc), scale)
    res[key] = {n: res[key].get(n) or figures[n] for n in makers}


def rel_errors(outs, refs) -> tuple:
    """||out - ref|| / ||ref|| of each output (fp32, on the CPU), and the largest."""
    errors = [((o.float().cpu() - r.float().cpu()).norm() / r.float().cpu().norm()).item()
              for o, r in zip(outs, refs)]
    return ' / '.join(f'{e:.1e}' for e in errors), max(errors)


def grad_scaler(device: str, enabled: bool):
    """torch.amp.GradScaler(device) (torch >= 2.3), else torch 2.1's torch.cuda.amp.GradScaler;
    disabled, it passes the loss and the step through."""
    modern = getattr(torch.amp, 'GradScaler', None)
    return modern(device, enabled=enabled) if modern else torch.cuda.amp.GradScaler(enabled=enabled)


def amp_verdict(losses: list) -> tuple:
    """(every loss finite, the last below the first)."""
    finite = all(math.isfinite(v) for v in losses)
    return finite, finite and losses[-1] < losses[0]


def sdpa_kinds(names) -> dict:
    """{kind: [names]}: the SDPA implementations (SDPA_KINDS) among profiler event names."""
    found = {}
    for name in names:
        kind = next((k for k, keys in SDPA_KINDS if any(s in name.lower() for s in keys)), None)
        if kind:
            found.setdefault(kind, []).append(name)
    return found


def sdpa_profile(model, x, dtype) -> str:
    """The SDPA implementations that a profiled forward runs (``dtype`` autocast, None: fp32)."""
    from torch.profiler import ProfilerActivity, profile
    run = infer_fn(model, x, dtype)
    run()  # warm-up
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * x.is_cuda) as p:
        run()
        if x.is_cuda:
            torch.cuda.synchronize()
    return '; '.join(f'{k}: ' + ', '.join(f'`{n[:70]}`' for n in sorted(set(v))[:3])
                     for k, v in sdpa_kinds(
                         e.key for e in p.key_averages()).items()) or 'no SDPA call found'


def gpu_benchmark(args) -> dict:
    """The ``gpu`` command: correctness, AMP, SDPA kernels, speed and memory on one GPU.

    On the GPU machine (Python 3.12, torch with CUDA, no OpenMMLab package), from the
    repository root (on PYTHONPATH: mmdualtoken is not installed there), with the wheels below
    carried in .whl/:

        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 python3 tools/analysis/benchmark.py gpu --out $OUT/gpu.md

    ($OUT/gpu.md becomes docs/gpu.md). The wheels, 3 MB of pure Python, fetched here after
    `echo /.whl/ >> .git/info/exclude`:

        pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl mmengine==0.10.7 mmcv-lite==2.1.0 addict==2.4.0 yapf==0.43.0 platformdirs==4.14.7 termcolor==3.3.0 mmpretrain==1.2.0 mat4py==0.6.0 modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0 importlib-metadata==8.7.0

    The backbone needs the first six; mmengine and mmcv also import numpy, Pillow, pyyaml,
    packaging, rich and cv2 (opencv-python-headless), mmpretrain (the peers) einops,
    markdown, click, zipp and torchvision: the machine's image has those, and timm (the peers'
    fallback). Estimate on one H100: about 3 of the 6 minutes allowed (the inductor compile of
    the S training step 1-2 min; the fp32 CPU references at 1333x800 ~10 s; each timed section
    under 20 s: per model 2 first calls, 3 warm-up calls, 10 rounds).
    """  # noqa: E501
    from mmengine.logging import MMLogger
    MMLogger.get_instance('benchmark', log_level='WARNING')  # no init_weights reports
    dev, (h, w), S, bf16 = args.device, args.det_size, 'DualToken-ViT-S', torch.bfloat16
    size, budget = (args.size, args.size), args.budget or ours(S, {}).max_global_tokens
    res = dict(
        machine=gpu_machine(dev),
        budget=budget,
        peers=peer_source(),
        fp32={},
        ok={},
        bf16={},
        fp16={},
        sdpa={})
    log('correctness: fp32 on the device vs the CPU (TF32 off), autocast vs fp32, SDPA')
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for name in OURS:
        model = ours(name, dict(max_global_tokens=budget)).eval()
        for (hw, n), half in itertools.product(((size, 2), ((h, w), 1)), (None, *HALF)):
            row = f'{name}, {hw[1]}x{hw[0]}' + f', at most {budget} global tokens' * (n == 1)
            x = torch.rand(n, 3, *hw, generator=torch.Generator().manual_seed(0))
            with torch.no_grad(), torch.autocast(dev, HALF.get(half), enabled=bool(half)):
                if half is None:
                    ref, out = model.cpu()(x), model.to(dev)(x.to(dev))
                    res['fp32'][row], worst = rel_errors(out, ref)
                    res['ok'][row] = 'yes' if worst <= TOLERANCE else 'no'
                else:
                    res[half][row] = rel_errors(model(x.to(dev)), out)[0]
        for half in (None, *HALF) if name == S else ():
            res['sdpa'][half or 'fp32'] = sdpa_profile(model, torch.rand(2, 3, *size, device=dev),
                                                       HALF.get(half))
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

    def batch(hw, n, labels=True):
        return (torch.rand(n, 3, *hw,
                           device=dev), torch.randint(0, 1000,
                                                      (n, ), device=dev) if labels else None)

    x, y = batch(size, args.amp_batch)
    for name, half in itertools.product(OURS, HALF):
        log(f'AMP training, {half}: {name}')
        losses, scaler = [], grad_scaler(dev, enabled=half == 'fp16' and dev == 'cuda')
        step = step_fn(ours(name), x, y, HALF[half], scaler, losses)
        for _ in range(args.amp_steps):
            step()
        row = f'{name}, {half}' + ' + GradScaler' * (half == 'fp16')
        for key, value in zip(('first', 'last', 'finite', 'falling'),
                              (losses[0], losses[-1], *amp_verdict(losses))):
            res.setdefault(key, {})[row] = value if key in ('first', 'last') else \
                'yes' if value else 'no'
    del x, y, step
    models = {n: functools.partial(ours if n in OURS else peer, n) for n in args.models}
    timed(res, 'train', {
        n: lambda m=m: step_fn(m(), *batch(size, args.batch), bf16)
        for n, m in models.items()
    }, args, lambda t: args.batch / t, 'training')
    timed(
        res, 'infer', {
            n: lambda m=m: infer_fn(m(),
                                    batch(size, args.infer_batch)[0], torch.float16)
            for n, m in models.items()
        }, args, lambda t: args.infer_batch / t, 'inference')
    dets = {
        'no token budget': dict(max_global_tokens=None),
        f'at most {budget} global tokens': dict(max_global_tokens=budget),
        f'at most {budget} global tokens, with_cp': dict(max_global_tokens=budget, with_cp=True)
    }
    dets = {
        **{
            f'{S}, {r}': functools.partial(ours, S, d)
            for r, d in dets.items()
        },
        **{
            n: functools.partial(peer, n, True)
            for n in DET_PEERS if n in models
        }
    }
    timed(
        res, 'det', {
            r: lambda m=m: step_fn(m(), *batch((h, w), args.det_batch, False), bf16)
            for r, m in dets.items()
        }, args, lambda t: t * 1e3, 'backbone step')

    def compiled():
        if not hasattr(torch, 'compile'):
            raise RuntimeError(f'torch {torch.__version__} has no torch.compile')
        return step_fn(
            torch.compile(ours(S), backend=args.compile_backend), *batch(size, args.batch), bf16)

    timed(
        res, 'compile', {
            'eager': lambda: step_fn(ours(S), *batch(size, args.batch), bf16),
            f'torch.compile, backend {args.compile_backend}': compiled
        }, args, lambda t: args.batch / t, 'torch.compile')
    return res


def gpu_machine(device: str) -> str:
    """The GPU, its memory, CUDA and cuDNN versions, then :func:`machine`."""
    if device != 'cuda':
        return machine()
    gpu = torch.cuda.get_device_properties(0)
    return (f'{gpu.name} ({gpu.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, '
            f'cuDNN {torch.backends.cudnn.version()}; host: {machine()}')


def goals(res: dict, args) -> dict:
    """{goal: (measured, whether within it)}: DualToken-ViT-S against EdgeNeXt-small."""
    (h, w), s, e, found = args.det_size, 'DualToken-ViT-S', 'EdgeNeXt-small', {}
    for goal, section, row, limit, sign in (
        (f"{s} training img/s at least {e}'s", 'train', s, 1.,
         1), (f"{s} peak training memory at most 1.2x {e}'s", 'train_peak', s, 1.2,
              -1), (f"{w}x{h} backbone step with the token budget no slower than {e}'s", 'det',
                    f'{s}, at most {res["budget"]} global tokens', 1., -1)):
        a, b = (res[section].get(n, 'not measured') for n in (row, e))
        a, b = (v[0] if isinstance(v, tuple) else v for v in (a, b))
        if isinstance(a, str) or isinstance(b, str):
            found[goal] = next(v for v in (a, b) if isinstance(v, str)), '-'
            continue
        miss = (limit - a / b) * sign / limit  # the fraction by which it is missed
        found[goal] = f'{a / b:.2f}x', 'yes' if miss <= 0 else \
            f'no: {miss * 100:.0f}% {"short" if sign > 0 else "over"}'
    bad = [row for row, ok in res['finite'].items() if ok != 'yes']
    found['AMP training losses finite (fp16 and bf16, T and S)'] = ('not finite: ' + ', '.join(bad),
                                                                    'no') if bad else ('all finite',
                                                                                       'yes')
    return found


def render_gpu(res: dict, args) -> str:
    """The markdown report of :func:`gpu_benchmark`'s results."""
    dev, (h, w), s, on = args.device, args.det_size, 'DualToken-ViT-S', args.device.upper()
    found = goals(res, args)
    res['goal'], res['within'] = ({g: v[i] for g, v in found.items()} for i in (0, 1))
    lines = [
        '# GPU acceptance run', '',
        f'Generated by `python tools/analysis/benchmark.py gpu {" ".join(args.argv)}`: one '
        'run on one machine; ratios compare figures of this run only.', '',
        f'- Machine: {res["machine"]}.', f'- Device: {dev}' +
        ('.' if dev == 'cuda' else ' (the GPU run\'s code path; what needs CUDA says so).'),
        f'- Peers: random weights, built by {res["peers"]}.',
        f'- Timing: {args.warmup} warm-up call(s), then {args.repeats} interleaved round(s) '
        '(each model once per round; on CUDA, `torch.cuda.synchronize()` after each call); a '
        'figure is the median, the spread in brackets (max - min) / median. Peak memory: '
        '`torch.cuda.max_memory_allocated()` over two calls, less what was allocated before '
        'the model was built.'
    ]
    amp = '' if dev == 'cuda' else ' (enabled on CUDA only: here its disabled pass-through)'
    names = 'aten ops, CUDA kernels' if dev == 'cuda' else 'aten ops; CUDA kernels on CUDA only'
    size = f'{args.size}x{args.size}'
    for title, text, header, columns in [  # rows: those of the first column's section
        ('Goals', f'{s} against EdgeNeXt-small in this run.',
         ['goal', 'measured', 'within the goal'], [('goal', ''), ('within', '')]),
        ('Correctness', f'fp32: outputs on {on} against the CPU\'s, the same weights, TF32 off '
         '(`torch.backends.cuda.matmul.allow_tf32`, `torch.backends.cudnn.allow_tf32`); within '
         f'tolerance: ||a - b|| / ||b|| of every output at most {TOLERANCE:.0e}. bf16, fp16: '
         'autocast against fp32 on the device. One value per output (strides 8, 16, 32); the '
         f'backbone of {DET_CFG}.', [
             'model, input', f'fp32, {on} vs CPU', 'within tolerance', 'bf16 autocast vs fp32',
             'fp16 autocast vs fp32'
         ], [('fp32', ''), ('ok', ''), ('bf16', ''), ('fp16', '')]),
        (f'AMP training, {args.amp_steps} steps on one batch', f'{size}, batch {args.amp_batch},'
         f' AdamW lr 1e-4, fp16 through `GradScaler`{amp}. Falling: the last loss below the '
         'first.', ['model, precision', 'first loss', 'last loss',
                    'all finite', 'falling'], [('first', '.3f'), ('last', '.3f'), ('finite', ''),
                                               ('falling', '')]),
        ('SDPA kernels', f'`scaled_dot_product_attention` in a forward of {s}, {size}: the '
         f'implementation and `torch.profiler` names ({names}).',
         ['precision', 'implementation: profiler names'], [('sdpa', '')]),
        (f'Training step, {size}, batch {args.batch}', 'Forward, cross-entropy, backward, '
         'AdamW step; bf16 autocast.', ['model', 'img/s',
                                        'peak memory (GiB)'], [('train', '.1f'),
                                                               ('train_peak', '.2f')]),
        (f'Inference, {size}, batch {args.infer_batch}', 'fp16 autocast, no autograd.',
         ['model', 'img/s'], [('infer', '.1f')]),
        (f'Backbone step, {w}x{h}, batch {args.det_batch}', 'Forward, the sum of the outputs\' '
         'means (strides 8-32), backward, AdamW step; bf16 autocast; every layer trainable.',
         ['backbone', 'ms', 'peak memory (GiB)'], [('det', '.1f'), ('det_peak', '.2f')]),
        (f'torch.compile, {s} training step', 'The training step above, eager and compiled; '
         'the first call includes the compilation.', ['mode', 'img/s',
                                                      'first call (s)'], [('compile', '.1f'),
                                                                          ('compile_first', '.1f')])
    ]:
        lines += ['', f'## {title}', '', text, ''] + table(res, header, res[columns[0][0]], columns)
    lines += [
        '', '## Rerun', '', '    python tools/analysis/benchmark.py gpu --out docs/gpu.md', '',
        'Where no OpenMMLab package is installed: `python tools/analysis/benchmark.py '
        'gpu --help`. `--device cpu --quick`: every section at tiny sizes on the CPU.'
    ]
    return '\n'.join(lines) + '\n'


def parse_args(argv=None) -> argparse.Namespace:
    """One parser; its command ``cpu`` is the default, ``gpu`` beside it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', metavar='{cpu,gpu}')
    cpu = commands.add_parser('cpu', help='CPU fp32 inference and training (the default)')
    cpu.add_argument('--out', help='markdown report to write, PNG beside it (default: stdout)')
    cpu.add_argument(
        '--threads',
        type=int,
        default=torch.get_num_threads(),
        help='torch and ONNX Runtime threads (default: %(default)s)')
    cpu.add_argument('--models', nargs='+', choices=[*OURS, *PEERS], default=[*OURS, *PEERS])
    cpu.add_argument('--size', type=int, default=224, help='image side (default: 224)')
    cpu.add_argument('--batch', type=int, default=32, help='throughput and training batch')
    cpu.add_argument('--warmup', type=int, default=2, help='untimed calls per model')
    cpu.add_argument('--repeats', type=int, default=7, help='interleaved rounds')
    cpu.add_argument('--onnx-repeats', type=int, default=30, help='ONNX Runtime rounds')
    cpu.add_argument(
        '--exporter',
        choices=EXPORTERS,
        help='ONNX exporter (default: %(default)s)',
        default='torchscript' if dynamo_export_missing() else 'dynamo')
    cpu.add_argument('--det-size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    cpu.add_argument('--det-batch', type=int, default=2)
    cpu.add_argument('--det-repeats', type=int, default=3)
    for what, section in dict(
            onnx='ONNX Runtime latency', det='RetinaNet iteration',
            memory='peak memory measurements').items():
        cpu.add_argument(f'--skip-{what}', action='store_true', help=f'skip the {section}')
    cpu.add_argument('--quick', action='store_true', help=f'for tests: sets {QUICK}')
    gpu = commands.add_parser(
        'gpu',
        help='one GPU: correctness, AMP, speed and memory',
        description=gpu_benchmark.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu.add_argument('--out', help='markdown report to write (default: stdout)')
    gpu.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    gpu.add_argument('--models', nargs='+', choices=[*OURS, *PEERS], default=[*OURS, *PEERS])
    for flag, default in dict(
            size=224, batch=128, infer_batch=256, det_batch=2, warmup=3, repeats=10,
            amp_steps=50).items():
        gpu.add_argument(f'--{flag.replace("_", "-")}', type=int, default=default)
    gpu.add_argument('--det-size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    gpu.add_argument('--compile-backend', default='inductor')
    gpu.add_argument('--quick', action='store_true', help=f'for tests: sets {GPU_QUICK}')
    gpu.set_defaults(amp_batch=32, budget=None)  # budget: the detection configs'
    if not argv or argv[0] not in commands.choices and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'cpu')
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    if args.command == 'gpu':
        vars(args).update(GPU_QUICK if args.quick else {})
        if min(args.size, args.batch, args.infer_batch, args.repeats, args.amp_steps,
               *args.det_size) < 1:
            parser.error('sizes, batches, --repeats and --amp-steps must be positive')
        if args.device == 'cuda' and not torch.cuda.is_available():
            parser.error('CUDA is not available here: --device cpu runs the code path')
        return args
    vars(args).update(QUICK if args.quick else {})
    # the inference rows: each model, and each of ours also converted by fuse_for_cpu
    args.rows = [r for n in args.models for r in ((n, n + FUSED) if n in OURS else (n, ))]
    if min(args.threads, args.size, args.batch, args.repeats, *args.det_size) < 1:
        parser.error('--threads, --size, --batch, --repeats and --det-size must be positive')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.out:  # fail now, not after minutes of timing
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    res = {'cpu': cpu_benchmark, 'gpu': gpu_benchmark}[args.command](args)
    text = (render if args.command == 'cpu' else render_gpu)(res, args)
    if not args.out:
        return print(text)
    with open(args.out, 'w') as f:
        f.write(text)
    if args.command == 'gpu':
        return log(f'wrote {args.out}')
    plot(res, args, osp.splitext(args.out)[0] + '.png')
    log(f'wrote {args.out} and {osp.splitext(args.out)[0]}.png')


if __name__ == '__main__':
    main()
