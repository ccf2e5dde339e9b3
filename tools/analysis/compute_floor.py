#!/usr/bin/env python
"""How fast a model could be with the kernels it uses: one call replayed without the model.

    python tools/analysis/compute_floor.py [--threads 2] [--batch 32] [--repeats 7]
        [--models DualToken-ViT-S ResNet-18 EdgeNeXt-small]
        [--det-models DualToken-ViT-S ResNet-18] [--det-size 800 1333] [--det-batch 2]
        [--ort-repeats 30]

One call of a model (batch-1 inference at 224; a training step at 224: forward, backward,
AdamW; the RetinaNet training iteration of benchmark.py, forward, losses, backward, AdamW,
with the backbones of --det-models) is recorded by TorchDispatchModes, then replayed twice,
interleaved with the whole call:

- every op (:class:`CallRecorder`): all of the call's ops back to back, each taking the
  outputs of the ops before it as the call did, with no Python module code and no autograd
  engine around them; outputs are allocated and freed as the call did. The gap to the whole
  call is that framework overhead; the replay, less the replay loop's own cost (a dry run of
  the same loop with a no-op per op), is the floor of any runtime that keeps these kernels
  (a compiler's C++ wrapper, a graph executor).
- the compute ops alone (:class:`ComputeOpRecorder`): the matrix products, convolutions and
  attention (profile_ops' classes 'linear/GEMM', 'convolution', 'attention/SDPA', their
  backward ops included), each on copies of its recorded inputs. Every other op (norms,
  activations, element-wise, copies, the optimizer) costs nothing here: the floor of any
  change that keeps the maths and these compute kernels, however well it fuses the rest.

In ONNX Runtime (batch 1 at 224, exported as benchmark.py exports), the whole call is the
executor running its present kernels; its floor is the compute nodes alone
(:func:`compute_subgraph`): the matrix products, convolutions and attention of the graph as
ONNX Runtime optimised it, in one call of a graph holding only them.

Where a peer's whole call is faster than one of our floors, no change of that kind can make
ours match it. Freed CPU memory stays in the heap, as in the benchmark's training figures.

benchmark.py calls ``floors`` for its section "What the kernels allow".
"""
import argparse
import collections
import os.path as osp
import statistics
import sys
import tempfile
import weakref
from typing import Dict, Iterable

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import benchmark  # noqa: E402  (puts the repository on sys.path, imports torch)
import torch  # noqa: E402
from profile_ops import PROFILE_MODELS, OpCounter, op_class, op_name  # noqa: E402
from torch.utils._pytree import tree_flatten, tree_map  # noqa: E402

COMPUTE_CLASSES = ('linear/GEMM', 'convolution', 'attention/SDPA')
# ONNX Runtime's nodes of the same classes, fused forms and its NCHWc convolution included
ORT_COMPUTE_OPS = ('Conv', 'FusedConv', 'ConvTranspose', 'Gemm', 'FusedGemm', 'MatMul',
                   'FusedMatMul', 'Attention', 'MultiHeadAttention')
SCENARIOS = ('batch 1', 'ONNX Runtime batch 1', 'training step', 'RetinaNet iteration')
DET_FLOOR_MODELS = ('DualToken-ViT-S', 'ResNet-18')  # the two sides of the RetinaNet target


class ComputeOpRecorder(OpCounter):
    """profile_ops' op counter that also keeps the compute-bound ops (COMPUTE_CLASSES) with
    copies of their arguments, in call order."""

    def __init__(self):
        super().__init__()
        self.calls = []

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


class Slot:
    """A recorded argument that is the output number ``index`` of an earlier op of the call."""
    __slots__ = ('index', )

    def __init__(self, index: int):
        self.index = index


class CallRecorder(OpCounter):
    """profile_ops' op counter that keeps every op of the call with its data flow.

    A tensor argument produced by an earlier op of the call is recorded as a :class:`Slot`
    (found by identity through a weak reference, so nothing is kept alive); any other tensor
    (weights, buffers, optimizer state, the input) is copied. ``calls`` holds
    (op, args, kwargs, output slots) in call order.
    """

    def __init__(self):
        super().__init__()
        self.calls, self._produced, self._next = [], {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}

        def record(a):
            if not isinstance(a, torch.Tensor):
                return a
            hit = self._produced.get(id(a))
            if hit is not None and hit[1]() is a:
                return Slot(hit[0])
            return a.detach().clone()
        recorded = (func, tree_map(record, args), tree_map(record, kwargs))
        out = super().__torch_dispatch__(func, types, args, kwargs)
        slots = []
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                slots.append(None)
                continue
            slots.append(self._next)
            self._produced[id(t)] = (self._next, weakref.ref(t))
            self._next += 1
        self.calls.append(recorded + (slots, ))
        return out


def _slot_positions(args: list, kwargs: dict) -> tuple:
    """Where the Slots of one recorded op are: (position, index in a list there or -1, slot);
    a kwarg's position is its name. Lists are copied so that the replay may fill them."""
    found = []
    for pos, a in list(enumerate(args)) + list(kwargs.items()):
        container = args if isinstance(pos, int) else kwargs
        if isinstance(a, Slot):
            found.append((pos, -1, a.index))
        elif isinstance(a, (list, tuple)):
            container[pos] = list(a)
            found += [(pos, i, b.index) for i, b in enumerate(a) if isinstance(b, Slot)]
    if len(found) != sum(isinstance(v, Slot) for v in tree_flatten((args, kwargs))[0]):
        raise ValueError('a recorded op takes an earlier output nested deeper than a list')
    return tuple(found)


def dataflow_replay_fn(calls, dry_run: bool = False):
    """Replays :class:`CallRecorder`'s ``calls``: each op runs on the outputs of the ops
    before it, and an output is dropped after its last use, as the call freed it. With
    ``dry_run`` each op is replaced by a no-op (an alias of a one-element tensor) standing in
    for its outputs: the replay loop's own cost, bookkeeping and one op dispatch per op."""
    last_use = {}
    for n, (_, args, kwargs, _) in enumerate(calls):
        for v in tree_flatten((args, kwargs))[0]:
            if isinstance(v, Slot):
                last_use[v.index] = n
    frees = collections.defaultdict(list)
    for index, n in last_use.items():
        frees[n].append(index)
    plan = []
    for n, (func, args, kwargs, slots) in enumerate(calls):
        args, kwargs = list(args), dict(kwargs)
        subs = _slot_positions(args, kwargs)
        keep = tuple((j, i) for j, i in enumerate(slots)
                     if i is not None and last_use.get(i, -1) > n)
        plan.append((func, args, kwargs, subs, keep, tuple(frees[n])))
    tiny, noop = torch.zeros(1), torch.ops.aten.alias.default

    def outputs(out):
        return (out, ) if isinstance(out, torch.Tensor) else tree_flatten(out)[0]

    def run():
        env, out = {}, None
        with torch.no_grad():
            for func, args, kwargs, subs, keep, free in plan:
                for pos, i, slot in subs:
                    container = args if isinstance(pos, int) else kwargs
                    if i < 0:
                        container[pos] = env[slot]
                    else:
                        container[pos][i] = env[slot]
                out = noop(tiny) if dry_run else func(*args, **kwargs)
                for pos, i, _ in subs:  # hold no reference: memory is reused as in the call
                    container = args if isinstance(pos, int) else kwargs
                    if i < 0:
                        container[pos] = None
                    else:
                        container[pos][i] = None
                if keep:
                    outs = outputs(out)
                    for j, slot in keep:  # a dry run's one output stands in for all
                        env[slot] = outs[0 if dry_run else j]
                for slot in free:
                    del env[slot]
        return out  # the last op's output
    return run


def floor(fns: Dict[str, callable], warmup: int, repeats: int, desc: str) -> dict:
    """{name: dict(full_ms, every_op_ms, loop_ms, kernels_ms, floor_ms, ops, compute_ops)}
    for each ``fns[name]``: one call recorded each way, then the whole call, the replay of
    every op, its dry run (the loop's own cost) and the replay of the compute ops alone,
    timed interleaved. ``kernels_ms`` = every op less the loop: the present kernels; where
    that is not below the whole call, the whole call (a replay can be the slower one: at
    1333x800, memory-bound ops such as GELU ran 2.4x slower replayed, measured)."""
    recorded, timed = {}, {}
    for name, fn in fns.items():
        fn()  # steady state first (caches, packed weights, optimizer state)
        with CallRecorder() as call:
            fn()
        with ComputeOpRecorder() as compute:
            fn()
        recorded[name] = (call, compute)
        timed[name] = fn
        timed[name + ' every op'] = dataflow_replay_fn(call.calls)
        timed[name + ' loop'] = dataflow_replay_fn(call.calls, dry_run=True)
        timed[name + ' floor'] = replay_fn(compute.calls)
    times = benchmark.interleaved(timed, warmup, repeats, desc)
    results = {}
    for name, (call, compute) in recorded.items():
        results[name] = dict(
            full_ms=statistics.median(times[name]) * 1e3,
            every_op_ms=statistics.median(times[name + ' every op']) * 1e3,
            loop_ms=statistics.median(times[name + ' loop']) * 1e3,
            floor_ms=statistics.median(times[name + ' floor']) * 1e3,
            ops=compute.ops, compute_ops=len(compute.calls))
        # the present kernels: every op replayed, less the replay loop's own cost
        r = results[name]
        r['kernels_ms'] = min(r['every_op_ms'] - r['loop_ms'], r['full_ms'])
        call.calls.clear()
        compute.calls.clear()
    return results


def compute_subgraph(optimised, image) -> tuple:
    """The compute nodes (ORT_COMPUTE_OPS) of a graph that ONNX Runtime optimised, as a graph
    of their own: (model, feeds).

    An input of a compute node that no other compute node produces becomes a graph input,
    fed the value the whole graph computes for ``image`` (its only input); every output of a
    compute node is a graph output. Run unoptimised, it times the kernels ONNX Runtime chose
    for these nodes, layouts included, with every other node costing nothing.
    """
    import onnx
    from onnx import helper

    from mmdualtoken.utils.onnx_runtime import ort_session
    graph = optimised.graph
    keep = [n for n in graph.node if n.op_type in ORT_COMPUTE_OPS]
    constants = {i.name for i in graph.initializer}
    produced = {o for n in keep for o in n.output}
    needed = list(dict.fromkeys(i for n in keep for i in n.input
                                if i and i not in constants and i not in produced))
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(graph.value_info) + list(graph.input)}
    # the whole graph once, exposing those values
    probe = onnx.ModelProto()
    probe.CopyFrom(optimised)
    del probe.graph.output[:]
    image_name = graph.input[0].name
    exposed = [v for v in needed if v != image_name]
    probe.graph.output.extend(helper.make_tensor_value_info(
        v, types.get(v, onnx.TensorProto.FLOAT), None) for v in exposed)
    session = ort_session(probe.SerializeToString(), optimize=False, log_severity_level=3)
    feeds = dict(zip(exposed, session.run(exposed, {image_name: image})))
    feeds.update({image_name: image} if image_name in needed else {})
    used = {i for n in keep for i in n.input}
    sub = helper.make_graph(
        keep, 'compute_nodes',
        [helper.make_tensor_value_info(v, types.get(v, onnx.TensorProto.FLOAT), feeds[v].shape)
         for v in needed],
        [helper.make_tensor_value_info(o, types.get(o, onnx.TensorProto.FLOAT), None)
         for n in keep for o in n.output if o],
        [i for i in graph.initializer if i.name in used])
    model = helper.make_model(sub, opset_imports=optimised.opset_import,
                              ir_version=optimised.ir_version)
    return model, feeds


def ort_floor(models: Dict[str, torch.nn.Module], threads: int, warmup: int, repeats: int,
              size=(224, 224)) -> dict:
    """{name: dict(full_ms, floor_ms, kernels_ms, ops, compute_ops)}: batch-1 latency in
    ONNX Runtime, each model exported and run as benchmark.py's ``ort_latency`` does (the
    whole call), against the compute nodes of the graph ONNX Runtime optimised
    (:func:`compute_subgraph`, inputs and outputs bound once), interleaved.

    ONNX Runtime's whole call already runs its present kernels in its C++ executor, with
    nothing around them: ``kernels_ms`` is the whole call. ``ops`` and ``compute_ops`` count
    the optimised graph's nodes.
    """
    import onnx
    from mmdualtoken.utils.onnx_runtime import ort_session
    image = torch.rand(1, 3, *size).numpy()
    timed, counts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            path, optimised_path = (osp.join(tmp, f'{len(counts)}{end}.onnx')
                                    for end in ('', '_optimised'))
            benchmark.export_onnx(model, path, size)
            whole = ort_session(path, threads, optimized_model_filepath=optimised_path,
                                log_severity_level=3)  # NCHWc nodes: fine on this machine
            optimised = onnx.load(optimised_path)
            sub, feeds = compute_subgraph(optimised, image)
            alone = ort_session(sub.SerializeToString(), threads, optimize=False)
            binding = alone.io_binding()
            for key, value in feeds.items():
                binding.bind_cpu_input(key, value)
            for output in alone.get_outputs():
                binding.bind_output(output.name)
            counts[name] = dict(ops=len(optimised.graph.node), compute_ops=len(sub.graph.node))
            timed[name] = lambda s=whole: s.run(None, {'image': image})
            timed[name + ' floor'] = lambda s=alone, b=binding: s.run_with_iobinding(b)
        times = benchmark.interleaved(timed, warmup, repeats, 'floor ONNX Runtime b1')
    results = {}
    for name, count in counts.items():
        full = statistics.median(times[name]) * 1e3
        results[name] = dict(full_ms=full, kernels_ms=full,
                             floor_ms=statistics.median(times[name + ' floor']) * 1e3, **count)
    return results


def floors(names: Iterable[str], batch: int, warmup: int, repeats: int,
           det_names: Iterable[str] = (), det_batch: int = 2, det_size=(800, 1333),
           ort_repeats: int = 0) -> dict:
    """{scenario: floor(...)} for the models ``names`` and the RetinaNet backbones
    ``det_names`` (each built as benchmark.py builds it); with ``ort_repeats`` rounds, also
    batch 1 in ONNX Runtime (:func:`ort_floor`)."""
    out = {}
    models = {n: benchmark.build(n) for n in names}
    out['batch 1'] = floor({n: benchmark.inference_fn(m.eval(), 1) for n, m in models.items()},
                           warmup, repeats, 'floor b1')
    if ort_repeats:
        out['ONNX Runtime batch 1'] = ort_floor(models, torch.get_num_threads(), warmup,
                                                ort_repeats)
    # the training step, one model at a time (its recorded inputs are the batch's activations)
    out['training step'] = {}
    for n, model in models.items():  # train_step_fn switches the model to training mode
        out['training step'].update(floor({n: benchmark.train_step_fn(model, batch)},
                                          1, max(3, repeats // 2), f'floor train {n}'))
    for n in det_names:  # as the training step, one detector at a time
        fn = benchmark.detector_train_fn(benchmark.build_detector(n), det_batch, det_size)
        out.setdefault('RetinaNet iteration', {}).update(
            floor({n: fn}, 1, max(3, repeats // 2), f'floor RetinaNet {n}'))
    return out


def render(result: dict, batch: int, ours: str = 'DualToken-ViT-S') -> list:
    """The table and, per scenario, what our two floors say against each peer's whole call."""
    lines = ['| model | scenario | ops per call | compute ops | whole call ms | every op '
             'replayed ms (loop\'s own cost) | compute ops alone (floor) ms | floor / whole |',
             '|---|---|---|---|---|---|---|---|']
    for scenario in SCENARIOS:
        for n, r in result.get(scenario, {}).items():
            # ONNX Runtime's whole call is its executor running its kernels: no replay
            every_op = (f'{r["every_op_ms"]:.1f} ({r["loop_ms"]:.1f})' if 'every_op_ms' in r
                        else '-')
            lines.append(f'| {n} | {scenario} | {r["ops"]} | {r["compute_ops"]} | '
                         f'{r["full_ms"]:.1f} | {every_op} | '
                         f'{r["floor_ms"]:.1f} | {r["floor_ms"] / r["full_ms"]:.2f} |')
    lines.append('')
    for scenario in SCENARIOS:
        table = result.get(scenario, {})
        if ours not in table:
            continue
        mine = table[ours]

        def at(ms):
            if scenario == 'training step':
                return f'{batch / ms * 1e3:.1f} img/s'
            return f'{ms / 1e3:.3f} s' if scenario == 'RetinaNet iteration' else f'{ms:.1f} ms'
        for peer, r in table.items():
            if peer in benchmark.OURS:  # our other sizes are no peers
                continue
            # S's speed over the peer's whole call, at each of S's floors
            present, compute = r['full_ms'] / mine['kernels_ms'], r['full_ms'] / mine['floor_ms']
            lines.append(f'- {scenario}: {ours} with its present kernels '
                         f'{at(mine["kernels_ms"])} would run at {present:.2f}x {peer}\'s '
                         f'measured speed, with its compute ops alone {at(mine["floor_ms"])} '
                         f'at {compute:.2f}x (its whole call {at(r["full_ms"])})')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=32, help='training step batch')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--models', nargs='+', default=list(PROFILE_MODELS),
                        choices=list(benchmark.OURS) + list(benchmark.PEERS))
    parser.add_argument('--det-models', nargs='*', default=list(DET_FLOOR_MODELS),
                        choices=list(benchmark.DET_BACKBONES),
                        help='RetinaNet backbones (none: skip the RetinaNet iteration)')
    parser.add_argument('--det-size', type=int, nargs=2, default=(800, 1333),
                        metavar=('H', 'W'), help='image size of the RetinaNet iteration')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--ort-repeats', type=int, default=30,
                        help='rounds of batch 1 in ONNX Runtime (0: skip it)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    benchmark.keep_freed_cpu_memory(logger='silent')  # as the benchmark's training figures
    result = floors(args.models, args.batch, 2, args.repeats, args.det_models, args.det_batch,
                    tuple(args.det_size), args.ort_repeats)
    print('\n'.join(render(result, args.batch)))
    return result


if __name__ == '__main__':
    main()
