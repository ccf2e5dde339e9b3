#!/usr/bin/env python
"""Evaluate a checkpoint with the config's test set and metric (any of the three frameworks).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--fuse-for-cpu]
        [--cfg-options key=value ...] [--launcher pytorch]

--fuse-for-cpu converts the backbone for fp32 CPU inference once the checkpoint is loaded
(mmdualtoken.deploy.fuse_for_cpu): the same metric, a faster CPU run.
"""
from mmdualtoken.launch import run_tool, test_main  # (also registers the backbone)

if __name__ == '__main__':
    run_tool(test_main)
