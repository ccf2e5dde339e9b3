#!/usr/bin/env python
"""Params and multiply-accumulates of DualToken-ViT archs and ablations, attention counted.

    python tools/analysis/complexity.py [--out docs/complexity.md] [--configs DIR]

MACs are counted by torch's FlopCounterMode (convolutions, linear layers, matrix products)
with a formula registered for the CPU kernel of scaled_dot_product_attention, which torch
counts as 0 and mmengine's counter skips (see mmdualtoken/utils/complexity.py). "attn" is
the attention-matmul part of the total. The 800x1333 factor is MACs(800x1333) divided by
MACs(224) x (800*1333)/(224*224): 1.0 means the model scales like its pixel count.
The ablation rows are exactly the configs of configs/ablations/ (the paper's Tables 5-9, see
mmdualtoken/utils/ablations.py); each pair's deltas are printed next to the paper's.
"""
import argparse
import os.path as osp

import torch
from tqdm import tqdm

from mmdualtoken.models import DualTokenViT
from mmdualtoken.utils import count_complexity
from mmdualtoken.utils.ablations import TABLES, ablation_configs, backbone_kwargs, ratio

# the configs/ folder of the repository this tool is in
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')

DETECTION_SIZE = (800, 1333)
DENSE_BUDGET = 196  # max_global_tokens used by the detection/segmentation configs
TARGETS = {'tiny': 0.5, 'small': 1.0}  # paper: 0.5 G and 1.0 G "FLOPs" (MACs) at 224

ARCHS = ['tiny', 'small', 'tiny-mix', 'small-mix']


def measure(kwargs: dict) -> dict:
    model = DualTokenViT(**kwargs)
    at_224 = count_complexity(model, (1, 3, 224, 224))
    at_512 = count_complexity(model, (1, 3, 512, 512))
    dense = count_complexity(model, (1, 3, *DETECTION_SIZE))
    budget = count_complexity(DualTokenViT(**kwargs, max_global_tokens=DENSE_BUDGET),
                              (1, 3, *DETECTION_SIZE))
    pixels = DETECTION_SIZE[0] * DETECTION_SIZE[1] / (224 * 224)
    return dict(params=at_224.params / 1e6, macs=at_224.macs / 1e9,
                attn=at_224.attention_macs / 1e9, macs_512=at_512.macs / 1e9,
                macs_det=dense.macs / 1e9, macs_det_budget=budget.macs / 1e9,
                factor=dense.macs / (at_224.macs * pixels),
                factor_budget=budget.macs / (at_224.macs * pixels))


def ablation_rows(configs_dir: str = CONFIGS) -> dict:
    """Constructor kwargs of every config in configs/ablations/ (the tables' rows)."""
    return {name: backbone_kwargs(name, configs_dir) for name in ablation_configs()}


def direction_checks(archs: dict, ablations: dict) -> list:
    """The paper's statements on complexity, checked on the measured rows."""
    checks = []
    for arch in ('tiny', 'small'):
        m = archs[arch]['macs']
        ok = abs(m - TARGETS[arch]) <= 0.05 * TARGETS[arch]
        checks.append((f'{arch}: {m:.3f} G MACs within 5% of {TARGETS[arch]} G', ok))
    for arch in ('tiny', 'small'):
        mlp, mix = archs[arch], archs[f'{arch}-mix']
        checks.append((f'{arch}: normal MLP has more params '
                       f'(+{mlp["params"] - mix["params"]:.2f} M)'
                       f' and MACs (+{mlp["macs"] - mix["macs"]:.3f} G) than MixMLP '
                       '(paper: "a little extra")',
                       mlp['params'] > mix['params'] and mlp['macs'] > mix['macs']))
    for table in TABLES:
        labels = {config: label for label, config in table.rows}
        for pair in table.pairs:
            ours, other = ablations[pair.ours], ablations[pair.other]
            if pair.paper_params is None and pair.paper_macs is None:
                continue
            d_params, d_macs = ours['params'] - other['params'], ours['macs'] - other['macs']
            checks.append((f'Table {table.number} ({table.model}), {labels[pair.ours]} vs '
                           f'{labels[pair.other]}: '
                           f'{d_params:+.2f} M params, {d_macs:+.3f} G MACs in the paper\'s '
                           f'directions ({pair.paper_params:+.1f} M, {pair.paper_macs:+.2f} G)',
                           d_params * pair.paper_params > 0 and d_macs * pair.paper_macs > 0))
    grids = [ablations[config] for _, config in TABLES[2].rows]
    checks.append(('Table 7: MACs rise with the token count (' +
                   ' < '.join(f'{label} {r["macs"]:.3f} G' for (label, _), r in
                              zip(TABLES[2].rows, grids)) + '), params within 0.01 M',
                   grids[0]['macs'] < grids[1]['macs'] < grids[2]['macs'] and
                   max(r['params'] for r in grids) - min(r['params'] for r in grids) < 0.01))
    return checks


def delta_cell(ours: float, paper, unit: str, digits: int) -> list:
    """Our delta, the paper's and their ratio, as three table cells."""
    paper_text = '-' if paper is None else f'{paper:+.{digits}f} {unit}'
    return [f'{ours:+.{digits}f} {unit}', paper_text, ratio(ours, paper)]


def render(archs: dict, ablations: dict) -> str:
    lines = [
        '# Complexity of DualToken-ViT',
        '',
        'Generated by `python tools/analysis/complexity.py --out docs/complexity.md` '
        '(or `make complexity`). Do not edit by hand.',
        '',
        'MACs = multiply-accumulates of one image (the "FLOPs" of the paper), counted by '
        "torch's FlopCounterMode with a formula registered for CPU scaled_dot_product_attention "
        '(torch counts it as 0, mmengine skips it); "attn" is the attention-matmul part. '
        f'"budget" is `max_global_tokens={DENSE_BUDGET}`, as the detection configs use. '
        '"x pixels" is MACs at 800x1333 over MACs at 224 scaled by the pixel count '
        '(1.00 = scales like the pixels).',
        '',
        '## Archs',
        '',
    ]
    header = ['| model | params (M) | MACs 224 (G) | attn 224 (G) | MACs 512 (G) | '
              'MACs 800x1333 (G) | x pixels | MACs 800x1333, budget (G) | x pixels, budget |',
              '|---|---|---|---|---|---|---|---|---|']

    def row(label, r):
        return (f'| {label} | {r["params"]:.2f} | {r["macs"]:.3f} | {r["attn"]:.3f} | '
                f'{r["macs_512"]:.2f} | {r["macs_det"]:.2f} | {r["factor"]:.2f} | '
                f'{r["macs_det_budget"]:.2f} | {r["factor_budget"]:.2f} |')

    lines += header + [row(label, r) for label, r in archs.items()]
    lines += [
        '', '## The paper\'s ablations (configs/ablations/)', '',
        'One row per config in configs/ablations/, measured from the config\'s backbone. '
        'Each config trains with `tools/dist_train.sh configs/ablations/<name>.py 8`; '
        '`python tools/analysis/collect_ablations.py work_dirs` then writes the top-1 table. '
        'The grid rows: `grid_size` is the number of global tokens every block carries at '
        '224 (X_ga is interpolated to them), so the count changes the cost.', '',
    ] + header + [row(f'`{name}`', r) for name, r in ablations.items()]
    lines += [
        '', '## Deltas against the paper', '',
        'Each pair is the paper\'s choice minus the alternative, ours next to what the paper '
        'reports, and their ratio (ours / paper; "-" where the paper\'s text gives no '
        'figure).', '',
        '| table | model | paper\'s choice | alternative | params ours | params paper | ratio '
        '| MACs ours | MACs paper | ratio | top-1 paper | paper also says |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for table in TABLES:
        labels = {config: label for label, config in table.rows}
        for pair in table.pairs:
            ours, other = ablations[pair.ours], ablations[pair.other]
            cells = [f'{table.number} ({table.title})', table.model, labels[pair.ours],
                     labels[pair.other]]
            cells += delta_cell(ours['params'] - other['params'], pair.paper_params, 'M', 2)
            cells += delta_cell(ours['macs'] - other['macs'], pair.paper_macs, 'G', 3)
            cells += ['-' if pair.paper_top1 is None else f'{pair.paper_top1:+.1f}',
                      pair.paper_note or '-']
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '## Checks against the paper', '']
    for text, ok in direction_checks(archs, ablations):
        lines.append(f'- [{"x" if ok else " "}] {text}')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='also write the table to this markdown file')
    parser.add_argument('--configs', default=CONFIGS,
                        help='the configs folder whose ablations/ are measured '
                        '(default: this repository\'s configs/)')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = [(arch, dict(arch=arch)) for arch in ARCHS] + list(ablation_rows(args.configs).items())
    results = {label: measure(kwargs)
               for label, kwargs in tqdm(rows, desc='counting', unit='model')}
    archs = {arch: results[arch] for arch in ARCHS}
    ablations = {name: results[name] for name in ablation_configs()}
    text = render(archs, ablations)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'wrote {args.out}')
    return archs, ablations


if __name__ == '__main__':
    main()
