# genctr: two entry points, `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel first: a looser torch requirement would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/genctr demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests -n 2 --dist loadfile --durations=10

lint: $(STAMP)
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .genctr
