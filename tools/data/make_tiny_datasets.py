#!/usr/bin/env python
"""Write the generated tiny datasets that the configs under configs/tiny/ train on.

    python tools/data/make_tiny_datasets.py [--out data/tiny] [--tasks coco ade imagenet]
        [--seed 0] [--scale 1.0]

Layouts: data/tiny/coco (COCO 2017: train2017, val2017, annotations/instances_*.json),
data/tiny/ade/ADEChallengeData2016 (images/ and annotations/ with training and validation),
data/tiny/imagenet (train/, val/, meta/{train,val}.txt). Deterministic for a seed; nothing is
downloaded. Run it from the folder you train from (the configs read data/tiny relative to it).
"""
import argparse
import os.path as osp
import time

from mmdualtoken.datasets.tiny import TASKS, make_tiny_datasets


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/tiny', help='root folder (default: data/tiny)')
    parser.add_argument(
        '--tasks',
        nargs='+',
        choices=list(TASKS),
        default=list(TASKS),
        help='which datasets (default: all three)')
    parser.add_argument('--seed', type=int, default=0, help='generator seed (default: 0)')
    parser.add_argument(
        '--scale', type=float, default=1.0, help='multiply the number of images (default: 1.0)')
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f'--scale must be positive, got {args.scale}')
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    written = make_tiny_datasets(
        args.out,
        tasks=args.tasks,
        seed=args.seed,
        scale=args.scale,
        show_progress=True,
        log=lambda line: print(f'  {line}'))
    print(f'wrote {len(written)} dataset(s) under {osp.abspath(args.out)} in '
          f'{time.time() - start:.1f} s')


if __name__ == '__main__':
    main()
