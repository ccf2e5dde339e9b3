#!/usr/bin/env python
"""Train a model of any of the three frameworks from its config.

    python tools/train.py configs/retinanet_dualtoken_s.py [--work-dir DIR] [--resume [CKPT]]
        [--amp] [--compile] [--auto-scale-lr] [--release-cpu-memory]
        [--cfg-options key=value ...] [--launcher pytorch]

The framework (mmpretrain, mmdet or mmseg) is the config's default_scope.
"""
from mmdualtoken.launch import run_tool, train_main  # (also registers the backbone)

if __name__ == '__main__':
    run_tool(train_main)
