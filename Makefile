# Two commands set everything up: `make demo` and `make test`. Both create .venv on first use (idempotent).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned here because this build machine serves these wheels locally; pyproject keeps loose ranges for users.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DATA  ?= data/synthetic
DEMO_RUN   ?= runs/demo
STAMP  := $(VENV)/.mtl3d-installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev,tensorboard]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/mtl3d download synthetic --out $(DEMO_DATA)

bench: $(STAMP)
	$(BIN)/python benchmarks/synthetic_generation.py

clean:
	rm -rf $(VENV) build dist *.egg-info
