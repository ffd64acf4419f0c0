# rstn: every entry point of the project. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch for machines without a GPU: the CPU build from PyTorch's CPU wheel index (PyPI's torch pulls GBs of
# CUDA wheels); where that index cannot be reached, from the default index (with a local CPU wheel, or CUDA's).
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: help install test unit-test replicate notebooks book serve nbval vendor browser-test data table bench train-cpu

# The book. PROFILE: smoke | quick | paper | auto (replicate: paper on CUDA, else quick; notebooks and
# table: auto stands for best, the best profile that has results). A profile other than the one the book
# shows (the best with results) renders into _build/scratch/PROFILE/ and leaves book/ as it is; INTO_BOOK=1
# writes book/.
# FORCE=1 retrains rows whose results exist.
PROFILE ?= auto
SEEDS ?= 0
FORCE ?=
INTO_BOOK ?=
DEVICE ?=
PORT ?= 8000
BUDGET ?= 2h
LANES ?= 1

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(BIN)/rstn  ## create .venv and install rstn with its dev extras

$(BIN)/rstn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "GPU found: installing the default (CUDA) torch"; \
	else \
	  echo "no GPU: installing the CPU build $(TORCH_CPU) from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/pip install -q --index-url $(TORCH_CPU_INDEX) --timeout 20 --retries 1 "$(TORCH_CPU)" || { \
	    echo "$(TORCH_CPU_INDEX) is unreachable: $(TORCH_CPU) from the default index instead"; \
	    $(BIN)/pip install -q "$(TORCH_CPU)"; }; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

test: install unit-test nbval  ## run the whole test suite (unit tests incl. the training-notebook smoke run, nbval)

unit-test:  ## unit tests of the package
	$(BIN)/python -m pytest tests -q

replicate: install  ## data -> train every Table 1 row via papermill -> chapters -> book [PROFILE= SEEDS="0 1" FORCE=1 DEVICE= INTO_BOOK=1]
	$(BIN)/rstn replicate --profile $(PROFILE) --seeds $(SEEDS) $(if $(FORCE),--force) $(if $(DEVICE),--device $(DEVICE)) $(if $(INTO_BOOK),--into-book)
	$(BIN)/rstn table --profile paper --write-readme README.md
	$(MAKE) book

notebooks: install  ## execute the chapters (not training) into book/ from existing results, and README's table [PROFILE= INTO_BOOK=1]
	$(BIN)/rstn chapters --profile $(if $(filter-out auto,$(PROFILE)),$(PROFILE),best) $(if $(INTO_BOOK),--into-book)
	$(BIN)/rstn table --profile paper --write-readme README.md

book: install  ## build the Jupyter Book into _build/html: warnings are errors, no error outputs, nothing from the network
	$(BIN)/python -m pytest -q tests/test_book_offline.py -k error_output
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	$(BIN)/python -m pytest -q tests/test_book_offline.py

serve:  ## serve the built book on http://localhost:$(PORT)
	$(BIN)/python -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

nbval: install  ## re-execute the executed notebooks in book/ and compare their text outputs (options: pyproject.toml)
	@# fetch MNIST first, so that its download messages land here and not in a compared cell's stderr
	$(BIN)/rstn mnist
	$(BIN)/python -m pytest -q --nbval book/

browser-test: install book  ## the explorers in headless Chromium on the built book (installs Chromium, playwright-core)
	bash scripts/ci-browser-deps.sh
	RSTN_BROWSER_TEST=1 $(BIN)/python -m pytest tests/browser -q -s

train-cpu: install  ## the paper profile's cheap rows on this CPU, cheapest first, resuming, at low priority [BUDGET=2h LANES=1]
	nice -n 19 $(BIN)/rstn train --cpu-queue --lanes $(LANES) --device cpu --budget $(BUDGET) --progress text

data: install  ## generate (or read from the cache) the cluttered sequences and write a PNG of samples
	$(BIN)/rstn data

table: install  ## print Table 1, ours beside the paper's: the best profile with results [PROFILE=]
	$(BIN)/rstn table $(if $(filter-out auto,$(PROFILE)),--profile $(PROFILE))

bench: install  ## the generator and training-throughput benchmarks (CPU sizes; add --device cuda on a GPU)
	$(BIN)/python benchmarks/bench_generator.py
	$(BIN)/python benchmarks/bench_train.py

vendor:  ## re-copy MathJax, RequireJS and the widget manager from npm into book/_static/vendor (needs npm)
	tools/vendor/vendor.sh
