# qatrun: `make run` trains the default pair, `make test` runs the tests; both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Exact pair that installs on the dev/CI machines (pyproject keeps loose ranges for real users).
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=
NGPU   ?= 1
WHEELS ?=

.PHONY: help install run test test-fast docs bench reproduce-mnist reproduce-mnist-quick reproduce-imagenet report-mnist gpu-carry clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch, torchvision, qatrun (editable) and the test and docs tools

# Quiet: one line per step and the time it took; pip's warnings and errors still show. PIP_ENV drops
# setuptools' notice that an editable install uses a meta path finder (needed for configs/ ->
# qatrun.configs), an InformationOnly message; tests/test_packaging.py installs with the same.
PIP_ENV := PYTHONWARNINGS="ignore:Editable installation"

$(STAMP): pyproject.toml
	@start=$$(date +%s); set -e; \
	echo "make install: virtual environment $(abspath $(VENV))"; \
	python3 -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	echo "  $(TORCH)"; \
	$(PY) -m pip install -q $(TORCH); \
	echo "  qatrun $$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) (editable, from $(CURDIR)) with its dependencies and the [test,docs] extras"; \
	$(PIP_ENV) $(PY) -m pip install -q -e '.[test,docs]'; \
	touch $(STAMP); \
	echo "make install: done in $$(( $$(date +%s) - start )) s; commands in $(abspath $(VENV))/bin (qatrun, qatrun-report, qatrun-bench)"

run: install  ## train the default pair (tanh vs adjusted STE, SGD, MNIST); ARGS="key=value ..."
	$(VENV)/bin/qatrun $(ARGS)

test: install  ## the full test suite, as CI runs it, docs build included (CPU; CUDA tests skip without a GPU)
	$(VENV)/bin/pytest -q $(ARGS)

test-fast: install  ## the inner loop: every test not marked slow (under 2 min on 2 cores)
	$(VENV)/bin/pytest -q -m "not slow" $(ARGS)

docs: install  ## serve the documentation site at http://127.0.0.1:8000 (mkdocs serve; ARGS=-a host:port)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve $(ARGS)

# the pair's cases, then each quantizer's single run and pair (qatrun.bench.quantizers)
BENCH_CASES := auto,quantizers
bench: install  ## benchmark the pair against plain PyTorch, and each quantizer (writes results/bench.json)
	$(VENV)/bin/qatrun-bench $(or $(ARGS),--cases $(BENCH_CASES))

reproduce-mnist: install  ## full MNIST suite (236 runs, about 6.5 h on 2 CPU cores; ARGS=device=cuda on a GPU)
	bash scripts/reproduce_mnist.sh full $(ARGS)

reproduce-mnist-quick: install  ## reduced MNIST suite (37 runs of 40 steps, about 35 min on CPU)
	bash scripts/reproduce_mnist.sh quick $(ARGS)

reproduce-imagenet: install  ## ImageNet comparisons, ResNet-50 under torchrun: IMAGENET=/path [NGPU=8] [ARGS=...]
	@test -n "$(IMAGENET)" || { echo "usage: make reproduce-imagenet IMAGENET=/path/to/imagenet [NGPU=8]" >&2; exit 2; }
	bash scripts/reproduce_imagenet.sh $(IMAGENET) $(NGPU) $(ARGS)

gpu-carry:  ## fill the ignored .gpu/ for scripts/gpu_check.sh on a machine without network (WHEELS=folder)
	@test -n "$(WHEELS)" || { echo "usage: make gpu-carry WHEELS=DIR (DIR holds the wheels and mnist/, the four idx .gz files)" >&2; exit 2; }
	@test -d "$(WHEELS)/mnist" || { echo "make gpu-carry: $(WHEELS) has no mnist/ folder; WHEELS= names the folder of the wheels (hydra-core, omegaconf, antlr4, setuptools, wheel) and mnist/ (the four idx .gz files)" >&2; exit 2; }
	mkdir -p .gpu/mnist && cp -f $(WHEELS)/*.whl .gpu/ && cp -f $(WHEELS)/mnist/*.gz .gpu/mnist/
	git rev-parse --short HEAD > .gpu/commit
	@echo "make gpu-carry: $$(ls .gpu/*.whl | wc -l) wheels, $$(ls .gpu/mnist | wc -l) MNIST files, commit $$(cat .gpu/commit); carry .gpu"

clean:  ## remove run outputs (not the venv)
	rm -rf outputs multirun

report-mnist: install  ## redraw results/mnist from its runs (no training)
	bash scripts/reproduce_mnist.sh report
