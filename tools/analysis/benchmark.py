#!/usr/bin/env python
"""Benchmark DualToken-ViT against mmpretrain and mmdet peers of similar size.

    python tools/analysis/benchmark.py --out docs/benchmark.md   # also docs/benchmark.png
    python tools/analysis/benchmark.py cpu --quick --out /tmp/b.md  # tiny sizes, seconds

``cpu`` (the default command), fp32: inference throughput (224, batch 32) and batch-1 latency
of DualToken-ViT T and S, plain and after ``mmdualtoken.deploy.fuse_for_cpu``, against
mmpretrain's ResNet-18, EdgeNeXt-small, EfficientFormer-L1 and ConvNeXt-V2-femto; batch-1
latency in ONNX Runtime (``mmdualtoken.deploy.export_onnx``); the training step (224, batch
32, AdamW); the RetinaNet iteration of configs/retinanet_dualtoken_s.py (1333x800, batch 2)
against mmdet's ResNet-18 in it; the peak memory of each training step in a fresh process.
Each measurement is interleaved: after warm-up, every round calls each model once (a noisy
moment hits all alike); a figure is the median of the rounds, its spread (max - min) /
median. Training runs as tools/train.py on the CPU (freed memory kept in the heap).
"""
import argparse
import copy
import functools
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
from tqdm import tqdm

from mmdualtoken.deploy import export_onnx, fuse_for_cpu
from mmdualtoken.deploy.onnx_export import EXPORTERS, dynamo_export_missing, ort_session
from mmdualtoken.engine.cpu_heap import keep_freed_cpu_memory

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OURS = {'DualToken-ViT-T': 'configs/dualtoken_t_in1k.py',
        'DualToken-ViT-S': 'configs/dualtoken_s_in1k.py'}
PEERS = {'ResNet-18': 'resnet18_8xb32_in1k',
         'EdgeNeXt-small': 'edgenext-small_3rdparty_in1k',
         'EfficientFormer-L1': 'efficientformer-l1_3rdparty_8xb128_in1k',
         'ConvNeXt-V2-femto': 'convnext-v2-femto_3rdparty-fcmae_in1k'}
FUSED = ' + fuse_for_cpu'
# RetinaNet backbones, None: the config's; else (backbone, neck in_channels): mmdet's R18
DET_BACKBONES = {'DualToken-ViT-S': None,
                 'ResNet-18': (dict(type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3),
                                    frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=True),
                                    norm_eval=True, style='pytorch'), [128, 256, 512])}
log = functools.partial(print, file=sys.stderr, flush=True)  # progress, beside tqdm's bars
QUICK = dict(batch=2, repeats=1, warmup=1, onnx_repeats=2, det_size=(96, 128), det_batch=1,
             det_repeats=1)


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


def training_step(model, loss):
    """One training step: ``loss()`` of ``model``, backward, AdamW on the trainable weights."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
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
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=padded, batch_input_shape=padded,
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
    step = (train_step_fn(build(name), batch, size) if kind == 'cls' else
            detector_step_fn(build_detector(name), batch, size))
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
                export_onnx(model, path, (args.size, args.size), exporter=args.exporter,
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
    res = dict(params={n: sum(p.numel() for p in m.parameters()) / 1e6
                       for n, m in models.items()})
    infer = {r: models[r] if r in models else fuse_for_cpu(copy.deepcopy(models[r[:-len(FUSED)]]))
             for r in args.rows}
    times = interleaved({n: inference_fn(m, batch, size) for n, m in infer.items()},
                        args.warmup, args.repeats, f'inference, batch {batch}')
    res['throughput'] = summarise(times, lambda s: batch / s)
    times = interleaved({n: inference_fn(m, 1, size) for n, m in infer.items()},
                        args.warmup, args.repeats, 'inference, batch 1')
    res['latency'] = summarise(times, lambda s: s * 1e3)
    if not args.skip_onnx:
        res['onnx'] = onnx_latency(models, args)
    del infer
    keep_freed_cpu_memory(logger='silent')  # from here on, as tools/train.py on the CPU
    times = interleaved({n: train_step_fn(m, batch, size) for n, m in models.items()},
                        args.warmup, args.repeats, f'training step, batch {batch}')
    res['train'] = summarise(times, lambda s: batch / s)
    del models, times
    jobs = [('cls', n, batch, size) for n in args.models]
    if not args.skip_det:
        dets = {n: detector_step_fn(build_detector(n), args.det_batch, args.det_size)
                for n in DET_BACKBONES}
        times = interleaved(dets, args.warmup, args.det_repeats, 'RetinaNet iteration')
        res['det'] = summarise(times)
        del dets, times
        jobs += [('det', n, args.det_batch, args.det_size) for n in DET_BACKBONES]
    if not args.skip_memory:
        for kind, name, *job in jobs:
            log(f'peak memory, {"training step" if kind == "cls" else "RetinaNet"}: {name}')
            res.setdefault(f'{kind}_peak', {})[name] = peak_rss_gib(
                training_worker, kind, name, *job, args.threads)
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
    return lines + [f'| {n} | ' + ' | '.join(cell(res, s, n, f) for s, f in columns) + ' |'
                    for n in rows]


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
    lines = ['# CPU benchmark', '',
             f'Generated by `python tools/analysis/benchmark.py {" ".join(args.argv)}`: one '
             'run on one machine; compare figures within it, not across runs.', '',
             f'- Machine: {machine()}.',
             f'- Threads: {args.threads}; {args.warmup} warm-up call(s), then {args.repeats} '
             'interleaved round(s) (each model once per round); a figure is the median, the '
             'spread in brackets is (max - min) / median.', '', f'## Inference, fp32, {s}', '',
             '"+ fuse_for_cpu": the model converted by `mmdualtoken.deploy.fuse_for_cpu` (BN '
             f'folded into the convs, GELU fused into the Linear and conv kernels). {onnx}', '']
    lines += table(res, ['model', 'params (M)', f'img/s, batch {b}', 'ms, batch 1',
                         'ONNX Runtime ms, batch 1'], args.rows,
                   [('params', '.2f'), ('throughput', '.1f'), ('latency', '.1f'), ('onnx', '.1f')])
    ips = {n: v[0] for n, v in res['throughput'].items()}
    if ours in ips and peer in ips:
        lines += ['', f'At batch {b}, {ours}{FUSED} runs at {ips[ours + FUSED] / ips[peer]:.2f}x '
                  f'{peer}\'s throughput ({ips[ours] / ips[peer]:.2f}x plain).']
    lines += ['', f'## Training step, {s}, batch {b}', '',
              'Forward, cross-entropy, backward and AdamW step of the plain model, freed '
              'memory kept in the heap as tools/train.py trains on the CPU. Peak memory: the '
              'resident set of a fresh process that builds the model and runs two steps '
              '(Python and torch included).', '']
    lines += table(res, ['model', 'img/s', 'peak memory (GiB)'], args.models,
                   [('train', '.1f'), ('cls_peak', '.2f')])
    if 'det' in res:
        lines += ['', f'## RetinaNet training iteration, {args.det_size[1]}x{args.det_size[0]}, '
                  f'batch {args.det_batch}', '',
                  'configs/retinanet_dualtoken_s.py (FPN neck, RetinaNet head): losses, '
                  'backward and AdamW step; DualToken-ViT-S with the config\'s token budget, '
                  'ResNet-18 as mmdet trains it (stem and stage 1 frozen, BN in eval mode). '
                  'Peak memory as above.', '']
        lines += table(res, ['backbone', 's / iteration', 'peak memory (GiB)'], DET_BACKBONES,
                       [('det', '.3f'), ('det_peak', '.2f')])
    lines += ['', '## Rerun', '', '    python tools/analysis/benchmark.py --out docs/benchmark.md',
              '', 'Options: `--threads N`, `--models ...`, `--skip-onnx`, `--skip-det`, '
              '`--skip-memory`, `--det-size H W`; `--quick` runs everything at tiny sizes.']
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
    right.barh([i + .2 for i in y], [v[0] if isinstance(v, tuple) else 0 for v in onnx], .4,
               color=colours, alpha=.4)
    left.set(yticks=y, yticklabels=rows, xlabel=f'img/s, batch {args.batch} (higher is better)')
    right.set(xlabel='ms, batch 1: PyTorch (solid), ONNX Runtime (light)')
    left.invert_yaxis()
    fig.suptitle(f'CPU fp32, {args.size}x{args.size}, torch {torch.__version__}, '
                 f'threads: {args.threads}')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    """One parser; its command ``cpu`` is the default (``gpu`` may come beside it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', metavar='{cpu}')
    cpu = commands.add_parser('cpu', help='CPU fp32 inference and training (the default)')
    cpu.add_argument('--out', help='markdown report to write, PNG beside it (default: stdout)')
    cpu.add_argument('--threads', type=int, default=torch.get_num_threads(),
                     help='torch and ONNX Runtime threads (default: %(default)s)')
    cpu.add_argument('--models', nargs='+', choices=[*OURS, *PEERS], default=[*OURS, *PEERS])
    cpu.add_argument('--size', type=int, default=224, help='image side (default: 224)')
    cpu.add_argument('--batch', type=int, default=32, help='throughput and training batch')
    cpu.add_argument('--warmup', type=int, default=2, help='untimed calls per model')
    cpu.add_argument('--repeats', type=int, default=7, help='interleaved rounds')
    cpu.add_argument('--onnx-repeats', type=int, default=30, help='ONNX Runtime rounds')
    cpu.add_argument('--exporter', choices=EXPORTERS, help='ONNX exporter (default: %(default)s)',
                     default='torchscript' if dynamo_export_missing() else 'dynamo')
    cpu.add_argument('--det-size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    cpu.add_argument('--det-batch', type=int, default=2)
    cpu.add_argument('--det-repeats', type=int, default=3)
    for what, section in dict(onnx='ONNX Runtime latency', det='RetinaNet iteration',
                              memory='peak memory measurements').items():
        cpu.add_argument(f'--skip-{what}', action='store_true', help=f'skip the {section}')
    cpu.add_argument('--quick', action='store_true', help=f'for tests: sets {QUICK}')
    if not argv or argv[0] not in commands.choices and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'cpu')
    args = parser.parse_args(argv)
    args.argv = argv[1:]
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
    res = {'cpu': cpu_benchmark}[args.command](args)
    if not args.out:
        return print(render(res, args))
    with open(args.out, 'w') as f:
        f.write(render(res, args))
    plot(res, args, osp.splitext(args.out)[0] + '.png')
    log(f'wrote {args.out} and {osp.splitext(args.out)[0]}.png')


if __name__ == '__main__':
    main()
