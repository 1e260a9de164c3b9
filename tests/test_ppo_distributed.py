"""PPO as users launch it: `accelerate launch` with 2 processes (DDP, ZeRO-2, ZeRO-3 on gloo), and a
run killed (SIGKILL) or stopped (SIGTERM: checkpoint and exit, tests/test_preemption.py) from outside,
then restarted with the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / "build" / "torch_extensions"))
    return env


def _recipe(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(REPO / "recipes/ppo_medqa.py"),
        "--config", str(REPO / "recipes/configs/tiny/ppo.yaml"),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(REPO / "data/demo/medqa"),
        "--output_dir", str(out),
        *extra,
    ]  # fmt: skip


def _updates(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("launch_config", ["cpu_ddp", "cpu_zero2", "cpu_zero3"])
def test_two_process_ppo_trains_and_saves_a_full_policy(launch_config, tiny_model_dir, tmp_path):
    out = tmp_path / launch_config
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / f"launch/{launch_config}.yaml")]
    command += _recipe(tiny_model_dir, out, "--total_episodes", "32", "--max_grad_norm", "0.5",
                       "--value_head_init_std", "0", "--final_model_dtype", "bfloat16")  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "clips gradients at 0.5" in done.stderr  # DeepSpeed's engine too, not accelerate's default 1.0

    updates = _updates(out)
    assert [u["episode"] for u in updates] == [16, 32]  # 8 rollouts per process x 2 processes per update
    assert all(u["policy/grad_norm"] > 0 and u["critic/grad_norm"] > 0 for u in updates)
    # A zero head gives values of exactly 0 before the first update (ZeRO-3 used to keep the 0.02 init),
    # and the reference equals the policy there: KL exactly 0 at step 0.
    assert updates[0]["critic/values_abs_max"] == 0.0 and updates[0]["critic/values_mean"] == 0.0
    assert updates[0]["objective/kl"] == 0.0
    assert updates[1]["critic/values_abs_max"] > 0
    trained = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert trained.dtype == torch.bfloat16  # final_model_dtype, after any backend gathered the weights
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trained_state, initial_state = trained.state_dict(), initial.state_dict()
    assert trained_state.keys() == initial_state.keys()
    assert all(
        trained_state[k].shape == initial_state[k].shape for k in initial_state
    )  # gathered, not shards
    assert any(not torch.equal(trained_state[k], initial_state[k]) for k in initial_state)


def test_two_process_reinforce_pp_baseline_trains_without_a_critic(tiny_model_dir, tmp_path):
    """REINFORCE++-baseline under 2-process DDP: each process samples whole prompt groups, the whitening
    statistics are gathered from both processes (their numbers: tests/test_reinforce_pp.py), and DDP syncs a
    wrapper that holds the policy alone."""
    out = tmp_path / "reinforce_pp"
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml")]
    command += _recipe(tiny_model_dir, out, "--total_episodes", "32", "--missing_eos_penalty", "1.0")
    command[command.index(str(REPO / "recipes/configs/tiny/ppo.yaml"))] = str(
        REPO / "recipes/configs/tiny/reinforce_pp.yaml"
    )
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no critic" in done.stderr
    updates = _updates(out)
    assert [u["episode"] for u in updates] == [16, 32]  # 2 prompts x 4 samples per process x 2 processes
    assert not [key for u in updates for key in u if key.startswith("critic/") or key == "loss/value_avg"]
    assert any(u["policy/grad_norm"] > 0 for u in updates)
    first = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    ids = [row["id"] for row in first if row["update"] == 1]
    # 4 prompts, 4 samples each, across the 2 processes; a prompt's samples adjacent (one group each)
    assert len(ids) == 16 and ids == [i for i in dict.fromkeys(ids) for _ in range(4)], ids
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)


def test_two_process_lora_ppo_trains_the_adapter_and_saves_a_merged_policy(tiny_model_dir, tmp_path):
    out = tmp_path / "lora"
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml")]
    lora = (
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    )
    command += _recipe(tiny_model_dir, out, "--total_episodes", "16", *lora)
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    changed = [name for name, weight in merged.items() if not torch.equal(weight, base[name])]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)
    assert _updates(out)[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # reference = adapter off


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM])
def test_killed_or_stopped_run_restarted_with_the_same_command_finishes(
    kill_signal, tiny_model_dir, tmp_path
):
    out = tmp_path / "run"
    command = [str(BIN / "python")] + _recipe(
        tiny_model_dir, out, "--total_episodes", "48", "--save_steps", "1"
    )
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-000002").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(kill_signal)
    process.wait(timeout=60)
    assert not (out / "config.json").exists(), "the run finished before the kill; nothing was tested"

    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming at update" in done.stderr
    assert [u["update"] for u in _updates(out)] == [1, 2, 3, 4, 5, 6]
    assert (out / "config.json").exists() and not list(out.glob("*.tmp"))


@pytest.mark.parametrize("launch_config", ["cpu_zero2", "cpu_zero3"])
def test_zero_loads_clips_and_restarts_adam_like_one_process(launch_config, no_spare_pad_dir, tmp_path):
    """tests/zero_probe.py on 2 processes: the critic head is drawn at the asked std (ZeRO-3 partitions it
    as it loads, so an init outside gathered parameters wrote nothing), an added pad row is the mean row,
    each model's gradient is clipped at max_grad_norm by its own norm, and after one critic-warmup update
    the policy's Adam state counts only its real steps."""
    out = tmp_path / "probe.json"
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / f"launch/{launch_config}.yaml"),
               str(REPO / "tests/zero_probe.py"), "--model", str(no_spare_pad_dir), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(out.read_text())
    assert probe["head_std"] == pytest.approx(0.5, rel=0.2)  # transformers' own init: 0.02
    assert probe["pad_row_is_mean"]
    assert probe["updates"] == 2
    steps = probe["stepped_norms"]  # 2 optimizer steps per update; the first update is critic warmup
    assert len(steps) == 4
    assert all(s["policy"] == 0.0 and s["critic"] == pytest.approx(1e-3, rel=1e-2) for s in steps[:2])
    assert all(n == pytest.approx(1e-3, rel=1e-2) for s in steps[2:] for n in s.values())  # each at the clip
    assert probe["adam_steps"] == {"policy": 2.0, "critic": 4.0}  # the policy's warmup steps do not count
