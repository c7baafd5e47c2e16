# `make demo`: install into .venv, then run the whole ∞-Diff pipeline on the embedded shapes data set.
# `make test`: install into .venv (CPU torch pinned, with the test and metrics extras) and run the test suite;
# CI (.ci/run) calls exactly this.
# `make style`: the formatter's check (ruff format, configured in pyproject.toml) and unused-name lint; CI runs it too.
# `make cuda-check`: compile (only) every csrc/*.cu, and each kernel candidate's edited ones, with nvcc against the
# installed torch's headers; CI runs it too.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test style format demo benchmark cuda-check

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[test,metrics]"
	touch $@

install: $(VENV)/.installed

test: install
	$(VENV)/bin/python -m pytest -q

style: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

cuda-check: install
	@if command -v nvcc >/dev/null; then \
		$(VENV)/bin/python -c "from infdiff.ops.extension import compile_check; compile_check()" && \
		$(VENV)/bin/python benchmarks/kernel_candidates.py --compile-check; \
	else echo "nvcc not found: the CUDA kernels were not compile-checked"; fi

format: install
	$(VENV)/bin/ruff format .

demo: install
	$(VENV)/bin/python experiments/demo.py

benchmark: install
	$(VENV)/bin/python benchmarks/sparse_conv.py --out benchmarks/results/sparse_conv_cpu.json
