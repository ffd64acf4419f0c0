# rstn: every entry point of the project. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch for machines without a GPU: the CPU build (an unpinned torch pulls GBs of CUDA wheels).
TORCH_CPU ?= torch==2.13.0

.PHONY: help install test unit-test

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(BIN)/rstn  ## create .venv and install rstn with its dev extras

$(BIN)/rstn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing the default (CUDA) torch"; \
	else \
	  echo "no GPU: installing the CPU build $(TORCH_CPU)"; $(BIN)/pip install -q "$(TORCH_CPU)"; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

test: install unit-test  ## run the whole test suite

unit-test:  ## unit tests of the package
	$(BIN)/python -m pytest tests -q
