# `make demo`: install into .venv, then run the whole ∞-Diff pipeline on the embedded shapes data set.
# `make test`: install into .venv (CPU torch pinned) and run the test suite; CI (.ci/run) calls exactly this.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test demo benchmark

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest -q

demo: install
	$(VENV)/bin/python experiments/demo.py

benchmark: install
	$(VENV)/bin/python benchmarks/sparse_conv.py --out benchmarks/results/sparse_conv_cpu.json
