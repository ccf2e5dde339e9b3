import os
import sys

import pytest
import torch

# Two pytest-xdist workers share the two cores: one thread each.
if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def tiny_workdir(tmp_path_factory):
    """A working folder holding data/tiny (COCO, ADE20K and ImageNet layouts, small),
    generated once per test worker, as the tiny configs expect it."""
    from mmdualtoken.datasets import make_tiny_datasets
    root = tmp_path_factory.mktemp('tiny_workdir')
    make_tiny_datasets(str(root / 'data' / 'tiny'), scale=0.25)
    return root
