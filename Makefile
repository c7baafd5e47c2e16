# `make test`: install into a fresh .venv (CPU torch pinned) and run the test suite.
# CI (.ci/run) calls exactly this target.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test benchmark

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest -q

benchmark: install
	$(VENV)/bin/python benchmarks/sparse_conv.py --out benchmarks/results/sparse_conv_cpu.json
