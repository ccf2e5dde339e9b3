#!/usr/bin/env python
"""Benchmark DualToken-ViT against mmpretrain and mmdet peers of similar size.

    python tools/analysis/benchmark.py --out docs/benchmark.md
    python tools/analysis/benchmark.py gpu --out docs/gpu.md  # one GPU

``cpu`` (the default), fp32: DualToken-ViT T and S (plain and after ``fuse_for_cpu``) against
mmpretrain's ResNet-18, EdgeNeXt-small, EfficientFormer-L1 and ConvNeXt-V2-femto: inference
in PyTorch and ONNX Runtime, training step, RetinaNet iteration, peak memory. ``gpu``:
correctness, AMP, SDPA, speed and memory on one GPU. A figure is the median of interleaved
rounds (each round calls every model once, so a noisy moment hits all alike).
"""
import argparse
import copy
import functools
import itertools
import math
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from multiprocessing import get_context

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mmdualtoken import DualTokenViT
from mmdualtoken.deploy import export_onnx, fuse_for_cpu
from mmdualtoken.deploy.onnx_export import EXPORTERS, dynamo_export_missing, ort_session
from mmdualtoken.engine.cpu_heap import keep_freed_cpu_memory
from mmdualtoken.utils import host_description

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OURS = {'DualToken-ViT-T': 'tiny', 'DualToken-ViT-S': 'small'}  # as configs/dualtoken_*_in1k.py
S = 'DualToken-ViT-S'
# the peers: mmpretrain's model names, timm's where mmpretrain does not import (the GPU machine)
PEERS = {
    'ResNet-18': 'resnet18_8xb32_in1k',
    'EdgeNeXt-small': 'edgenext-small_3rdparty_in1k',
    'EfficientFormer-L1': 'efficientformer-l1_3rdparty_8xb128_in1k',
    'ConvNeXt-V2-femto': 'convnext-v2-femto_3rdparty-fcmae_in1k'
}
TIMM = dict(zip(PEERS, ('resnet18', 'edgenext_small', 'efficientformer_l1', 'convnextv2_femto')))
# peer backbones with outputs at strides 8-32: (mmpretrain backbone overrides, timm indices)
DET_PEERS = {
    'ResNet-18': (dict(out_indices=(1, 2, 3)), (2, 3, 4)),
    'EdgeNeXt-small': (dict(out_indices=(1, 2, 3), gap_before_final_norm=False), (1, 2, 3))
}
RETINANET = {
    S: osp.join(REPO_ROOT, 'configs/retinanet_dualtoken_s.py'),
    'ResNet-18': 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
}
DET_CFG = 'configs/_base_/models/dualtoken_s_det_backbone.py'
FUSED = ' + fuse_for_cpu'
QUICK = dict(batch=2, repeats=1, det_size=(96, 128), det_batch=1)
GPU_QUICK = dict(QUICK, size=64, infer_batch=2, amp_steps=3, amp_batch=2, budget=4)
GPU_QUICK.update(compile_backend='eager')
# the integer options of each command and their defaults
CPU_INTS = dict(size=224, batch=32, det_batch=2, repeats=7)
GPU_INTS = dict(size=224, batch=128, infer_batch=256, det_batch=2, repeats=10)
GPU_INTS.update(amp_steps=50, amp_batch=32)
TOLERANCE = 1e-4  # fp32 on the device vs the CPU: ||a - b|| / ||b|| of each output
HALF = {'bf16': torch.bfloat16, 'fp16': torch.float16}
# SDPA implementations by profiler names (aten ops, CUDA kernels), the first match winning:
# cuDNN's kernel names also say 'flash'
SDPA_KINDS = (('cudnn', ('cudnn_attention', 'fort_native_sdpa')), ('flash', ('flash', )),
              ('memory-efficient', ('efficient_attention', 'memeffattention',
                                    'fmha_cutlass')), ('math', ('attention_math', )))
log = functools.partial(print, file=sys.stderr, flush=True)  # progress, beside tqdm's bars
try:  # progress bars where tqdm is installed; the bare GPU machine may lack it
    from tqdm import tqdm
except ImportError:

    def tqdm(iterable, **_):
        return iterable


# --------------------------------------------------------------- timing and memory (both)
def interleaved(fns: dict, repeats: int, desc: str) -> dict:
    """Seconds per call of each function in ``repeats`` rounds in which each is called once:
    {name: [seconds of each round]}."""
    times = {name: [] for name in fns}
    for _ in tqdm(range(repeats), desc=desc, unit='round', file=sys.stderr):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict, scale=lambda s: s) -> dict:
    """{name: (scale(median seconds), spread)} of :func:`interleaved`'s times; the spread is
    (max - min) / median."""
    medians = {n: statistics.median(t) for n, t in times.items()}
    return {n: (scale(m), (max(times[n]) - min(times[n])) / m) for n, m in medians.items()}


def timed(res: dict, key: str, models: dict, step, args, scale, desc: str) -> None:
    """Time ``step(model)`` (a function to call) of each model (``models``: {name: module or
    builder}): two calls alone (the warm-up), then all :func:`interleaved`. res[key]: the
    scaled figures or why a model did not run; res[key + '_first']: seconds of the first call;
    res[key + '_peak']: on CUDA, the peak GiB allocated since before the build (model, inputs,
    gradients, AdamW state, activations)."""
    fns, cuda = {}, args.device == 'cuda'
    res[key], res[key + '_first'], res[key + '_peak'] = {}, {}, {}
    for name, make in models.items():
        log(f'{desc}, first calls: {name}')
        try:
            if cuda:
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            fn = step(make if isinstance(make, torch.nn.Module) else make())
            fn = functools.partial(lambda f: (f(), torch.cuda.synchronize()), fn) if cuda else fn
            start = time.perf_counter()
            fn()
            res[key + '_first'][name] = time.perf_counter() - start
            fns[name] = fn
            fn()
            if cuda:
                res[key + '_peak'][name] = (torch.cuda.max_memory_allocated() - base) / 2**30
        except Exception as e:  # a model that cannot run here is a row that says why
            fns.pop(name, None)
            res[key][name] = f'not run: {type(e).__name__}: {str(e).splitlines()[0][:150]}'
            log(f'{name}: {res[key][name]}')
    figures = summarise(interleaved(fns, args.repeats, desc), scale)
    res[key] = {n: res[key].get(n) or figures[n] for n in models}


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


# --------------------------------------------------------------------- models and steps
class LinearHead(torch.nn.Linear):
    """configs/dualtoken_*_in1k.py's head: a linear classifier of the backbone's last output."""

    def forward(self, feats):
        return super().forward(feats[-1])


def ours(name: str, det: dict = None) -> torch.nn.Module:
    """DualToken-ViT ``name`` without mmpretrain, initialised as in training: the classifier of
    configs/dualtoken_*_in1k.py, or the backbone of DET_CFG with the overrides ``det``."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    MMLogger.get_instance('benchmark', log_level='WARNING')  # no init_weights reports
    torch.manual_seed(0)
    if det is None:
        net = DualTokenViT(
            OURS[name], out_indices=(2, ), gap_before_final_norm=True, drop_path_rate=.1)
    else:
        cfg = Config.fromfile(osp.join(REPO_ROOT, DET_CFG)).dualtoken_s_det_backbone.to_dict()
        cfg.update(arch=OURS[name], init_cfg=None, **det)
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
        return f'neither ({why}; timm: {e}): carry mmpretrain (docs/development.md)'


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
    features = dict(features_only=True, out_indices=DET_PEERS[name][1]) if det else {}
    return timm.create_model(TIMM[name], pretrained=False, **features)


def classifier(name: str) -> torch.nn.Module:
    return ours(name) if name in OURS else peer(name)


def training_step(model, loss, scaler=None):
    """One training step: ``loss()`` of ``model``, backward, AdamW on the trainable weights
    (through ``scaler``, a GradScaler, where given)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = scaler or grad_scaler('cpu', enabled=False)  # disabled: loss and step pass through

    def run():
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss()).backward()
        scaler.step(optimizer)
        scaler.update()

    return run


def step_fn(model, x, y, dtype=None, scaler=None, losses=None):
    """:func:`training_step` on ``x``'s device under ``dtype`` autocast (None: fp32):
    cross-entropy against ``y``, or for a backbone (``y`` None) the sum of its outputs' means;
    each loss appended to ``losses`` where given."""

    def loss():
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            out = model(x)
            value = F.cross_entropy(out, y) if y is not None else sum(o.mean() for o in out)
        if losses is not None:
            losses.append(value.item())
        return value

    model.to(x.device).train()  # (mmpretrain's ResNet.train returns None)
    return training_step(model, loss, scaler)


def infer_fn(model, x, dtype=None):
    """A forward under ``dtype`` autocast (None: fp32), without autograd."""
    model.to(x.device).eval()

    def run():
        with torch.no_grad(), torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            model(x)

    return run


def batch(size: tuple, n: int, device='cpu', labels=True) -> tuple:
    """A random batch of ``n`` images of ``size`` and (``labels``) ImageNet labels."""
    x = torch.rand(n, 3, *size, device=device)
    return x, torch.randint(0, 1000, (n, ), device=device) if labels else None


def detector(name: str) -> torch.nn.Module:
    """The RetinaNet RETINANET[name] (mmdet), random weights, in training mode."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    path = RETINANET[name]
    cfg = (Config.fromfile(path) if osp.isfile(path) else get_config(path)).model
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg).train()


def detector_step_fn(model, n: int, size: tuple):
    """A RetinaNet training iteration: the losses of an mmdet-padded batch of ``n`` images of
    ``size`` with one box each, backward, AdamW."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    (h, w), padded = size, tuple(-(-s // 32) * 32 for s in size)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=padded, scale_factor=(1., 1.))
    samples = [DetDataSample(metainfo=dict(meta, batch_input_shape=padded)) for _ in range(n)]
    for sample in samples:
        box = torch.tensor([[w * .1, h * .1, w * .4, h * .6]])
        sample.gt_instances = InstanceData(bboxes=box, labels=torch.tensor([3]))
    x = torch.rand(n, 3, *padded)
    return training_step(model, lambda: model.parse_losses(model.loss(x, samples))[0])


def training_worker(kind: str, name: str, n: int, size: tuple, threads: int) -> None:
    """Two training steps ('cls') or RetinaNet iterations ('det') of ``name`` as tools/train.py
    runs them on the CPU: the process function of the peak-memory measurement."""
    torch.set_num_threads(threads)
    keep_freed_cpu_memory(logger='silent')
    if kind == 'cls':
        step = step_fn(classifier(name), *batch(size, n))
    else:
        step = detector_step_fn(detector(name), n, size)
    for _ in range(2):  # the second step holds the optimizer state and the gradients
        step()


# -------------------------------------------------------------------------------- cpu
def onnx_session(model, path: str, args):
    """``model`` exported to ``path`` by ``mmdualtoken.deploy.export_onnx``, in ONNX Runtime."""
    shape = (args.size, args.size)
    export_onnx(model, path, shape, exporter=args.exporter, output_names=['scores'])
    return ort_session(path, args.threads)


def cpu_benchmark(args) -> dict:
    """Every measurement of the ``cpu`` command: {section: {row: (value, spread) or GiB}}."""
    torch.set_num_threads(args.threads)
    size, n = (args.size, args.size), args.batch
    models = {m: classifier(m).eval() for m in tqdm(args.models, desc='building', file=sys.stderr)}
    res = dict(params={m: sum(p.numel() for p in v.parameters()) / 1e6 for m, v in models.items()})
    infer = {
        r: models[r] if r in models else fuse_for_cpu(copy.deepcopy(models[r[:-len(FUSED)]]))
        for r in args.rows
    }
    for key, b, scale in (('throughput', n, lambda s: n / s), ('latency', 1, lambda s: s * 1e3)):
        x = batch(size, b)[0]
        timed(res, key, infer, lambda m: infer_fn(m, x), args, scale, f'inference, batch {b}')
    if not args.skip_onnx:
        feed = {'image': batch(size, 1)[0].numpy()}
        with tempfile.TemporaryDirectory() as tmp:
            sessions = {
                m: functools.partial(onnx_session, v, f'{tmp}/{m}.onnx', args)
                for m, v in models.items()
            }
            timed(res, 'onnx', sessions, lambda s: functools.partial(s.run, None, feed), args,
                  lambda s: s * 1e3, f'ONNX Runtime ({args.exporter} exporter), batch 1')
    del infer
    keep_freed_cpu_memory(logger='silent')  # from here on, as tools/train.py on the CPU
    x, y = batch(size, n)
    timed(res, 'train', models, lambda m: step_fn(m, x, y), args, lambda s: n / s,
          f'training step, batch {n}')
    del models
    jobs = [('cls', m, n, size) for m in args.models]
    if not args.skip_det:
        dets = {m: functools.partial(detector, m) for m in RETINANET}
        timed(res, 'det', dets, lambda m: detector_step_fn(m, args.det_batch, args.det_size), args,
              lambda s: s, 'RetinaNet iteration')
        jobs += [('det', m, args.det_batch, args.det_size) for m in RETINANET]
    for kind, name, *job in [] if args.skip_memory else jobs:
        log(f'peak memory, {"training step" if kind == "cls" else "RetinaNet"}: {name}')
        res.setdefault(f'{kind}_peak', {})[name] = peak_rss_gib(training_worker, kind, name, *job,
                                                                args.threads)
    if not args.skip_kernels:
        res.update(kernel_counts(args))
    return res


# -------------------------------------------------------------------------------- gpu
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
    found = sdpa_kinds(e.key for e in p.key_averages())
    return '; '.join(f'{k}: ' + ', '.join(f'`{n[:70]}`' for n in sorted(set(v))[:3])
                     for k, v in found.items()) or 'no SDPA call found'


# ----------------------------------------------------------------------------- kernels
# aten ops that compute nothing: views are excluded by their schema, these by name
NO_KERNEL = frozenset(('empty', 'new_empty', 'empty_strided', 'new_empty_strided', 'empty_like',
                       'detach', 'alias', 'lift_fresh', '_unsafe_view'))
# the post-grad graph nodes inductor runs as library calls, not as kernels it generates:
# GEMMs by name, convolutions and attention (forward and backward) by part of the name
EXTERN, EXTERN_PARTS = frozenset(('mm', 'addmm', 'bmm', 'baddbmm')), ('convolution', 'attention')


def is_extern(node) -> bool:
    name = getattr(getattr(node.target, 'overloadpacket', None), '__name__', '')
    return node.op == 'call_function' and (name in EXTERN or any(p in name for p in EXTERN_PARTS))


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that reach the dispatcher and compute (device-independent: on a GPU
    each launches at least one kernel): views and bare allocations are left out."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view and func.overloadpacket.__name__ not in NO_KERNEL
        return func(*args, **(kwargs or {}))


def eager_ops(model, x, y) -> tuple:
    """Ops of one training-mode forward, and of forward, cross-entropy and backward."""
    model.train()
    with OpCounter() as forward:
        model(x)
    with OpCounter() as step:
        F.cross_entropy(model(x), y).backward()
    return forward.count, step.count


def compiled_counts(model, x, y, inductor: bool) -> tuple:
    """torch.compile of the classifier: graphs and graph breaks of its forward
    (``torch._dynamo.explain``), then with ``inductor`` the kernels inductor generates for
    forward and backward, and its library calls (GEMMs, convolutions, attention)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.train())(x)
    graphs, breaks = explained.graph_count, explained.graph_break_count
    if not inductor:
        return graphs, breaks, '-', '-'
    import torch._inductor.config as inductor_config
    from torch._inductor import metrics
    extern = []

    def count_extern(graph):
        extern.extend(filter(is_extern, graph.nodes))

    torch._dynamo.reset()
    metrics.reset()
    with inductor_config.patch(post_grad_custom_post_pass=count_extern):
        F.cross_entropy(torch.compile(model)(x), y).backward()
    return graphs, breaks, metrics.generated_kernel_count, len(extern)


def kernel_counts(args) -> dict:
    """{column: {model: count}}: eager ops and compiled graphs, breaks and kernels of each
    classifier at ``args.size``, batch ``args.kernel_batch``."""
    res = {k: {} for k in ('fwd', 'step', 'graphs', 'breaks', 'generated', 'extern')}
    x, y = batch((args.size, args.size), args.kernel_batch)
    for name in tqdm(args.models, desc='kernel counts'):
        model = classifier(name)
        res['fwd'][name], res['step'][name] = eager_ops(model, x, y)
        counts = compiled_counts(model, x, y, args.inductor)
        for key, value in zip(('graphs', 'breaks', 'generated', 'extern'), counts):
            res[key][name] = value
    return res


def kernel_section(res: dict, args) -> tuple:
    """The report section of :func:`kernel_counts`' results."""
    text = (f'Device-independent counts for one training step of each classifier at '
            f'{args.size}x{args.size} (batch {args.kernel_batch}; the counts do not depend on '
            'it), training mode. Eager: the aten ops that reach the dispatcher and compute '
            '(views and bare allocations left out), each at least one kernel launch on a GPU, '
            'in a forward, and in forward, cross-entropy and backward (no optimizer). '
            '`torch.compile`: the graphs and graph breaks dynamo finds in the forward; with '
            '`--inductor`, the kernels inductor generates for forward and backward on this '
            "machine's C++ backend (a GPU's Triton backend fuses differently) and the library "
            'calls it makes (GEMMs, convolutions, attention). Rewrite this section alone with '
            f'`python tools/analysis/benchmark.py kernels{" --inductor" * args.inductor} --out '
            'docs/benchmark.md`.')
    header = [
        'model', 'eager ops, forward', 'eager ops, forward + backward', 'compiled graphs',
        'graph breaks', 'inductor kernels', 'inductor library calls'
    ]
    columns = [(k, '') for k in ('fwd', 'step', 'graphs', 'breaks', 'generated', 'extern')]
    return (KERNELS_TITLE, text, header, args.models, columns)


KERNELS_TITLE = 'Kernels per training step'


def splice_section(path: str, section: str) -> str:
    """The markdown of ``path`` with its section of the same title replaced by ``section``
    (or ``section`` placed before '## Rerun')."""
    with open(path) as f:
        text = f.read()
    title = section.split('\n', 1)[0]
    start = text.find(title + '\n')
    if start < 0:
        start = end = text.index('## Rerun')
    else:
        end = text.index('\n## ', start + len(title)) + 1
    return text[:start] + section + '\n' + text[end:]


def gpu_benchmark(args) -> dict:
    """The ``gpu`` command: correctness, AMP, SDPA kernels, speed and memory on one GPU.

    It needs torch, mmengine and mmcv-lite (no compiled ops), and mmpretrain or timm for the
    peers: docs/development.md says how to run it on a bare GPU machine.
    """
    dev, (h, w), bf16 = args.device, args.det_size, torch.bfloat16
    size, budget = (args.size, args.size), args.budget or ours(S, {}).max_global_tokens
    res = dict(machine=machine(dev), budget=budget, peers=peer_source())
    res.update({k: {} for k in 'fp32 ok bf16 fp16 sdpa first last finite falling'.split()})
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
    x, y = batch(size, args.amp_batch, dev)
    for name, half in itertools.product(OURS, HALF):
        log(f'AMP training, {half}: {name}')
        losses, scaler = [], grad_scaler(dev, enabled=half == 'fp16' and dev == 'cuda')
        step = step_fn(ours(name), x, y, HALF[half], scaler, losses)
        for _ in range(args.amp_steps):
            step()
        row = f'{name}, {half}' + ' + GradScaler' * (half == 'fp16')
        res['first'][row], res['last'][row] = losses[0], losses[-1]
        res['finite'][row], res['falling'][row] = ('yes' if v else 'no'
                                                   for v in amp_verdict(losses))
    del x, y, step
    models = {m: functools.partial(classifier, m) for m in args.models}

    def train(model):
        return step_fn(model, *batch(size, args.batch, dev), bf16)

    def infer(model):
        return infer_fn(model, batch(size, args.infer_batch, dev)[0], torch.float16)

    def backbone_step(model):
        return step_fn(model, *batch((h, w), args.det_batch, dev, labels=False), bf16)

    timed(res, 'train', models, train, args, lambda t: args.batch / t, 'training')
    timed(res, 'infer', models, infer, args, lambda t: args.infer_batch / t, 'inference')
    budgeted = f'{S}, at most {budget} global tokens'
    dets = {f'{S}, no token budget': functools.partial(ours, S, dict(max_global_tokens=None))}
    dets[budgeted] = functools.partial(ours, S, dict(max_global_tokens=budget))
    dets[budgeted + ', with_cp'] = functools.partial(ours, S,
                                                     dict(max_global_tokens=budget, with_cp=True))
    dets.update({m: functools.partial(peer, m, True) for m in DET_PEERS if m in models})
    timed(res, 'det', dets, backbone_step, args, lambda t: t * 1e3, 'backbone step')
    compiled = functools.partial(torch.compile, backend=args.compile_backend)
    modes = {'eager': ours(S), f'torch.compile, backend {args.compile_backend}': compiled(ours(S))}
    timed(res, 'compile', modes, train, args, lambda t: args.batch / t, 'torch.compile')
    for key in ('train', 'det') if dev != 'cuda' else ():  # the CUDA allocator's peaks
        res[key + '_peak'] = dict.fromkeys(res[key], 'CUDA only')
    return res


def goals(res: dict, args) -> dict:
    """{goal: (measured, whether within it)}: DualToken-ViT-S against EdgeNeXt-small."""
    (h, w), e, found = args.det_size, 'EdgeNeXt-small', {}
    budgeted = f'{S}, at most {res["budget"]} global tokens'
    # (goal, section, our row, limit of our figure / EdgeNeXt's, 1: at least, -1: at most)
    checks = [(f"{S} training img/s at least {e}'s", 'train', S, 1., 1)]
    checks.append((f"{S} peak training memory at most 1.2x {e}'s", 'train_peak', S, 1.2, -1))
    checks.append((f"{w}x{h} backbone step with the token budget no slower than {e}'s", 'det',
                   budgeted, 1., -1))
    for goal, section, row, limit, sign in checks:
        a, b = (res[section].get(n, 'not measured') for n in (row, e))
        a, b = (v[0] if isinstance(v, tuple) else v for v in (a, b))
        if isinstance(a, str) or isinstance(b, str):
            found[goal] = next(v for v in (a, b) if isinstance(v, str)), '-'
            continue
        miss = (limit - a / b) * sign / limit  # the fraction by which it is missed
        found[goal] = f'{a / b:.2f}x', 'yes' if miss <= 0 else \
            f'no: {miss * 100:.0f}% {"short" if sign > 0 else "over"}'
    bad = [row for row, ok in res['finite'].items() if ok != 'yes']
    amp = ('not finite: ' + ', '.join(bad), 'no') if bad else ('all finite', 'yes')
    found['AMP training losses finite (fp16 and bf16, T and S)'] = amp
    return found


# ----------------------------------------------------------------------------- reports
def machine(device: str = 'cpu') -> str:
    """CPU model, cores, OS, Python and torch versions; on CUDA the GPU first."""
    host = host_description(torch.__version__)
    if device != 'cuda':
        return host
    gpu = torch.cuda.get_device_properties(0)
    return (f'{gpu.name} ({gpu.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, '
            f'cuDNN {torch.backends.cudnn.version()}; host: {host}')


def cell(res: dict, section: str, name: str, fmt: str = '.1f') -> str:
    """A table cell: value (spread), a bare value, an error, or '-' when not measured."""
    value = res.get(section, {}).get(name)
    if isinstance(value, tuple):
        return f'{value[0]:{fmt}} ({value[1] * 100:.0f}%)'
    return '-' if value is None else value if isinstance(value, str) else f'{value:{fmt}}'


def report(res: dict, args, title: str, bullets: list, sections: list, rerun: str) -> str:
    """Markdown: ``title``, how the report was made (``bullets`` among it), then per section
    (title, text, header, rows, columns: (result key, format) of each cell after the row's
    name) its table, then the command that rewrites it."""
    command = ' '.join(['gpu'] * (args.command == 'gpu') + args.argv)
    lines = [
        f'# {title}', '', f'Generated by `python tools/analysis/benchmark.py {command}`: '
        'one run on one machine; compare figures within it, not across runs.', ''
    ]
    lines += [f'- Machine: {machine(args.device)}.'] + [f'- {b}' for b in bullets]
    lines.append(f'- Timing: 2 warm-up calls, then {args.repeats} interleaved '
                 'rounds (each model once per round); a figure is the median, the spread in '
                 'brackets (max - min) / median.')
    for section in sections:
        lines += [''] + section_lines(res, *section)
    lines += ['', '## Rerun', '', f'    python tools/analysis/benchmark.py {rerun}']
    return '\n'.join(lines) + '\n'


def section_lines(res: dict, title: str, text: str, header: list, rows, columns) -> list:
    """A report section: its title, text, and the table of ``rows`` (columns: (result key,
    format) of each cell after the row's name)."""
    lines = [f'## {title}', '', text, '', '| ' + ' | '.join(header) + ' |']
    lines.append('|---' * len(header) + '|')
    for n in rows:
        lines.append(f'| {n} | ' + ' | '.join(cell(res, k, n, f) for k, f in columns) + ' |')
    return lines


def render(res: dict, args) -> str:
    """The markdown report of :func:`cpu_benchmark`'s results."""
    b, s, r18 = args.batch, f'{args.size}x{args.size}', 'ResNet-18'
    ips = {n: v[0] for n, v in res['throughput'].items()}
    text = ('"+ fuse_for_cpu": converted by `mmdualtoken.deploy.fuse_for_cpu` (BN folded into '
            'the convs, GELU fused into the Linear and conv kernels).')
    if 'onnx' in res:
        text += (f' ONNX Runtime {version("onnxruntime")}: the graph of '
                 f'`mmdualtoken.deploy.export_onnx` ({args.exporter} exporter).')
    if {S, r18} <= set(ips):
        text += (f' At batch {b}, {S}{FUSED} runs at {ips[S + FUSED] / ips[r18]:.2f}x {r18}\'s '
                 f'throughput ({ips[S] / ips[r18]:.2f}x plain).')
    header = ['model', 'params (M)', f'img/s, batch {b}', 'ms, batch 1', 'ONNX Runtime ms, batch 1']
    columns = [('params', '.2f'), ('throughput', '.1f'), ('latency', '.1f'), ('onnx', '.1f')]
    sections = [(f'Inference, fp32, {s}', text, header, args.rows, columns)]
    peak = ('Peak memory: the resident set of a fresh process that builds the model and runs two '
            'steps.')
    text = ('Forward, cross-entropy, backward and AdamW step, freed memory kept in the heap as '
            f'tools/train.py trains on the CPU. {peak}')
    header, columns = ['model', 'img/s', 'peak memory (GiB)'], [('train', '.1f'),
                                                                ('cls_peak', '.2f')]
    sections.append((f'Training step, {s}, batch {b}', text, header, args.models, columns))
    if 'det' in res:
        text = ('Losses, backward and AdamW step of configs/retinanet_dualtoken_s.py (S with the '
                "config's token budget) and of mmdet's retinanet_r18_fpn_1x_coco.py. " + peak)
        header = ['backbone', 's / iteration', 'peak memory (GiB)']
        title = f'RetinaNet training iteration, {args.det_size[1]}x{args.det_size[0]}, batch'
        sections.append(
            (f'{title} {args.det_batch}', text, header, RETINANET, [('det', '.3f'),
                                                                    ('det_peak', '.2f')]))
    if 'fwd' in res:
        sections.append(kernel_section(res, args))
    return report(res, args, 'CPU benchmark', [f'Threads: {args.threads}.'], sections,
                  '--out docs/benchmark.md')


def render_gpu(res: dict, args) -> str:
    """The markdown report of :func:`gpu_benchmark`'s results."""
    dev, (h, w), size = args.device, args.det_size, f'{args.size}x{args.size}'
    found = goals(res, args)
    res['goal'], res['within'] = ({g: v[i] for g, v in found.items()} for i in (0, 1))
    bullets = [f'Peers: random weights, built by {res["peers"]}.']
    bullets.append('On CUDA, `torch.cuda.synchronize()` after each call; peak memory: '
                   '`torch.cuda.max_memory_allocated()` over the first two calls, less what was '
                   'allocated before the model was built.' if dev ==
                   'cuda' else f'Device: {dev}, the GPU run\'s code path; what needs CUDA says so.')
    amp = '' if dev == 'cuda' else ' (on the CPU, its disabled pass-through)'
    sections = [
        ('Goals', f'{S} against EdgeNeXt-small in this run.',
         ['goal', 'measured', 'within the goal'], res['goal'], [('goal', ''), ('within', '')]),
        ('Correctness', f'fp32: {dev} against the CPU, the same weights, TF32 off; within '
         f'tolerance: ||a - b|| / ||b|| of every output at most {TOLERANCE:.0e}. bf16, fp16: '
         f'autocast against fp32. One value per output (strides 8, 16, 32) of {DET_CFG}.', [
             'model, input', f'fp32, {dev} vs CPU', 'within tolerance', 'bf16 autocast vs fp32',
             'fp16 autocast vs fp32'
         ], res['fp32'], [(k, '') for k in ('fp32', 'ok', 'bf16', 'fp16')]),
        (f'AMP training, {args.amp_steps} steps on one batch', f'{size}, batch {args.amp_batch}, '
         f'AdamW lr 1e-4, fp16 through `GradScaler`{amp}; falling: the last loss below the first.',
         ['model, precision', 'first loss', 'last loss', 'all finite',
          'falling'], res['first'], [('first', '.3f'), ('last', '.3f'), ('finite', ''),
                                     ('falling', '')]),
        ('SDPA kernels', f'`scaled_dot_product_attention` in a forward of {S}, {size}: the '
         'implementation, and the names of its aten ops and CUDA kernels in `torch.profiler`.',
         ['precision', 'implementation: profiler names'], res['sdpa'], [('sdpa', '')]),
        (f'Training step, {size}, batch {args.batch}', 'Forward, cross-entropy, backward, AdamW '
         'step; bf16 autocast.', ['model', 'img/s',
                                  'peak memory (GiB)'], res['train'], [('train', '.1f'),
                                                                       ('train_peak', '.2f')]),
        (f'Inference, {size}, batch {args.infer_batch}', 'fp16 autocast, no autograd.',
         ['model', 'img/s'], res['infer'], [('infer', '.1f')]),
        (f'Backbone step, {w}x{h}, batch {args.det_batch}', 'Forward, the sum of the outputs\' '
         'means, backward, AdamW step; bf16 autocast; every layer trainable.',
         ['backbone', 'ms', 'peak memory (GiB)'], res['det'], [('det', '.1f'),
                                                               ('det_peak', '.2f')]),
        (f'torch.compile, {S} training step', 'The training step above, eager and compiled; the '
         'first call includes the compilation.', ['mode', 'img/s', 'first call (s)'],
         res['compile'], [('compile', '.1f'), ('compile_first', '.1f')])
    ]
    return report(res, args, 'GPU acceptance run', bullets, sections, 'gpu --out docs/gpu.md')


# ---------------------------------------------------------------------------- commands
def positive(text: str) -> int:
    """The argparse type of the sizes, batches and counts."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
    return int(text)


def parse_args(argv=None) -> argparse.Namespace:
    """One parser; its command ``cpu`` is the default, ``gpu`` beside it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', metavar='{cpu,gpu,kernels}')
    cpu = commands.add_parser('cpu', help='CPU fp32 inference and training (the default)')
    gpu = commands.add_parser('gpu', help='one GPU: correctness, AMP, speed and memory')
    kernels = commands.add_parser(
        'kernels', help="kernel counts alone, written into --out's section of them")
    for command in (cpu, gpu, kernels):
        command.add_argument('--out', help='markdown report to write')
        command.add_argument(
            '--models', nargs='+', choices=[*OURS, *PEERS], default=[*OURS, *PEERS])
        command.add_argument('--det-size', type=positive, nargs=2, default=(800, 1333))
        command.add_argument('--quick', action='store_true', help='tiny sizes, for the tests')
    threads = torch.get_num_threads()
    exporter = 'torchscript' if dynamo_export_missing() else 'dynamo'
    cpu.add_argument('--threads', type=positive, default=threads, help='torch and ORT threads')
    cpu.add_argument('--exporter', choices=EXPORTERS, default=exporter, help='ONNX exporter')
    gpu.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    gpu.add_argument('--compile-backend', default='inductor')
    for command, ints in ((cpu, CPU_INTS), (gpu, GPU_INTS)):
        for flag, default in ints.items():
            command.add_argument(f'--{flag.replace("_", "-")}', type=positive, default=default)
    for what in ('onnx', 'det', 'memory', 'kernels'):  # ORT, RetinaNet, peak memory, counts
        cpu.add_argument(f'--skip-{what}', action='store_true')
    for command in (cpu, kernels):
        command.add_argument(
            '--inductor',
            action='store_true',
            help='count the kernels inductor generates '
            '(compiles forward and backward of every model: minutes each)')
        command.add_argument('--kernel-batch', type=positive, default=2)
    kernels.add_argument('--size', type=positive, default=224)
    kernels.set_defaults(device='cpu')
    gpu.set_defaults(budget=None)  # budget: the detection configs'
    cpu.set_defaults(device='cpu')
    if not argv or argv[0] not in commands.choices and argv[0] not in ('-h', '--help'):
        argv.insert(0, 'cpu')
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    if args.quick:
        vars(args).update(GPU_QUICK if args.command == 'gpu' else QUICK)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('CUDA is not available here: --device cpu runs the code path')
    # the cpu inference rows: each model, and each of ours also converted by fuse_for_cpu
    args.rows = [r for n in args.models for r in ((n, n + FUSED) if n in OURS else (n, ))]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.out:  # fail now, not after minutes of timing
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    if args.command == 'kernels':
        res = kernel_counts(args)
        text = '\n'.join(section_lines(res, *kernel_section(res, args))) + '\n'
        if args.out and osp.isfile(args.out):  # the report's section, the rest kept
            text = splice_section(args.out, text)
    else:
        res = {'cpu': cpu_benchmark, 'gpu': gpu_benchmark}[args.command](args)
        text = (render if args.command == 'cpu' else render_gpu)(res, args)
    if not args.out:
        return print(text)
    with open(args.out, 'w') as f:
        f.write(text)
    log(f'wrote {args.out}')


if __name__ == '__main__':
    main()
