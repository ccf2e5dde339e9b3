"""docs/reliability.md lists exactly the fault tests there are (each fault test checks its
own row's text; this checks that no row is stale and no fault test is missing)."""
import ast
import os
import os.path as osp
import re

import pytest
from doc_tables import render
from helpers import REPO_ROOT

FAULT_TESTS = osp.join(REPO_ROOT, 'tests', 'test_reliability')


def fault_test_functions():
    """(path relative to the repo, function name) of every test taking ``fault_report``
    (the folder also holds unit tests of the fault machinery, which report nothing)."""
    found = []
    for name in sorted(os.listdir(FAULT_TESTS)):
        if not (name.startswith('test_') and name.endswith('.py')):
            continue
        with open(osp.join(FAULT_TESTS, name)) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith('test_'):
                if 'fault_report' in [a.arg for a in node.args.args]:
                    found.append((f'tests/test_reliability/{name}', node.name))
    return found


def documented_tests():
    with open(osp.join(REPO_ROOT, 'docs', 'reliability.md')) as f:
        text = f.read()
    return set(re.findall(r'`(tests/[\w/]+\.py)::(\w+)(?:\[[^`]*\])?`', text)), text


def test_every_fault_test_has_a_row_and_every_row_a_test():
    tests = fault_test_functions()
    assert len(tests) >= 15  # test functions; parametrized, they write 28 rows
    documented, _ = documented_tests()
    missing = [t for t in tests if t not in documented]
    stale = sorted(documented - set(tests))
    assert not missing, f'fault tests without a row in docs/reliability.md: {missing}'
    assert not stale, f'rows of docs/reliability.md naming no fault test: {stale}'


def test_render_groups_rows_by_section_and_refuses_unknown_sections():
    rows = [
        dict(section='kill', cells=['SIGKILL | now', 'resumed', 'nothing', '`a`'], key=['a']),
        dict(section='resume', cells=['stopped', 'equal', 'nothing', '`b`'], key=['b'])
    ]
    text = render('reliability.md', rows)
    assert text.index('## Interrupted and resumed runs') < text.index('## Killed processes')
    assert '| SIGKILL / now | resumed | nothing | `a` |' in text  # a | would break the table
    with pytest.raises(ValueError, match='unknown section'):
        render('reliability.md', [dict(rows[0], section='weather')])
