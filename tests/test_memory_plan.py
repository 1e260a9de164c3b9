"""The dry run's memory plan (`medrlvr_trl.memory_plan`): printed before anything loads, and moving the
right way with the launch and the config. Accuracy against measured peaks lives in
bench/bench_memory_plan.py (numbers in docs/benchmarks.md), not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrlvr_trl.memory_plan import (
    QWEN25_BASE_SHAPES,
    Launch,
    NoEstimate,
    PPOWorkload,
    estimate_ppo,
    memory_plan_lines,
    resolve_shape,
)

REPO = Path(__file__).resolve().parents[1]

import ppo_medqa  # noqa: E402

PAPER_CONFIG = str(REPO / "recipes/configs/ppo_qwen2.5-3b.yaml")
QWEN_3B = QWEN25_BASE_SHAPES["qwen/qwen2.5-3b"]
PAPER_WORK = PPOWorkload(
    prompt_length=1024, response_length=1024, micro_batch=4, rollout_chunk=32, rollouts_per_device=32,
    compute_bytes=2, gradient_checkpointing=True,
)  # fmt: skip


def _memory_lines(text: str) -> list[str]:
    key = "memory per device (estimate):"
    return [line[line.index(key) :] for line in text.splitlines() if key in line]


def test_paper_config_dry_run_prints_the_memory_line_under_zero3(caplog, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "32")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with caplog.at_level("INFO"):
        ppo_medqa.main(["--config", PAPER_CONFIG, "--dry_run", "true", "--bf16", "false"])
    (line,) = _memory_lines(caplog.text)
    assert line.startswith("memory per device (estimate): weights ") and line.endswith(" GiB")
    assert "DeepSpeed ZeRO-3, world size 32" in caplog.text
    assert "Qwen/Qwen2.5-3B" in caplog.text  # the shape came from the built-in table


def test_unknown_hub_id_says_in_one_line_that_there_is_no_estimate(caplog):
    with caplog.at_level("INFO"):
        ppo_medqa.main(
            ["--config", PAPER_CONFIG, "--dry_run", "true", "--bf16", "false",
             "--model_name_or_path", "someone/not-a-known-model"]
        )  # fmt: skip
    (line,) = _memory_lines(caplog.text)
    assert "not available" in line and "someone/not-a-known-model" in line and "config.json" in line
    assert "Traceback" not in caplog.text


def test_zero_stages_shrink_weights_gradients_and_optimizer_states():
    ddp, zero2, zero3 = (
        estimate_ppo(QWEN_3B, PAPER_WORK, launch)
        for launch in (Launch(world_size=32), Launch(32, deepspeed=True, zero_stage=2), Launch(32, True, 3))
    )
    for component in ("weights", "optimizer", "gradients"):
        assert getattr(zero3, component) <= getattr(zero2, component) < getattr(ddp, component), component
    assert zero3.weights < zero2.weights and zero3.total < zero2.total < ddp.total
    offloaded = estimate_ppo(QWEN_3B, PAPER_WORK, Launch(32, True, 3, offload_optimizer=True))
    assert offloaded.optimizer == 0 < zero3.optimizer


def test_launch_is_read_from_the_accelerate_environment(tmp_path):
    env = {"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true",
           "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}  # fmt: skip
    # accelerate's default stage is 2
    assert Launch.from_env(env) == Launch(8, True, 2, offload_optimizer=True)
    ds_config = tmp_path / "ds.json"
    ds_config.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    from_file = Launch.from_env({**env, "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ds_config)})
    assert (from_file.zero_stage, from_file.offload_params) == (3, True)
    assert Launch.from_env({}) == Launch(world_size=1)


def test_gradient_checkpointing_lowers_activations():
    with_gc = estimate_ppo(QWEN_3B, PAPER_WORK, Launch(32, True, 2))
    without = estimate_ppo(QWEN_3B, PPOWorkload(**{**PAPER_WORK.__dict__, "gradient_checkpointing": False}),
                           Launch(32, True, 2))  # fmt: skip
    assert with_gc.activations < without.activations
    assert (
        with_gc.activations_other == without.activations and without.activations_other == with_gc.activations
    )
    assert "with gradient checkpointing on" in with_gc.line() and "with it off" in with_gc.line()


def test_smaller_rollout_chunks_shrink_the_scoring_logits():
    big = estimate_ppo(QWEN_3B, PAPER_WORK, Launch(32, True, 2))
    small = estimate_ppo(
        QWEN_3B, PPOWorkload(**{**PAPER_WORK.__dict__, "rollout_chunk": 4}), Launch(32, True, 2)
    )
    assert small.phases["scoring"] < big.phases["scoring"] / 4
    assert small.kv_cache == big.kv_cache / 8


def test_lora_drops_the_reference_and_most_optimizer_states():
    lora = estimate_ppo(QWEN_3B, PPOWorkload(**{**PAPER_WORK.__dict__, "lora_rank": 16}), Launch(1))
    full = estimate_ppo(QWEN_3B, PAPER_WORK, Launch(1))
    assert "reference 0.00 GiB (none: LoRA)" in " ".join(lora.detail_lines())
    assert lora.optimizer < full.optimizer * 0.51  # the critic still trains in full


def test_a_local_folders_config_json_is_read(tmp_path):
    config = {"model_type": "qwen2", "num_hidden_layers": 3, "hidden_size": 96, "intermediate_size": 200,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = resolve_shape(str(tmp_path))
    assert (shape.num_layers, shape.hidden_size, shape.vocab_size, shape.tie_word_embeddings) == (
        3,
        96,
        1000,
        False,
    )
    assert shape.causal_lm_params - shape.critic_params == 1000 * 96 - 96  # LM head vs score head

    class Args:  # the fields memory_plan reads from the recipe's dataclasses
        max_prompt_length, response_length, per_device_train_batch_size = 64, 32, 2
        gradient_accumulation_steps, num_mini_batches, local_rollout_forward_batch_size = 1, 2, 4
        bf16 = fp16 = gradient_checkpointing = False

    class ModelArgs:
        model_name_or_path, dtype, use_peft = str(tmp_path), "float32", False

    lines = memory_plan_lines(Args(), ModelArgs(), env={})
    assert str(tmp_path / "config.json") in lines[0] and lines[-1].endswith(" GiB")


def test_a_folder_without_config_json_is_no_estimate(tmp_path):
    with pytest.raises(NoEstimate, match="no config.json"):
        resolve_shape(str(tmp_path))


def test_built_in_table_matches_the_published_parameter_counts():
    published = {
        "qwen/qwen2.5-0.5b": 0.49,
        "qwen/qwen2.5-1.5b": 1.54,
        "qwen/qwen2.5-3b": 3.09,
        "qwen/qwen2.5-7b": 7.61,
    }
    for name, billions in published.items():  # the model cards' "Number of Parameters"
        assert abs(QWEN25_BASE_SHAPES[name].causal_lm_params / 1e9 - billions) < 0.01, name


def test_vllm_rollouts_count_the_engine_share_instead_of_the_generation_phase():
    """The colocated engine takes vllm_gpu_memory_utilization of the GPU while it samples and sleeps otherwise."""
    work = {**PAPER_WORK.__dict__, "rollout_chunk": 8}  # the paper config's chunk
    hf = estimate_ppo(QWEN_3B, PPOWorkload(**work), Launch(32, True, 3))
    share = estimate_ppo(QWEN_3B, PPOWorkload(**{**work, "vllm_share": 0.3}), Launch(32, True, 3))
    greedy = estimate_ppo(QWEN_3B, PPOWorkload(**{**work, "vllm_share": 0.9}), Launch(32, True, 3))
    engine = 0.3 * 39.59 * 2**30
    assert share.total_on("A100-40GB") == hf.resident + max(engine, hf.phases["update"], hf.phases["scoring"])
    assert share.fits("A100-40GB") and not greedy.fits("A100-40GB")  # 0.9 x 39.59 GiB + resident > 35.6
    assert share.total_on("A100/H100-80GB") > share.total_on("A100-40GB")
    assert "the engine takes 30% of the GPU" in " ".join(share.detail_lines())
