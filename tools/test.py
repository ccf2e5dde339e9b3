#!/usr/bin/env python
"""Evaluate a checkpoint with the config's test set and metric (any of the three frameworks).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
        [--cfg-options key=value ...] [--launcher pytorch]
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmdualtoken.launch import run_tool, test_main  # noqa: E402  (also registers the backbone)

if __name__ == '__main__':
    run_tool(test_main)
