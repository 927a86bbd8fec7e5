# genco: `make demo` runs the main job, `make test` runs the tests. Both install what they need first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test bench bench-quick clean

install: $(VENV)/.installed

# torch first, pinned to the CPU build on this machine's disk: a bare `torch` in an empty
# environment would resolve to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,vw,onnx]'
	touch $@

demo: install
	$(BIN)/genco demo

test: install
	$(BIN)/python -m pytest

bench-quick: install
	$(BIN)/python benchmarks/read_throughput.py --quick
	$(BIN)/python benchmarks/train_speed.py --quick
	$(BIN)/python benchmarks/generator_objective.py --quick
	$(BIN)/python benchmarks/variants.py --quick
	$(BIN)/python benchmarks/serving.py --quick
	$(BIN)/python benchmarks/component_regret.py --quick
	$(BIN)/python benchmarks/ope_validation.py --quick
	$(BIN)/python benchmarks/element_report.py --quick --out reports/element-report-quick
	$(BIN)/python benchmarks/table_form.py --quick
	if command -v hey >/dev/null; then $(BIN)/python benchmarks/http_load.py --quick; else echo 'hey is not installed: benchmarks/http_load.py skipped'; fi
	$(BIN)/genco bench --quick --quiet --out reports/bench-quick

bench: install
	$(BIN)/python benchmarks/read_throughput.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/generator_objective.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/http_load.py
	$(BIN)/python benchmarks/ope_validation.py
	$(BIN)/python benchmarks/element_report.py
	$(BIN)/python benchmarks/table_form.py
	$(BIN)/genco bench --out reports/bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis
