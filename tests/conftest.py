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


@pytest.fixture
def fault_report(request):
    """Report a fault test's outcome as its row of docs/reliability.md.

    ``fault_report(section, fault, happened, lost='nothing')``: ``happened`` is what the test
    measured, in words that do not change from run to run (no timings, paths or random
    draws). Under tools/analysis/reliability.py the row is collected; otherwise the test
    checks that docs/reliability.md holds it as the tool would write it.
    """
    import json

    from helpers import REPO_ROOT, load_tool
    tool = load_tool('analysis/reliability.py')

    def report(section: str, fault: str, happened: str, lost: str = 'nothing') -> None:
        if section not in tool.SECTIONS:
            raise ValueError(f'unknown section {section!r}; known: {list(tool.SECTIONS)}')
        record = dict(
            section=section, fault=fault, happened=happened, lost=lost, test=request.node.nodeid)
        records_file = os.environ.get(tool.RECORDS_ENV)
        if records_file:
            with open(records_file, 'a') as f:
                f.write(json.dumps(record) + '\n')
            return
        with open(os.path.join(REPO_ROOT, 'docs', 'reliability.md')) as f:
            documented = f.read()
        row = tool.render_row(record)
        assert row in documented, (
            f'docs/reliability.md does not hold this test\'s row (run python '
            f'tools/analysis/reliability.py --out docs/reliability.md):\n{row}')

    return report
