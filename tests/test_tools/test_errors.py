"""Every documented bad-input / bad-config case raises its one clear error."""
import os.path as osp

from helpers import REPO_ROOT, load_tool


def test_every_case_raises_and_is_documented():
    tool = load_tool('analysis/errors.py')
    rows = tool.collect()  # raises if a case does not raise its exception
    assert len(rows) >= 10
    with open(osp.join(REPO_ROOT, 'docs', 'errors.md')) as f:
        documented = f.read()
    for name, kind, message in rows:
        assert f'| {name} | {kind} |' in documented, name
        # each message names the problem and what is accepted or what to do
        assert len(message) > 30, (name, message)
