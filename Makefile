# Two commands set everything up: `make demo` and `make test`. Both create .venv on first use (idempotent).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pinned here because this build machine serves these wheels locally; pyproject keeps loose ranges for users.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DATA  ?= data/synthetic
DEMO_RUN   ?= runs/demo
STAMP  := $(VENV)/.mtl3d-installed

.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev,tensorboard]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The inner-loop subset: everything but the end-to-end tests marked `slow` (tiny trainings, studies, subprocesses).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The whole product on the embedded synthetic scenes: data -> train (with the regularizer) -> evaluate -> predict ->
# novel views. Re-running reuses what exists (an interrupted run resumes from its last checkpoint).
demo: $(STAMP)
	@test -f $(DEMO_DATA)/meta.json || $(BIN)/mtl3d download synthetic --out $(DEMO_DATA)
	@if [ -f $(DEMO_RUN)/weights/last.state.pt ]; then $(BIN)/mtl3d train --resume $(DEMO_RUN); \
	 else $(BIN)/mtl3d train --preset demo --data $(DEMO_DATA) --out $(DEMO_RUN); fi
	$(BIN)/mtl3d evaluate --weights $(DEMO_RUN)/weights/best.safetensors --data $(DEMO_DATA) --rendered
	$(BIN)/mtl3d predict $(DEMO_DATA)/images/s0080_v00.png $(DEMO_DATA)/images/s0085_v02.png \
	  $(DEMO_DATA)/images/s0090_v01.png --weights $(DEMO_RUN)/weights/best.safetensors --out $(DEMO_RUN)/predictions
	$(BIN)/mtl3d render-views $(DEMO_DATA)/images/s0080_v00.png --weights $(DEMO_RUN)/weights/best.safetensors \
	  --out $(DEMO_RUN)/views --frames 24 --orbit-degrees 20
	@echo "demo outputs: dataset $(DEMO_DATA), run $(DEMO_RUN) (weights/, metrics.jsonl, results.csv),"
	@echo "  metrics $(DEMO_RUN)/weights/best.val.json, predictions $(DEMO_RUN)/predictions, views $(DEMO_RUN)/views"

bench: $(STAMP)
	$(BIN)/python benchmarks/synthetic_generation.py
	$(BIN)/python benchmarks/render_throughput.py
	$(BIN)/python benchmarks/train_step.py --preset demo
	$(BIN)/python benchmarks/train_step.py --preset hrnet18 --batch-size 2 --steps 10
	$(BIN)/python benchmarks/train_step.py --preset mtinet-hrnet18-nyuv2 --batch-size 2 --steps 30
	$(BIN)/python benchmarks/regularizer_step.py --preset hrnet18 --batch-size 2
	$(BIN)/python benchmarks/regularizer_step.py --preset hrnet18 --batch-size 2 --set regularizer.decode=point
	$(BIN)/python benchmarks/regularizer_step.py --preset demo
	$(BIN)/python benchmarks/inference_parity.py --preset demo
	$(BIN)/python benchmarks/edge_eval.py
	$(BIN)/python benchmarks/sequential_coverage.py
	$(BIN)/python benchmarks/pooled_coverage.py
	$(BIN)/python benchmarks/loader_throughput.py
	$(BIN)/python benchmarks/inference_backends.py --threads 1

clean:
	rm -rf $(VENV) build dist *.egg-info
