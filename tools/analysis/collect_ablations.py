#!/usr/bin/env python
"""The paper's ablation tables (its Tables 5-9) from finished runs: our top-1 beside the paper's.

    python tools/analysis/collect_ablations.py WORK_DIRS [--out FILE] [--configs DIR]

The run of configs/ablations/<name>.py is WORK_DIRS/<name> (its default work dir), its top-1
the last ``accuracy/top1`` mmengine logged there (the latest session holding one, so a resumed
run counts once). A run whose saved config trained another backbone than its folder's config
is refused, so a mislabelled folder cannot fill a row. The tables and the paper's figures are
defined once, in mmdualtoken/utils/ablations.py.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Optional

from mmdualtoken.errors import RunMismatch
from mmdualtoken.utils.ablations import (PAPER_TOP1, TABLES, ablation_configs, ablation_switches,
                                         backbone_kwargs)

# the configs/ folder of the repository this tool is in
CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
METRIC = 'accuracy/top1'


def run_logs(run_dir: str) -> list:
    """(scalars.json, config.py) of each session of a run, oldest first."""
    sessions = sorted(glob.glob(osp.join(run_dir, '*', 'vis_data')))
    return [(osp.join(s, 'scalars.json'), osp.join(s, 'config.py')) for s in sessions]


def last_top1(run_dir: str) -> Optional[float]:
    """The last top-1 logged by the latest session that logged one; None if none did."""
    value = None
    for scalars, _ in run_logs(run_dir):
        if not osp.isfile(scalars):
            continue
        with open(scalars) as f:
            for line in f:
                entry = json.loads(line) if line.strip() else {}
                if METRIC in entry:
                    value = float(entry[METRIC])
    return value


def check_run(name: str, run_dir: str, configs_dir: str = CONFIGS):
    """Raise RunMismatch if the run's saved config has another backbone than ``name``'s."""
    from mmengine.config import Config
    configs = [c for _, c in run_logs(run_dir) if osp.isfile(c)]
    if not configs:
        return  # nothing saved to compare (an interrupted first session)
    trained = Config.fromfile(configs[-1]).model.backbone.to_dict()
    expected = ablation_switches(backbone_kwargs(name, configs_dir))
    got = ablation_switches(trained)
    differ = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    if differ:
        details = ', '.join(f'{k}={g!r} (configs/ablations/{name}.py: {e!r})'
                            for k, (g, e) in differ.items())
        raise RunMismatch(f'{run_dir} trained {details}: not the run of {name}')


def collect(work_dirs: str, configs_dir: str = CONFIGS) -> dict:
    """{config name: top-1 or None} for every ablation config."""
    results = {}
    for name in ablation_configs():
        run_dir = osp.join(work_dirs, name)
        if osp.isdir(run_dir):
            check_run(name, run_dir, configs_dir)
            results[name] = last_top1(run_dir)
        else:
            results[name] = None
    return results


def top1(value: Optional[float], missing: str = '-') -> str:
    return missing if value is None else f'{value:.2f}'


def render(results: dict, work_dirs: str) -> str:
    lines = [
        "# The paper's ablations: our top-1 beside the paper's",
        '',
        f'Collected by `python tools/analysis/collect_ablations.py {work_dirs}` from the runs of '
        'configs/ablations/ (ImageNet-1k top-1 %, the last validation of each run). The paper '
        "gives its top-1 for S (79.4) and, for the pairs, the differences its text states; "
        'params and MACs of every row and pair are in docs/complexity.md.',
    ]
    for table in TABLES:
        lines += [
            '', f'## Table {table.number}: {table.title} ({table.model})', '',
            '| row | config | top-1 ours | top-1 paper |', '|---|---|---|---|'
        ]
        labels = {config: label for label, config in table.rows}
        for label, config in table.rows:
            lines.append(f'| {label} | `{config}` | {top1(results[config], "not run")} | '
                         f'{top1(PAPER_TOP1.get(config))} |')
        lines += ['', '| pair | top-1 ours | top-1 paper | paper also says |', '|---|---|---|---|']
        for pair in table.pairs:
            a, b = results[pair.ours], results[pair.other]
            ours = '-' if a is None or b is None else f'{a - b:+.2f}'
            paper = '-' if pair.paper_top1 is None else f'{pair.paper_top1:+.1f}'
            lines.append(f'| {labels[pair.ours]} - {labels[pair.other]} | {ours} | {paper} | '
                         f'{pair.paper_note or "-"} |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', help='folder holding one work dir per ablation config')
    parser.add_argument('--out', help='also write the tables to this markdown file')
    parser.add_argument('--configs', default=CONFIGS, help='the configs folder (default: ours)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.work_dirs):
        parser.error(f'{args.work_dirs} is not a folder')
    try:
        results = collect(args.work_dirs, args.configs)
    except RunMismatch as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    text = render(results, args.work_dirs)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
