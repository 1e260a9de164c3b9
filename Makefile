# Every target depends on `install`, so a fresh clone needs nothing but `make <target>`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TORCH   ?= torch==2.13.0
ACCEL   ?=
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/build/torch_extensions

.PHONY: install test test-fast lint demo sft ppo eval bench clean

install: $(STAMP)

# torch first (a CPU build on these machines; users with CUDA may pre-install their own),
# then deepspeed without build isolation (its setup imports the installed torch), then us.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation "deepspeed>=0.19,<0.20"
	$(BIN)/pip install -q -e ".[deepspeed,dev]"
	touch $@

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check medrlvr_trl recipes tests bench
	$(BIN)/ruff format --check medrlvr_trl recipes tests bench

# The whole pipeline offline on the tiny model: pretrain (cached) -> SFT -> PPO -> eval -> report.
demo: install
	$(BIN)/python -m medrlvr_trl.demo $(ARGS)

# The second seed of the demo's learning-bar check (reuses the cached base model).
demo-seed1: install
	$(BIN)/python -m medrlvr_trl.demo --seed 1 --output_dir runs/demo-seed1 $(ARGS)

ppo: install
	$(BIN)/accelerate launch $(ACCEL) recipes/ppo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/ppo.yaml) $(ARGS)

clean:
	rm -rf build runs
