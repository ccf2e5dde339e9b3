# The README's commands. Each sets up the environment first (once; later runs are a no-op)
# with tools/setup_env.sh, so a fresh clone needs nothing installed by hand.
PY := .venv/bin/python
LINT_PATHS := mmdualtoken tools tests configs setup.py

.PHONY: setup demo test test-fast lint complexity compat compat-short

setup:
	@tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

# the full suite: what CI runs (.ci/run), then the torch 2.1.2 matrix's short form
test: setup
	$(PY) -m pytest tests -n 2 --durations=15

# the inner loop: model, layer, config and import tests (no Runner trainings, no processes)
test-fast: setup
	$(PY) -m pytest tests -n 2 -m "not slow" -q

lint: setup
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --quiet --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive --parallel $(LINT_PATHS)

complexity: setup
	$(PY) tools/analysis/complexity.py --out docs/complexity.md

# the backbone on other torch releases (throwaway venvs; writes docs/compat_matrix.md)
compat:
	@tools/compat_matrix.sh

# torch 2.1.2 only: the import, shape, training-step and README-snippet tests (CI)
compat-short:
	@tools/compat_matrix.sh --short
