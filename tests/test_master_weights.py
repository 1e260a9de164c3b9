"""fp32 master weights in every training recipe: `--dtype bfloat16 --bf16 true` is bf16 compute.

Without DeepSpeed nothing keeps an fp32 copy of a bf16 weight, and an AdamW step of ~1e-6 on a weight
of ~0.02 (bf16 spacing there ~1.2e-4) rounds to nothing: measured, 2% of the policy's weights moved
in one PPO update at lr 1e-6 and 8% in three SFT steps. Each test trains a few steps at lr 1e-6 on
the CPU and checks that at least 99% of the trainable weights moved.

Input embeddings are left out of the count for the critic: rows of tokens absent from the batch get
no gradient in any dtype (the tiny policy ties them to its LM head, so every row of it moves).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from test_sft import load_recipe, tiny_sft_args
from transformers import AutoModelForCausalLM

from medrlvr_trl.critic_free import run_recipe

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "data" / "demo" / "medqa"
BF16 = ("--dtype", "bfloat16", "--bf16", "true", "--learning_rate", "1e-6")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """bf16 runs need an AcceleratorState built for bf16; the rest of the suite runs fp32."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _changed_fraction(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Share of elements training moved (the initial weights rounded to the trained dtype first)."""
    changed = sum(int((after[k] != before[k].to(after[k].dtype)).sum()) for k in before)
    return changed / sum(t.numel() for t in before.values())


def _policy_weights(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_ppo_bf16_compute_moves_every_policy_and_critic_weight(tiny_model_dir, tmp_path):
    out = tmp_path / "ppo"
    load_recipe("ppo_medqa").main([
        "--config", str(REPO / "recipes/configs/tiny/ppo.yaml"),
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(DEMO_DATA),
        "--output_dir", str(out), "--total_episodes", "8", "--num_mini_batches", "1", *BF16,
    ])  # fmt: skip

    info = json.loads((out / "run_info.json").read_text())
    assert (info["master_weights_dtype"], info["compute_dtype"]) == ("float32", "bfloat16")
    initial = _policy_weights(tiny_model_dir)
    trained = _policy_weights(out)
    assert all(
        v.dtype == torch.float32 for v in load_file(out / "model.safetensors").values()
    )  # master dtype
    assert _changed_fraction(initial, trained) >= 0.99

    pair = load_file(next(out.glob("checkpoint-*")) / "model.safetensors")  # policy + critic, as trained
    critic = {k.removeprefix("value_model."): v for k, v in pair.items() if k.startswith("value_model.")}
    backbone = {k: v for k, v in critic.items() if k.startswith("model.") and "embed_tokens" not in k}
    assert backbone and all(v.dtype == torch.float32 for v in critic.values())
    assert _changed_fraction({k: initial[k] for k in backbone}, backbone) >= 0.99


def test_sft_bf16_compute_moves_every_weight(tiny_model_dir, tmp_path):
    out = tmp_path / "sft"  # later flags override tiny_sft_args' fp32 ones
    extra = ("--max_train_samples", "24", "--num_train_epochs", "1", "--lr_scheduler_type", "constant", *BF16)
    load_recipe("sft_medqa").main(tiny_sft_args(tiny_model_dir, DEMO_DATA, out, *extra))
    info = json.loads((out / "run_info.json").read_text())
    assert (info["master_weights_dtype"], info["compute_dtype"]) == ("float32", "bfloat16")
    assert _changed_fraction(_policy_weights(tiny_model_dir), _policy_weights(out)) >= 0.99


def _length_reward(completions: list[str], **_: object) -> list[float]:
    """Varies within every group (the untrained tiny model never writes the tags the verifier needs)."""
    return [len(text) / 100 for text in completions]


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_critic_free_bf16_compute_moves_every_weight(kind, tiny_model_dir, tmp_path, monkeypatch):
    from trl import GRPOTrainer, RLOOTrainer

    from medrlvr_trl import critic_free
    from medrlvr_trl.critic_free import MedRLVRGRPOConfig, MedRLVRRLOOConfig

    monkeypatch.setattr(critic_free, "reward_functions", lambda *a, **k: [_length_reward])
    config, trainer = {"grpo": (MedRLVRGRPOConfig, GRPOTrainer), "rloo": (MedRLVRRLOOConfig, RLOOTrainer)}[
        kind
    ]
    out = tmp_path / kind
    argv = [
        "--config", str(REPO / f"recipes/configs/tiny/{kind}.yaml"),
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(DEMO_DATA),
        "--max_train_samples", "16", "--output_dir", str(out), "--total_completions", "16", *BF16,
    ]  # fmt: skip
    run_recipe(kind, config, trainer, argv)
    info = json.loads((out / "run_info.json").read_text())
    assert (info["master_weights_dtype"], info["compute_dtype"]) == ("float32", "bfloat16")
    assert _changed_fraction(_policy_weights(tiny_model_dir), _policy_weights(out)) >= 0.99


@pytest.mark.parametrize("recipe", ["ppo_medqa", "sft_medqa"])
def test_final_model_dtype_saves_the_trained_model_in_the_asked_dtype(recipe, tiny_model_dir, tmp_path):
    out = tmp_path / recipe
    if recipe == "ppo_medqa":
        argv = ["--config", str(REPO / "recipes/configs/tiny/ppo.yaml"), "--model_name_or_path", str(tiny_model_dir),
                "--dataset_name", str(DEMO_DATA), "--output_dir", str(out), "--total_episodes", "8"]  # fmt: skip
    else:
        argv = tiny_sft_args(
            tiny_model_dir, DEMO_DATA, out, "--max_train_samples", "8", "--num_train_epochs", "1"
        )
    load_recipe(recipe).main([*argv, "--final_model_dtype", "bfloat16"])
    assert {v.dtype for v in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    info = json.loads((out / "run_info.json").read_text())
    assert (info["master_weights_dtype"], info["saved_dtype"]) == ("float32", "bfloat16")
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16


def test_unknown_final_model_dtype_is_refused_before_training(tiny_model_dir, tmp_path):
    argv = tiny_sft_args(tiny_model_dir, DEMO_DATA, tmp_path / "sft", "--final_model_dtype", "bf16")
    with pytest.raises(ValueError, match="final_model_dtype: got 'bf16'; choose one of float32, bfloat16"):
        load_recipe("sft_medqa").main(argv)
