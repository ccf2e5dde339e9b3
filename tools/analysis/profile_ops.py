#!/usr/bin/env python
"""Op composition of DualToken-ViT-S against ResNet-18 and EdgeNeXt-small: what dominates.

    python tools/analysis/profile_ops.py [--threads 1] [--quick] [--out docs/profile.md]

Models are built as tools/analysis/benchmark.py builds them (random weights, fp32, 224). Per
model and scenario it reports exact counts and indicative time shares:

- batch-1 eager inference (no_grad) and a training step (forward, backward, AdamW; batch 8,
  ``--quick``: 2): aten/mkldnn ops dispatched per call (a TorchDispatchMode counter) and
  torch.profiler self CPU time, both grouped into op classes (OP_CLASSES);
- ONNX Runtime, batch 1: node counts by op type of the graph exported with the benchmark's
  exporter and of ONNX Runtime's optimised graph, and kernel time by op type from ONNX
  Runtime's own profiler.

benchmark.py calls ``profile_models`` and ``render`` for its section "Where the time goes".
"""
import argparse
import collections
import json
import os.path as osp
import re
import sys
import tempfile
from typing import Dict, Iterable

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import benchmark  # noqa: E402  (puts the repository on sys.path, imports torch)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

PROFILE_MODELS = ('DualToken-ViT-S', 'ResNet-18', 'EdgeNeXt-small')
# (class, pattern searched in the op's name without namespace, leading and trailing '_');
# the first match wins, names that match none are 'other'
OP_CLASSES = (
    ('attention/SDPA', r'scaled_dot_product|attention|^softmax'),
    ('convolution', r'convolution|conv[123]d|conv_depthwise|conv_transpose'),
    ('linear/GEMM', r'^((\w+_)?linear(_pointwise\w*|_backward\w*)?|addmm|mm|bmm|baddbmm|'
                    r'matmul|einsum|addmv|mv|dot)$'),
    ('normalisation', r'norm'),
    ('GELU/activations', r'gelu|relu|elu|sigmoid|silu|swish|tanh|threshold|mish|softplus'),
    ('element-wise', r'^(add|sub|rsub|mul|div|neg|abs|pow|sqrt|rsqrt|exp|log|erf|reciprocal|'
                     r'square|addcmul|addcdiv|lerp|maximum|minimum|clamp\w*|where|fill|zero|'
                     r'masked_fill|sign|eq|ne|lt|le|gt|ge|logical_\w+|bitwise_\w+|'
                     r'foreach_\w+|fused_adamw?)$'),
    ('copies/layout', r'^(copy|clone|contiguous|to|to_copy|cat|stack|pad|constant_pad_nd|'
                      r'empty\w*|zeros\w*|ones\w*|new_\w+|resize|view\w*|reshape\w*|'
                      r'unsafe_view|reshape_alias|permute|transpose|t|expand\w*|as_strided\w*|'
                      r'unbind|split\w*|chunk|select|slice|narrow|squeeze\w*|unsqueeze|'
                      r'flatten|unflatten|alias|detach|lift_fresh|roll|flip|im2col|col2im)$'),
)
CLASS_NAMES = tuple(c for c, _ in OP_CLASSES) + ('other', )
SCENARIOS = (('eager', 'Batch 1, eager'), ('train', 'Training step'))


def op_class(name: str) -> str:
    """The OP_CLASSES class of an op named 'aten::add_' / 'mkldnn::_linear_pointwise'.

    Events without an op namespace (autograd nodes, optimizer and profiler labels) are
    'other': their self time is the bookkeeping around the ops.
    """
    namespace, _, base = name.rpartition('::')
    if namespace not in ('aten', 'mkldnn', 'quantized', 'prims'):
        return 'other'
    base = base.strip('_')
    for cls, pattern in OP_CLASSES:
        if re.search(pattern, base):
            return cls
    return 'other'


def op_name(func) -> str:
    """'aten::add' for the dispatched op ``aten.add.Tensor`` (the profiler's spelling)."""
    return str(func.overloadpacket).replace('.', '::', 1)


class OpCounter(TorchDispatchMode):
    """Counts the aten/mkldnn ops dispatched inside it, by name ('aten::add')."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    @property
    def ops(self) -> int:
        """Ops dispatched so far."""
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[op_name(func)] += 1
        return func(*args, **(kwargs or {}))


def by_class(counts: Dict[str, float]) -> Dict[str, float]:
    """Sum ``{op name: value}`` per op class (every class present, in CLASS_NAMES order)."""
    total = dict.fromkeys(CLASS_NAMES, 0)
    for name, value in counts.items():
        total[op_class(name)] += value
    return total


def percentages(values: Dict[str, float]) -> Dict[str, float]:
    """``values`` as percentages of their sum, largest first."""
    total = sum(values.values()) or 1
    return {k: 100 * v / total for k, v in sorted(values.items(), key=lambda kv: -kv[1])}


def op_profile(fn, calls: int) -> dict:
    """Dispatched ops of one ``fn()`` and the self CPU time shares of ``calls`` more.

    Returns dict(ops=total, op_counts={class: ops}, shares={class: %}, top={op: %}); run
    ``fn`` once before (caches, optimizer state) so that the counted call is a steady one.
    """
    with OpCounter() as counter:
        fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    return dict(ops=counter.ops, op_counts=by_class(counter.counts),
                shares=percentages(by_class(self_us)),
                top=dict(list(percentages(self_us).items())[:8]))


def node_counts(path: str) -> collections.Counter:
    """Nodes by op type of the ONNX graph at ``path``."""
    import onnx
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def kernel_shares(profile_path: str) -> Dict[str, float]:
    """Kernel time by op type (%) from an ONNX Runtime profile (its JSON trace), the first
    run (warm-up) left out."""
    with open(profile_path) as f:
        events = json.load(f)
    runs = sorted(e['ts'] for e in events if e.get('name') == 'model_run')
    start = runs[1] if len(runs) > 1 else 0
    time = collections.Counter()
    for e in events:
        if (e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time')
                and e.get('ts', 0) >= start):
            time[e.get('args', {}).get('op_name') or '?'] += e.get('dur', 0)
    return percentages(time)


def onnx_profile(model: torch.nn.Module, threads: int, runs: int) -> dict:
    """Export ``model`` at 1x3x224x224 (benchmark.export_onnx), run it ``runs`` times in the
    benchmark's ONNX Runtime session with profiling on.

    Returns dict(exported=Counter, optimised=Counter, shares={op type: %}).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path, optimised = osp.join(tmp, 'model.onnx'), osp.join(tmp, 'optimised.onnx')
        benchmark.export_onnx(model, path)
        session = benchmark.ort_session(path, threads, optimized_model_filepath=optimised,
                                        enable_profiling=True,
                                        profile_file_prefix=osp.join(tmp, 'ort'))
        x = {session.get_inputs()[0].name: torch.rand(1, 3, 224, 224).numpy()}
        session.run(None, x)  # warm-up, left out of the shares
        for _ in range(runs):
            session.run(None, x)
        return dict(exported=node_counts(path), optimised=node_counts(optimised),
                    shares=kernel_shares(session.end_profiling()))


def profile_models(names: Iterable[str], threads: int, quick: bool = False,
                   onnx: bool = True) -> dict:
    """Profile each model of ``names`` (built by benchmark.build) in every scenario.

    Returns dict(threads, train_batch, models={name: dict(eager, train, onnx)}); an ONNX
    failure is reported as onnx=dict(error=...).
    """
    train_batch, calls = (2, 1) if quick else (8, 3)
    result = dict(threads=threads, train_batch=train_batch, models={})
    for name in names:
        model = benchmark.build(name)
        forward = benchmark.inference_fn(model, 1)
        forward()
        entry = dict(eager=op_profile(forward, 2 if quick else 10))
        if onnx:
            try:
                entry['onnx'] = onnx_profile(model, threads, 2 if quick else 10)
            except Exception as e:  # report it; the other figures still stand
                entry['onnx'] = dict(error=f'{type(e).__name__}: '
                                           f'{str(e).splitlines()[0][:150]}')
        step = benchmark.train_step_fn(model, train_batch)
        step()
        entry['train'] = op_profile(step, calls)
        result['models'][name] = entry
    return result


def _top(shares: Dict[str, float], most: int = 4, cover: float = 80.) -> str:
    """The largest shares until they cover ``cover`` % (at most ``most``)."""
    parts, covered = [], 0.
    for key, pct in shares.items():
        if len(parts) == most or covered >= cover:
            break
        parts.append(f'{key} {pct:.0f}%')
        covered += pct
    return ', '.join(parts)


def _types(counts: Dict[str, int], most: int = 8) -> str:
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:most]
    return f'{sum(counts.values())}: ' + ', '.join(f'{k} {v}' for k, v in top)


def render(result: dict) -> list:
    """Markdown lines of the section "Where the time goes (profile)"."""
    models, threads = result['models'], result['threads']
    lines = ['', '## Where the time goes (profile)', '',
             f'From tools/analysis/profile_ops.py: shares are of self CPU time (torch.profiler; '
             f'ONNX Runtime: its profiler\'s kernel time) at {threads} thread'
             f'{"s" if threads != 1 else ""} and '
             f'vary from run to run, counts are exact. Batch 1 at 224; training step: '
             f'forward, backward and AdamW at 224, batch {result["train_batch"]}.', '']
    titles = dict(SCENARIOS, onnx='ONNX Runtime, batch 1')
    for key, title in titles.items():
        tops = [f'{n} {_top(m[key]["shares"])}' for n, m in models.items()
                if 'shares' in m.get(key, {})]
        if tops:
            lines.append(f'- {title}: ' + '; '.join(tops) + '.')
    for key, title in SCENARIOS:
        lines += ['', f'### {title}: ops dispatched per call and self CPU time by op class', '',
                  'Cells: share of self CPU time (dispatched ops of the class).', '',
                  '| model | ops | ' + ' | '.join(CLASS_NAMES) + ' | top ops (self CPU) |',
                  '|---|---|' + '---|' * (len(CLASS_NAMES) + 1)]
        for n, m in models.items():
            p = m[key]
            lines.append(f'| {n} | {p["ops"]} | ' + ' | '.join(
                f'{p["shares"][c]:.1f}% ({p["op_counts"][c]})' for c in CLASS_NAMES) +
                f' | {_top(p["top"], 3, 100.)} |')
    onnx = {n: m['onnx'] for n, m in models.items() if 'onnx' in m}
    if onnx:
        lines += ['', '### ONNX Runtime, batch 1: graph nodes and kernel time by op type', '',
                  '| model | exported graph nodes | after ONNX Runtime\'s optimisations | '
                  'kernel time |', '|---|---|---|---|']
    for n, o in onnx.items():
        if 'error' in o:
            lines.append(f'| {n} | failed: {o["error"]} | | |')
            continue
        lines.append(f'| {n} | {_types(o["exported"])} | {_types(o["optimised"])} | '
                     f'{_top(o["shares"], 6, 95.)} |')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--quick', action='store_true',
                        help='training batch 2, fewer profiled calls')
    parser.add_argument('--models', nargs='+', default=list(PROFILE_MODELS),
                        choices=list(benchmark.OURS) + list(benchmark.PEERS))
    parser.add_argument('--skip-onnx', action='store_true', help='skip ONNX Runtime')
    parser.add_argument('--out', help='write the markdown report here')
    parser.add_argument('--json', help='write the measured figures here')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = profile_models(args.models, args.threads, args.quick, not args.skip_onnx)
    report = '\n'.join(['# Op profile'] + render(result)) + '\n'
    print(report)
    for path, text in ((args.out, report), (args.json, json.dumps(result, indent=1))):
        if path:
            with open(path, 'w') as f:
                f.write(text)
    return result


if __name__ == '__main__':
    main()
