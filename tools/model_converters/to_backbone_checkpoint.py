#!/usr/bin/env python
"""Convert a DualToken-ViT checkpoint of another layout to the one our configs load.

    python tools/model_converters/to_backbone_checkpoint.py SRC DST --arch small [--use-ema]

Accepts an mmengine checkpoint, a bare state dict, keys with or without ``backbone.`` or
``module.``, or the EMA weights of an EMAHook run (--use-ema). Writes
``{'state_dict': {'backbone.*': ...}}`` for ``init_cfg=dict(type='Pretrained',
checkpoint=DST, prefix='backbone.')``. Refuses a checkpoint of another arch. Loading is
safe (mmdualtoken.safe_loading.load_checkpoint_safely: torch's weights-only loader, and on
torch < 2.4 the same allow-list). Running it on its own output changes nothing.
"""
import argparse

import torch

from mmdualtoken.checkpoint import to_backbone_checkpoint
from mmdualtoken.safe_loading import load_checkpoint_safely


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='checkpoint to convert')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument(
        '--arch',
        required=True,
        help='DualTokenViT arch it was trained with '
        '(tiny, small, tiny-mix, small-mix)')
    parser.add_argument('--use-ema', action='store_true', help='take the EMA weights')
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint_safely(args.src)
    converted = to_backbone_checkpoint(checkpoint, args.arch, use_ema=args.use_ema)
    torch.save(converted, args.dst)
    print(f'wrote {args.dst}: {len(converted["state_dict"])} backbone tensors '
          f'(arch {args.arch})')


if __name__ == '__main__':
    main()
