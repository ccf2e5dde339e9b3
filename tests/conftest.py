import os

import pytest
import torch

# Two pytest-xdist workers share the two cores: one thread each.
if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """The generated datasets (COCO, ADE20K, ImageNet layouts), small, made once per worker."""
    from mmdualtoken.datasets import make_tiny_datasets
    root = tmp_path_factory.mktemp('tiny_data')
    make_tiny_datasets(str(root), scale=0.25)
    return root
