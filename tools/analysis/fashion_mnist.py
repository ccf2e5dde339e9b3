#!/usr/bin/env python
"""Train DualToken-ViT-T and two peers on Fashion-MNIST with one recipe; write the comparison.

    python tools/analysis/fashion_mnist.py --out docs/fashion_mnist.md [--epochs N]

Each model is trained by tools/train.py on its config under configs/fashion_mnist/ (all share
configs/_base_/fashion_mnist_recipe.py: input size, augmentation, optimizer, schedule,
epochs, batch; each backbone is as its ImageNet config builds it), one after the other on this
machine; logs and checkpoints go to work_dirs/fashion_mnist/<config name>/, where
comparison.json records a finished run's settings, session and machine. A model whose run
there finished with the same epochs and options is not trained again. Its top-1 is the last
epoch's on the 10,000 test images (the recipe evaluates on them every epoch; picking the best
epoch would select on the test set). Params and MACs are counted at the recipe's input size;
training img/s is the batch over the median logged iteration time; wall time is from the first
to the last line of the run's log. With --out, the files the tables are made from are kept
beside the report (docs/fashion_mnist/<config name>/): --work-dirs docs/fashion_mnist
--no-train rebuilds the tables from them. Text written by hand below the report's last line
(a marker) is kept when the tables are rewritten.
"""
import argparse
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
STAMP = 'comparison.json'  # a finished run's settings, session and machine
STAMPED = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - ')
RECORD_NOTE = (
    'Each log holds the time-stamped lines of its run; beside it are the run\'s saved config, '
    'scalars.json and comparison.json, from which `--work-dirs` set to this page\'s folder of '
    'records and `--no-train` rebuild the tables (the suite does). Checkpoints and full logs '
    'stay in work_dirs/fashion_mnist/.')
# the report's last line; what is written below it by hand is kept when the tables are rewritten
BY_HAND = '<!-- Written by hand from here on; the tool keeps it when it rewrites the tables. -->'
# --quick: a handful of images, for the tests
QUICK = [
    'train_dataloader.dataset.indices=8', 'train_dataloader.batch_size=4',
    'val_dataloader.dataset.indices=8'
]


def config_path(name: str) -> str:
    return osp.join(REPO_ROOT, 'configs', 'fashion_mnist', MODELS[name] + '.py')


def finished(work_dir: str, epochs, options):
    """The stamp of the run of these settings that finished in ``work_dir``, or None."""
    path = osp.join(work_dir, STAMP)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        stamp = json.load(f)
    same = (stamp['epochs'], stamp['options']) == (epochs, options)
    return stamp if same and osp.isdir(osp.join(work_dir, stamp['session'])) else None


def train(name: str, work_dir: str, epochs, options, allowed: bool) -> dict:
    """tools/train.py on ``name``'s config, unless a run of the same settings finished there;
    the run's stamp."""
    stamp = finished(work_dir, epochs, options)
    if stamp:
        print(
            f'{name}: {work_dir} holds a finished run of these settings: not trained again',
            flush=True)
        return stamp
    if not allowed:
        raise SystemExit(f'error: {work_dir} holds no finished run of {name} with epochs={epochs} '
                         f'and options {options} (--no-train)')
    if osp.isfile(osp.join(work_dir, STAMP)):  # another run's: void until this one finishes
        os.remove(osp.join(work_dir, STAMP))
    before = set(os.listdir(work_dir)) if osp.isdir(work_dir) else set()
    overrides = [f'train_cfg.max_epochs={epochs}'] * (epochs is not None) + options
    command = [
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        config_path(name), '--work-dir', work_dir, *['--cfg-options'] * bool(overrides), *overrides
    ]
    print(f'{name}: {" ".join(command)}', flush=True)
    subprocess.run(command, check=True)
    import torch

    from mmdualtoken.utils import host_description

    # the session folder the run made (mmengine names it by its start time)
    session, = [d for d in set(os.listdir(work_dir)) - before if re.fullmatch(r'\d{8}_\d{6}', d)]
    stamp = dict(
        epochs=epochs, options=options, session=session, host=host_description(torch.__version__))
    with open(osp.join(work_dir, STAMP), 'w') as f:
        json.dump(stamp, f, indent=1)
    return stamp


def log_lines(session: str) -> tuple:
    """(path, time-stamped lines) of a session's text log."""
    path = osp.join(session, osp.basename(session) + '.log')
    if not osp.isfile(path):
        raise SystemExit(f'error: {session} has no log {osp.basename(path)}')
    with open(path) as f:
        return path, [line for line in f if STAMPED.match(line)]


def wall_time(session: str) -> float:
    """Seconds from the first to the last line of a session's log."""
    stamps = [STAMPED.match(line).group(1) for line in log_lines(session)[1]]
    first, last = (datetime.strptime(t, '%Y/%m/%d %H:%M:%S') for t in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def keep_record(work_dir: str, session: str, dest: str) -> str:
    """Replace ``dest`` by what the tables are made from, in the work dir's layout: the saved
    config, the stamp, the session's scalars.json and its log's time-stamped lines (checkpoints
    and the full log stay in work_dirs/); the kept log's path."""
    log, lines = log_lines(session)
    kept = osp.join(dest, osp.relpath(log, work_dir))
    if osp.abspath(dest) == osp.abspath(work_dir):  # rebuilding from the record itself
        return kept
    shutil.rmtree(dest, ignore_errors=True)
    name = osp.basename(work_dir)
    for path in (osp.join(work_dir, name + '.py'), osp.join(work_dir, STAMP),
                 osp.join(session, 'vis_data', 'scalars.json')):
        target = osp.join(dest, osp.relpath(path, work_dir))
        os.makedirs(osp.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
    with open(kept, 'w') as f:
        f.writelines(lines)
    return kept


def logged(session: str, batch: int) -> dict:
    """A session's top-1 after each epoch, the mean of its logged training losses in each epoch
    and its training img/s: the batch over the median logged iteration time (each logged time
    and loss is mmengine's mean over the iterations of its window; a burst of other work on the
    machine moves a mean of them, not the median)."""
    top1, losses, times = {}, {}, []
    with open(osp.join(session, 'vis_data', 'scalars.json')) as f:
        for line in f:
            entry = json.loads(line) if line.strip() else {}
            if 'accuracy/top1' in entry:  # a validation's step is its epoch
                top1[entry['step']] = float(entry['accuracy/top1'])
            elif 'loss' in entry and 'time' in entry:
                times.append(float(entry['time']))
                losses.setdefault(entry['epoch'], []).append(float(entry['loss']))
    if not top1 or not times:
        raise SystemExit(f'error: {session} has no logged top-1 or training iteration')
    epochs = sorted(set(top1) | set(losses))
    return dict(
        top1=top1[max(top1)],
        per_epoch={
            e: (top1.get(e), statistics.mean(losses[e]) if e in losses else None)
            for e in epochs
        },
        ips=batch / statistics.median(times))


def trained(name: str, work_dir: str) -> dict:
    """The params (M), MACs (G), drop path rate and recipe (input size, batch, epochs, lr) of
    the classifier ``name``'s run in ``work_dir`` trained: its config as tools/train.py saved it
    (options applied); params and MACs at the recipe's input size."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as REGISTRY

    import mmdualtoken  # noqa: F401  (registers the backbone)
    from mmdualtoken.utils import count_complexity
    cfg = Config.fromfile(osp.join(work_dir, osp.basename(config_path(name))))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = REGISTRY.build(cfg.model)

    # the classifier's forward returns its logits (mode='tensor', its default)
    counted = count_complexity(model, (1, 1, cfg.size, cfg.size))
    recipe = (cfg.size, cfg.train_dataloader.batch_size, cfg.train_cfg.max_epochs,
              cfg.optim_wrapper.optimizer.lr)
    return dict(
        params=counted.params / 1e6,
        macs=counted.macs / 1e9,
        drop_path=cfg.model.backbone.get('drop_path_rate', 0.),
        recipe=recipe)


def render(rows: dict, command: str) -> str:
    recipes = {r['recipe'] for r in rows.values()}
    hosts = {r['host'] for r in rows.values()}
    if len(recipes) > 1 or len(hosts) > 1:
        raise SystemExit(f'error: the runs differ in recipe {sorted(recipes)} or machine '
                         f'{sorted(hosts)}: no comparison')
    (size, batch, epochs, lr), = recipes
    lines = [
        '# DualToken-ViT-T on Fashion-MNIST, beside two peers', '',
        f'Generated by `{command}`. Every model was trained here, one after the other, on '
        f'{hosts.pop()}. Fashion-MNIST: 60,000 training and 10,000 '
        "test images, 28x28 grey, 10 classes (Debian's dataset-fashion-mnist, read by "
        "mmpretrain's FashionMNIST).", '',
        f'One recipe for all (configs/_base_/fashion_mnist_recipe.py): {size}x{size} input, '
        f'random crops and flips, AdamW lr {lr:g}, batch {batch}, {epochs} epochs, one warm-up '
        'epoch then cosine, label smoothing 0.1; each backbone as its ImageNet config in '
        'mmpretrain builds it (drop path, and T\'s initialisation). Top-1: the last epoch on the '
        '10,000 test images. Training img/s: the batch over the median logged iteration time '
        '(data loading included). Wall time: from the first to the last line of the run\'s log, '
        'a validation after each epoch included.', '',
        f'| model | params (M) | MACs at {size}x{size} (G) | drop path | epochs | top-1 (%) | '
        'training img/s | wall time (min) | config | log |',
        '|---|---|---|---|---|---|---|---|---|---|'
    ]
    for name, r in rows.items():
        lines.append(f'| {name} | {r["params"]:.2f} | {r["macs"]:.3f} | {r["drop_path"]:g} | '
                     f'{epochs} | {r["top1"]:.2f} | {r["ips"]:.1f} | {r["wall"] / 60:.1f} | '
                     f'[{MODELS[name]}.py]({r["config"]}) | [log]({r["log"]}) |')
    lines += [
        '', 'Top-1 (%) on the test images after each epoch, and the mean of the training losses '
        'logged in it (label smoothed; each a mean over the iterations of its log window):', '',
        '| epoch | ' + ' | '.join(rows) + ' |', '|---' * (len(rows) + 1) + '|'
    ]
    for epoch in range(1, epochs + 1):
        cells = []
        for r in rows.values():
            top1, loss = r['per_epoch'].get(epoch, (None, None))
            cells.append(' '.join([f'{top1:.2f}' if top1 is not None else '-'] +
                                  [f'(loss {loss:.3f})'] * (loss is not None)))
        lines.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + ['', RECORD_NOTE, '', BY_HAND]) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', help='markdown report to write (default: print it)')
    parser.add_argument('--epochs', type=int, help="default: the recipe's")
    parser.add_argument(
        '--work-dirs', help='default: work_dirs/fashion_mnist (with --quick: ..._quick)')
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--quick', action='store_true', help='a handful of images (the tests)')
    parser.add_argument(
        '--no-train',
        action='store_true',
        help='tables from finished runs only (such as the records beside a report): a model '
        'without one is an error')
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
    if args.out and not args.out.endswith('.md'):
        parser.error(f'--out must name a .md file (its records go beside it), got {args.out}')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    options = (QUICK if args.quick else []) + args.cfg_options
    # links are relative to the report's folder (to the current one when printed)
    here = osp.dirname(osp.abspath(args.out)) if args.out else os.getcwd()
    rows = {}
    for name in args.models:
        work_dir = osp.join(args.work_dirs, MODELS[name])
        stamp = train(name, work_dir, args.epochs, options, allowed=not args.no_train)
        session = osp.join(work_dir, stamp['session'])
        counted = trained(name, work_dir)
        log = log_lines(session)[0]
        if args.out:  # the record beside the report: <report>/<config name>/
            log = keep_record(work_dir, session, osp.join(args.out[:-3], MODELS[name]))
        rows[name] = dict(
            logged(session, counted['recipe'][1]),
            **counted,
            wall=wall_time(session),
            host=stamp['host'],
            config=osp.relpath(config_path(name), here),
            log=osp.relpath(log, here))
    text = render(rows, ' '.join(['python tools/analysis/fashion_mnist.py', *argv]))
    if not args.out:
        return print(text)
    if osp.isfile(args.out):  # keep what was written by hand below the tables
        with open(args.out) as f:
            by_hand = f.read().partition(BY_HAND)[2]  # from the end of the marker's line
        text = text.rstrip('\n') + (by_hand or '\n')
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
