# The two commands of the README. Both set up the environment first (once; later runs are a
# no-op) with tools/setup_env.sh, so a fresh clone needs nothing installed by hand.
PY := .venv/bin/python

.PHONY: setup demo test complexity compat

setup:
	@tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests -n 2 --durations=15

complexity: setup
	$(PY) tools/analysis/complexity.py --out docs/complexity.md

# the backbone on other torch releases (throwaway venvs; writes docs/compat_matrix.md)
compat:
	@tools/compat_matrix.sh
