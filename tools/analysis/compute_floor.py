#!/usr/bin/env python
"""How fast a model could be with the kernels it uses: its compute-bound ops alone, replayed.

    python tools/analysis/compute_floor.py [--threads 2] [--batch 32] [--repeats 7]
        [--models DualToken-ViT-S ResNet-18 EdgeNeXt-small]

One call of a model (batch-1 inference at 224; a training step at 224: forward, backward,
AdamW) is recorded by a TorchDispatchMode. Its matrix products, convolutions and attention
(profile_ops' classes 'linear/GEMM', 'convolution', 'attention/SDPA', their backward ops
included) are kept with copies of their inputs; then those ops alone are replayed back to
back, interleaved with the full call. The replay is the model's math on the same kernels
with every other op (norms, activations, element-wise, copies, the optimizer), every Python
module call and the autograd bookkeeping taken away: a lower bound on what any change that
keeps the math and the kernels can reach. Where a peer's whole call is faster than our
replay, no such change can make ours match it.

benchmark.py calls ``floors`` for its section "What the kernels allow".
"""
import argparse
import os.path as osp
import statistics
import sys
from typing import Dict, Iterable

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import benchmark  # noqa: E402  (puts the repository on sys.path, imports torch)
import torch  # noqa: E402
from profile_ops import PROFILE_MODELS, OpCounter, op_class, op_name  # noqa: E402
from torch.utils._pytree import tree_map  # noqa: E402

COMPUTE_CLASSES = ('linear/GEMM', 'convolution', 'attention/SDPA')
SCENARIOS = ('batch 1', 'training step')


class ComputeOpRecorder(OpCounter):
    """profile_ops' op counter that also keeps the compute-bound ops (COMPUTE_CLASSES) with
    copies of their arguments, in call order."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def ops(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if op_class(op_name(func)) in COMPUTE_CLASSES:
            def copy(a):
                return a.detach().clone() if isinstance(a, torch.Tensor) else a
            self.calls.append((func, tree_map(copy, args), tree_map(copy, kwargs)))
        return super().__torch_dispatch__(func, types, args, kwargs)


def replay_fn(calls):
    """Calls the recorded ops back to back (no autograd: the backward ops are recorded as
    the ops they are)."""
    def run():
        with torch.no_grad():
            for func, args, kwargs in calls:
                func(*args, **kwargs)
    return run


def floor(fns: Dict[str, callable], warmup: int, repeats: int, desc: str) -> dict:
    """{name: dict(full_ms, floor_ms, ops, compute_ops)} for each ``fns[name]``: one recorded
    call, then the full call and the replay of its compute ops timed interleaved."""
    recorded, timed = {}, {}
    for name, fn in fns.items():
        fn()  # steady state first (caches, packed weights, optimizer state)
        with ComputeOpRecorder() as rec:
            fn()
        recorded[name] = rec
        timed[name], timed[name + ' floor'] = fn, replay_fn(rec.calls)
    times = benchmark.interleaved(timed, warmup, repeats, desc)
    results = {}
    for name, rec in recorded.items():
        results[name] = dict(full_ms=statistics.median(times[name]) * 1e3,
                             floor_ms=statistics.median(times[name + ' floor']) * 1e3,
                             ops=rec.ops, compute_ops=len(rec.calls))
        rec.calls.clear()
    return results


def floors(names: Iterable[str], batch: int, warmup: int, repeats: int) -> dict:
    """{scenario: floor(...)} for the models ``names`` (built as benchmark.py builds them)."""
    out = {}
    models = {n: benchmark.build(n) for n in names}
    out['batch 1'] = floor({n: benchmark.inference_fn(m.eval(), 1) for n, m in models.items()},
                           warmup, repeats, 'floor b1')
    # the training step, one model at a time (its recorded inputs are the batch's activations)
    out['training step'] = {}
    for n, model in models.items():  # train_step_fn switches the model to training mode
        out['training step'].update(floor({n: benchmark.train_step_fn(model, batch)},
                                          1, max(3, repeats // 2), f'floor train {n}'))
    return out


def render(result: dict, batch: int, ours: str = 'DualToken-ViT-S') -> list:
    """The table and, per scenario, what our floor says against each peer's whole call."""
    lines = ['| model | scenario | ops per call | compute ops | whole call ms | '
             'compute ops alone (floor) ms | floor / whole |', '|---|---|---|---|---|---|---|']
    for scenario in SCENARIOS:
        for n, r in result.get(scenario, {}).items():
            lines.append(f'| {n} | {scenario} | {r["ops"]} | {r["compute_ops"]} | '
                         f'{r["full_ms"]:.1f} | {r["floor_ms"]:.1f} | '
                         f'{r["floor_ms"] / r["full_ms"]:.2f} |')
    lines.append('')
    for scenario in SCENARIOS:
        table = result.get(scenario, {})
        if ours not in table:
            continue
        mine = table[ours]
        for peer, r in table.items():
            if peer in benchmark.OURS:  # our other sizes are no peers
                continue
            best = r['full_ms'] / mine['floor_ms']  # S's speed over the peer's at its floor
            unit = (f'{batch / mine["floor_ms"] * 1e3:.1f} img/s' if scenario != 'batch 1'
                    else f'{mine["floor_ms"]:.1f} ms')
            lines.append(f'- {scenario}: {ours} at its floor {unit} would run at {best:.2f}x '
                         f'{peer}\'s measured speed (its whole call {r["full_ms"]:.1f} ms)')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=32, help='training step batch')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--models', nargs='+', default=list(PROFILE_MODELS),
                        choices=list(benchmark.OURS) + list(benchmark.PEERS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = floors(args.models, args.batch, 2, args.repeats)
    print('\n'.join(render(result, args.batch)))
    return result


if __name__ == '__main__':
    main()
