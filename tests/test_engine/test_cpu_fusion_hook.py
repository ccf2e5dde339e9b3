"""FuseForCPUHook (tools/test.py --fuse-for-cpu): converts the backbone of the Runner's model
in before_test, and refuses a model that is not on the CPU."""
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from mmdualtoken.engine import FuseForCPUHook
from mmdualtoken.errors import BadConfigError
from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])


class Classifier(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = DualTokenViT(arch=ARCH, out_indices=(2, ))
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.backbone(x)[0].mean((2, 3)))


def runner_of(model):
    return SimpleNamespace(model=model, logger=logging.getLogger('test_cpu_fusion_hook'))


def test_converts_the_backbone_of_a_model_in_training_mode():
    torch.manual_seed(0)
    model = Classifier()  # a Runner's model is in training mode until the test loop starts
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    FuseForCPUHook().before_test(runner_of(model))
    assert not model.training
    converted = [
        m for m in model.backbone.modules() if type(m).__module__.startswith('mmdualtoken.deploy')
    ]
    assert converted
    assert type(model.head) is nn.Linear  # only the backbone
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_refuses_a_model_that_is_not_on_the_cpu():
    model = Classifier().to('meta')  # stands in for a model on a GPU
    with pytest.raises(
            BadConfigError,
            match=r'--fuse-for-cpu \(FuseForCPUHook\) converts the '
            r'backbone for CPU inference, but the model is on meta'):
        FuseForCPUHook().before_test(runner_of(model))
    assert not any(type(m).__module__.startswith('mmdualtoken.deploy') for m in model.modules())
