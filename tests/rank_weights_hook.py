"""A hook for the distributed test: every rank saves its own parameters after training, and
records how its model was wrapped for distributed training.

Parameters only: BatchNorm running statistics are per rank (mmengine's DDP wrapper does not
broadcast buffers), while DDP keeps every parameter identical.
"""
import json
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):

    def before_train(self, runner):
        # find_unused_parameters=False: DDP raises if a parameter gets no gradient
        wrapper = runner.model
        with open(osp.join(runner.work_dir, f'rank{get_rank()}_ddp.json'), 'w') as f:
            json.dump(
                dict(
                    wrapper=type(wrapper).__name__,
                    find_unused_parameters=getattr(wrapper, 'find_unused_parameters', None)), f)

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        torch.save(
            dict(model.named_parameters()), osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
