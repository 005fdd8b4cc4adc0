# qatrun: `make run` trains the default pair, `make test` runs the tests; both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Exact pair that installs on the dev/CI machines (pyproject keeps loose ranges for real users).
TORCH  := torch==2.14.1 torchvision==0.29.1
ARGS   ?=
NGPU   ?= 1

.PHONY: help install run test bench reproduce-mnist reproduce-mnist-quick reproduce-imagenet report-mnist clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch, torchvision and qatrun (editable)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: install  ## train the default pair (tanh vs adjusted STE, SGD, MNIST); ARGS="key=value ..."
	$(VENV)/bin/qatrun $(ARGS)

test: install  ## run the test suite (CPU; CUDA tests skip without a GPU)
	$(VENV)/bin/pytest -q $(ARGS)

bench: install  ## benchmark the pair against plain PyTorch (writes results/bench.json)
	$(VENV)/bin/qatrun-bench $(ARGS)

reproduce-mnist: install  ## full MNIST suite (66 runs, about 3.6 h on 2 CPU cores; ARGS=device=cuda on a GPU)
	bash scripts/reproduce_mnist.sh full $(ARGS)

reproduce-mnist-quick: install  ## reduced MNIST suite (37 runs of 40 steps, about 35 min on CPU)
	bash scripts/reproduce_mnist.sh quick $(ARGS)

reproduce-imagenet: install  ## ImageNet comparisons, ResNet-50 under torchrun: IMAGENET=/path [NGPU=8] [ARGS=...]
	@test -n "$(IMAGENET)" || { echo "usage: make reproduce-imagenet IMAGENET=/path/to/imagenet [NGPU=8]" >&2; exit 2; }
	bash scripts/reproduce_imagenet.sh $(IMAGENET) $(NGPU) $(ARGS)

clean:  ## remove run outputs (not the venv)
	rm -rf outputs multirun

report-mnist: install  ## redraw results/mnist from its runs (no training)
	$(VENV)/bin/qatrun-report results/mnist/runs --out results/mnist --drift experiment_name=long
