#!/usr/bin/env python
"""Evaluate a checkpoint with the config's test set and metric (any of the three frameworks).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
        [--cfg-options key=value ...] [--launcher pytorch]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmdualtoken  # noqa: E402,F401  (registers the backbone and safe checkpoint loading)
from mmdualtoken.launch import add_common_args, build_runner, framework_of, load_config  # noqa


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a DualToken-ViT model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='write pictures of the predictions here '
                        '(inside the work dir\'s timestamped folder for mmdet/mmseg)')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise ValueError('--show-dir needs default_hooks.visualization in the config')
        if framework_of(cfg) == 'mmpretrain':
            hook.update(enable=True, out_dir=args.show_dir)
        else:
            hook.update(draw=True, test_out_dir=args.show_dir)
    runner = build_runner(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
