"""The ImageNet recipe's checkpoints: the last three and the best, the best kill-safe.

A toy mmengine Runner (one weight, validation every epoch with a metric whose values are
set by the test) runs the recipe's own checkpoint settings, read from
configs/_base_/cls_lightvit_recipe.py.
"""
import os

import torch
from helpers import config
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import METRICS
from mmengine.runner import Runner

from mmdualtoken.engine import atomic_checkpoint

TOP1 = [0.1, 0.5, 0.3, 0.6, 0.2, 0.4]  # validation top-1 of epochs 1..6: best 2, then 4


class OneWeight(BaseModel):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return dict(loss=(self.w - 1).pow(2).sum())
        return [dict(pred=self.w.detach())]


@METRICS.register_module(force=True)
class ScriptedTop1(BaseMetric):
    """accuracy/top1 = TOP1[n] at the n-th evaluation."""
    evaluations = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        ScriptedTop1.evaluations += 1
        return dict(top1=TOP1[ScriptedTop1.evaluations - 1])


def test_classification_keeps_the_last_three_checkpoints_and_the_best(tmp_path, monkeypatch):
    hook = Config.fromfile(config('dualtoken_s_in1k.py')).default_hooks.checkpoint.to_dict()
    hook.pop('_scope_', None)  # mmpretrain's, from the config's _base_
    assert hook == dict(
        type='AtomicCheckpointHook',
        interval=1,
        max_keep_ckpts=3,
        save_best='accuracy/top1',
        rule='greater')
    written = []  # (file written, the best checkpoints in the folder while it was written)
    write = atomic_checkpoint.atomic_write

    def recording_write(data, path):
        best = sorted(f for f in os.listdir(tmp_path) if f.startswith('best_'))
        written.append((os.path.basename(path), best))
        write(data, path)

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', recording_write)
    monkeypatch.setattr(ScriptedTop1, 'evaluations', 0)
    samples = [torch.zeros(1)] * 2
    loader = dict(dataset=samples, batch_size=1, sampler=dict(type='DefaultSampler', shuffle=False))
    runner = Runner(
        model=OneWeight(),
        work_dir=str(tmp_path),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=dict(type='ScriptedTop1', prefix='accuracy'),
        train_cfg=dict(by_epoch=True, max_epochs=len(TOP1), val_interval=1),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=hook),
        default_scope='mmengine')
    runner.train()
    kept = sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth'))
    assert kept == ['best_accuracy_top1_epoch_4.pth', 'epoch_4.pth', 'epoch_5.pth', 'epoch_6.pth']
    # kill-safe: while the new best was written, the previous best was still there
    assert ('best_accuracy_top1_epoch_2.pth', ['best_accuracy_top1_epoch_1.pth']) in written
    assert ('best_accuracy_top1_epoch_4.pth', ['best_accuracy_top1_epoch_2.pth']) in written


def test_removals_wait_until_the_context_ends(tmp_path):
    backend = atomic_checkpoint.AtomicLocalBackend()
    old, new = tmp_path / 'old.pth', tmp_path / 'new.pth'
    old.write_bytes(b'1')
    with backend.removals_deferred(keep=lambda: [str(new)]):
        backend.remove(str(old))
        assert old.exists()
        backend.put(b'2', str(new))
        backend.remove(str(new))  # the new best: kept
    assert not old.exists() and new.read_bytes() == b'2'
    backend.remove(str(new))  # outside the context: at once
    assert not new.exists()
