"""The repository passes its own lint settings (setup.cfg: OpenMMLab's flake8, isort and yapf
settings with 100-column lines) with zero findings: what `make lint` runs."""
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow
PATHS = ['mmdualtoken', 'tools', 'tests', 'configs', 'setup.py']
LINTERS = {
    'flake8': ['flake8', *PATHS],
    'isort': ['isort', '--quiet', '--check-only', '--diff', *PATHS],
    'yapf': ['yapf', '--diff', '--recursive', '--parallel', *PATHS],
}


@pytest.mark.parametrize('linter', sorted(LINTERS))
def test_no_findings(linter):
    proc = subprocess.run([sys.executable, '-m', *LINTERS[linter]],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600)
    findings = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not findings, (
        f'{linter} has findings (fix them, or run `make lint` to see them):\n{findings[-6000:]}')
