# genctr: two entry points, `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean images constraints

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
	$(BIN)/python -m pytest -q tests -n 2 --dist loadfile --no-loadscope-reorder --durations=10

lint: $(STAMP)
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/mypy

# Container images (container-images/): the CPU component image and the CUDA training image.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/genctr/genctr:$(VERSION)
DOCKER ?= docker

images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: no '$(DOCKER)' command on this machine;" \
	  "install Docker (or pass DOCKER=podman) where a container engine runs" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' cannot reach a container engine;" \
	  "start the daemon or set DOCKER_HOST" >&2; exit 1; }
	$(DOCKER) build -f container-images/Dockerfile -t $(IMAGE) .
	$(DOCKER) build -f container-images/Dockerfile.cuda -t $(IMAGE)-cuda .

# The images install with -c container-images/constraints.txt: the versions the tests ran with.
constraints: $(STAMP)
	$(BIN)/python container-images/freeze_constraints.py container-images/constraints.txt

clean:
	rm -rf $(VENV) .genctr
