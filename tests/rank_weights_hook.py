"""A hook for the distributed test: every rank saves its own parameters after training.

Parameters only: BatchNorm running statistics are per rank (mmengine's DDP wrapper does not
broadcast buffers), while DDP keeps every parameter identical.
"""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        torch.save(dict(model.named_parameters()), osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
