#!/usr/bin/env python
"""Train DualToken-ViT-T and two peers on Fashion-MNIST with one recipe; write the comparison.

    python tools/analysis/fashion_mnist.py --out docs/fashion_mnist.md [--epochs N]

Each model is trained by tools/train.py on its config under configs/fashion_mnist/ (all share
configs/_base_/fashion_mnist_recipe.py: input size, augmentation, optimizer, schedule,
epochs, batch), one after the other on this machine; logs and checkpoints go to
work_dirs/fashion_mnist/<config name>/. A model whose run there finished with the same epochs
and options is not trained again. Its top-1 is the last epoch's on the 10,000 test images (the
recipe evaluates on them every epoch; picking the best epoch would select on the test set).
Params and MACs are counted at the recipe's input size; training img/s is the batch over the
median logged iteration time (each logged time is a mean over 50 iterations, data loading
included); wall time is from the
first to the last line of the run's log. With --out, the files the table is made from are kept
beside the report (docs/fashion_mnist/<config name>/), so that the table can be rebuilt from
them: --work-dirs docs/fashion_mnist.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shutil
import statistics
import subprocess
import sys
from datetime import datetime

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODELS = {
    'DualToken-ViT-T': 'dualtoken_t_fashion-mnist',
    'ResNet-18': 'resnet18_fashion-mnist',
    'EdgeNeXt-xsmall': 'edgenext-xsmall_fashion-mnist',
}
STAMPED = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - ')
RECORD_NOTE = (
    '\nEach log is the time-stamped lines of its run; beside it, the run\'s saved config, '
    'scalars.json and settings: with them `--work-dirs` set to this page\'s folder of records '
    'rebuilds the table without training (the suite does). Checkpoints and full logs stay in '
    'work_dirs/fashion_mnist/.\n')
# the report's text from this line on is written by hand and kept when the tables are rewritten
BY_HAND = '<!-- Written by hand from here on; the tool keeps it when it rewrites the tables. -->'
# --quick: a handful of images, for the tests
QUICK = [
    'train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
    'val_dataloader.dataset.indices=8'
]


def config_path(name: str) -> str:
    return osp.join(REPO_ROOT, 'configs', 'fashion_mnist', MODELS[name] + '.py')


def sessions(work_dir: str) -> list:
    """The scalars.json of each session of a run, oldest first."""
    return sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def train(name: str, work_dir: str, epochs, options) -> None:
    """tools/train.py on ``name``'s config, unless a run of the same settings finished there."""
    stamp, settings = osp.join(work_dir, 'comparison.json'), dict(epochs=epochs, options=options)
    if osp.isfile(stamp) and sessions(work_dir):
        with open(stamp) as f:
            if json.load(f) == settings:
                print(
                    f'{name}: {work_dir} holds a finished run of these settings: not trained '
                    'again',
                    flush=True)
                return
    overrides = [f'train_cfg.max_epochs={epochs}'] * (epochs is not None) + options
    command = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        config_path(name), '--work-dir', work_dir, *['--cfg-options'] * bool(overrides), *overrides
    ]
    print(f'{name}: {" ".join(command)}', flush=True)
    subprocess.run(command, check=True)
    with open(stamp, 'w') as f:
        json.dump(settings, f)


def log_lines(work_dir: str) -> tuple:
    """(path, time-stamped lines) of the last session's text log."""
    session = osp.dirname(osp.dirname(sessions(work_dir)[-1]))
    path = osp.join(session, osp.basename(session) + '.log')
    with open(path) as f:
        return path, [line for line in f if STAMPED.match(line)]


def wall_time(work_dir: str) -> float:
    """Seconds from the first to the last line of the last session's log."""
    stamps = [STAMPED.match(line).group(1) for line in log_lines(work_dir)[1]]
    first, last = (datetime.strptime(t, '%Y/%m/%d %H:%M:%S') for t in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def keep_record(work_dir: str, dest: str) -> str:
    """Copy what the table is made from into ``dest``, in the work dir's layout (the saved
    config, comparison.json, the last session's scalars.json and its log's time-stamped lines;
    checkpoints and the full log stay in work_dirs/); the kept log's path."""
    scalars = sessions(work_dir)[-1]
    log, lines = log_lines(work_dir)
    name = osp.basename(work_dir)
    for path in (osp.join(work_dir, name + '.py'), osp.join(work_dir, 'comparison.json'), scalars):
        target = osp.join(dest, osp.relpath(path, work_dir))
        if osp.abspath(target) == osp.abspath(path):
            continue
        os.makedirs(osp.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
    kept = osp.join(dest, osp.relpath(log, work_dir))
    if osp.abspath(kept) == osp.abspath(log):  # rebuilding from the record itself
        return kept
    with open(kept, 'w') as f:
        f.writelines(lines)
    return kept


def logged(work_dir: str, batch: int) -> dict:
    """The last session's top-1 after each epoch, its mean logged training loss in each epoch
    and its training img/s (the batch over the median logged iteration time: a burst of other
    work on the machine moves a mean, not the median)."""
    top1, losses, times = [], {}, []
    with open(sessions(work_dir)[-1]) as f:
        for line in f:
            entry = json.loads(line) if line.strip() else {}
            if 'accuracy/top1' in entry:
                top1.append(float(entry['accuracy/top1']))
            elif 'loss' in entry and 'time' in entry:
                times.append(float(entry['time']))
                losses.setdefault(entry['epoch'], []).append(float(entry['loss']))
    if not top1 or not times:
        raise SystemExit(f'error: {work_dir} has no logged top-1 or training iteration')
    return dict(
        top1=top1[-1],
        epochs=[(accuracy, sum(epoch) / len(epoch))
                for accuracy, epoch in zip(top1, losses.values())],
        ips=batch / statistics.median(times))


def complexity(name: str, work_dir: str) -> tuple:
    """(params in M, MACs in G, input size, batch, epochs) of the classifier that ``name``'s run in
    ``work_dir`` trained (its config as tools/train.py saved it, options applied)."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as REGISTRY

    import mmdualtoken  # noqa: F401  (registers the backbone)
    from mmdualtoken.utils import count_complexity
    cfg = Config.fromfile(osp.join(work_dir, osp.basename(config_path(name))))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = REGISTRY.build(cfg.model)

    class Logits(torch.nn.Module):

        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            return self.classifier(x, mode='tensor')

    counted = count_complexity(Logits(model), (1, 1, cfg.size, cfg.size))
    return (counted.params / 1e6, counted.macs / 1e9, cfg.size, cfg.train_dataloader.batch_size,
            cfg.train_cfg.max_epochs)


def render(rows: dict, command: str) -> str:
    import torch

    from mmdualtoken.utils import host_description
    (size, batch, epochs), = {r['complexity'][2:] for r in rows.values()}  # one recipe
    lines = [
        '# DualToken-ViT-T on Fashion-MNIST, beside two peers', '',
        f'Generated by `{command}`: every model trained here, one after the other, on '
        f'{host_description(torch.__version__)}. Fashion-MNIST: 60,000 training and 10,000 '
        "test images, 28x28 grey, 10 classes (Debian's dataset-fashion-mnist, read by "
        "mmpretrain's FashionMNIST).", '',
        f'One recipe for all (configs/_base_/fashion_mnist_recipe.py): {size}x{size} input, '
        f'random crops and flips, AdamW lr 1e-3, batch {batch}, {epochs} epochs, one '
        'warm-up epoch then cosine, label smoothing 0.1. Top-1: the last epoch on the 10,000 '
        'test images. Training img/s: the batch over the median logged iteration time (data '
        'loading included). Wall time: the first to the last line of the run\'s log, '
        'validation after each epoch included.', '',
        f'| model | params (M) | MACs at {size}x{size} (G) | epochs | top-1 (%) | training '
        'img/s | wall time (min) | config | log |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for name, r in rows.items():
        params, macs = r['complexity'][:2]
        lines.append(f'| {name} | {params:.2f} | {macs:.3f} | {epochs} | '
                     f'{r["top1"]:.2f} | {r["ips"]:.1f} | {r["wall"] / 60:.1f} | '
                     f'[{MODELS[name]}.py](../configs/fashion_mnist/{MODELS[name]}.py) | '
                     f'[log]({r["log"]}) |')
    lines += [
        '', 'Top-1 on the test images after each epoch, and the mean training loss (label '
        'smoothed, as logged every 50 iterations) in it:', '',
        '| epoch | ' + ' | '.join(rows) + ' |', '|---' * (len(rows) + 1) + '|'
    ]
    for epoch in range(epochs):
        cells = [
            '{:.2f} % (loss {:.3f})'.format(
                *r['epochs'][epoch]) if epoch < len(r['epochs']) else '-' for r in rows.values()
        ]
        lines.append(f'| {epoch + 1} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n' + RECORD_NOTE


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', help='markdown report to write (default: print it)')
    parser.add_argument('--epochs', type=int, help="default: the recipe's")
    parser.add_argument(
        '--work-dirs', help='default: work_dirs/fashion_mnist (with --quick: ..._quick)')
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--quick', action='store_true', help='a handful of images (the tests)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help="overrides of every model's config, the recipe kept one (e.g. the input size: "
        'size=96 train_dataloader.dataset.pipeline.0.scale=96 ...)')
    args = parser.parse_args(argv)
    args.work_dirs = args.work_dirs or 'work_dirs/fashion_mnist' + '_quick' * args.quick
    # the recipe warms up for one epoch, then the cosine
    if args.epochs is not None and args.epochs < 2:
        parser.error(f'--epochs must be at least 2 (one warm-up epoch), got {args.epochs}')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    options = (QUICK if args.quick else []) + args.cfg_options
    rows = {}
    for name in args.models:
        work_dir = osp.join(args.work_dirs, MODELS[name])
        train(name, work_dir, args.epochs, options)
        counted = complexity(name, work_dir)
        log = log_lines(work_dir)[0]
        if args.out:  # the record beside the report: <report>/<config name>/
            record = osp.join(osp.splitext(args.out)[0], MODELS[name])
            log = osp.relpath(keep_record(work_dir, record), osp.dirname(osp.abspath(args.out)))
        rows[name] = dict(
            logged(work_dir, counted[3]), wall=wall_time(work_dir), complexity=counted, log=log)
    text = render(rows, ' '.join(['python tools/analysis/fashion_mnist.py', *argv]))
    if not args.out:
        return print(text)
    if osp.isfile(args.out):  # keep what was written by hand below the tables
        with open(args.out) as f:
            kept = f.read().partition(BY_HAND)
        text += kept[1] and '\n' + ''.join(kept[1:])
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
