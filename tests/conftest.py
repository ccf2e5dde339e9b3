import os
import sys
import tempfile

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


def pytest_addoption(parser):
    parser.addoption(
        '--update-docs',
        action='store_true',
        help='rewrite docs/errors.md and docs/reliability.md from the rows of the tests '
        'that run, instead of checking them (tests/doc_tables.py)')


def pytest_configure(config):
    # the controller names the records file; xdist workers, started later, inherit it
    from doc_tables import RECORDS_ENV
    if config.getoption('update_docs') and not hasattr(config, 'workerinput'):
        fd, path = tempfile.mkstemp(prefix='doc_records_', suffix='.jsonl')
        os.close(fd)
        os.environ[RECORDS_ENV] = path


def pytest_sessionfinish(session):
    from doc_tables import RECORDS_ENV, write_docs
    path = os.environ.get(RECORDS_ENV)
    if path and not hasattr(session.config, 'workerinput'):
        for written in write_docs(path):
            print(f'\nwrote {written}')
        os.remove(path)


@pytest.fixture
def fault_report(request):
    """Report a fault test's outcome as its row of docs/reliability.md (tests/doc_tables.py).

    ``fault_report(section, fault, happened, lost='nothing')``: ``happened`` is what the test
    measured, in words that do not change from run to run (no timings, paths or random
    draws).
    """
    from doc_tables import report

    def fault(section: str, fault: str, happened: str, lost: str = 'nothing') -> None:
        test = request.node.nodeid
        report('reliability.md', section, [fault, happened, lost, f'`{test}`'], [test, fault])

    return fault
