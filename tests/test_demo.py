"""The offline demo: its report logic, and a shortened run showing that PPO with the verifier learns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo.pretrain import PretrainSpec, corpus_token_stream, demo_tiny_spec, pretrain_base
from demo.run import (
    CONFIG_DIR,
    DemoOptions,
    comparison_table,
    learning_bar,
    load_pretrain_spec,
    parse_options,
    read_metrics,
    rollouts_per_update,
    window_mean,
)
from medrlvr_trl.tiny import TinySpec

REPO = Path(__file__).resolve().parents[1]
TEST_CACHE = REPO / "build" / "test-cache"
DEMO_CORPUS = str(REPO / "data" / "demo" / "corpus.txt")


def _results(ppo: float, base_cot: float, chance: float = 0.2, ppo_format: float = 1.0) -> dict:
    def entry(acc: float, fmt: float = 1.0) -> dict:
        return {"medqa": {"accuracy": acc, "accuracy_std": 0.02, "format_valid_rate": fmt, "n": 259}}

    return {"random": entry(chance), "base-cot": entry(base_cot), "ppo": entry(ppo, ppo_format)}


def test_learning_bar_met_only_when_every_check_passes():
    assert learning_bar(_results(ppo=0.6, base_cot=0.15))["met"]
    assert not learning_bar(_results(ppo=0.35, base_cot=0.15))["met"]  # +20 points and < 2x chance
    assert not learning_bar(_results(ppo=0.6, base_cot=0.15, ppo_format=0.8))["met"]


def test_comparison_table_lists_chance_first_and_marks_missing_splits():
    table = comparison_table(_results(ppo=0.6, base_cot=0.15))
    rows = table.splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == ["random", "base-cot", "ppo"]
    assert "60.0 +- 2.0" in rows[2] and rows[2].rstrip(" |").endswith("-")  # no OOD entry -> "-"


def test_comparison_table_ends_with_the_constant_letter_floor_of_each_split():
    constant = {"medqa": {"letter": "A", "accuracy": 0.277, "accuracy_std": 0.0125, "n": 1273}}
    rows = comparison_table(_results(ppo=0.6, base_cot=0.15), constant).splitlines()[2:]
    assert rows[-1].startswith("| constant letter | 27.7 +- 1.2 (A) | - | - | - |")
    assert "constant letter" not in comparison_table(_results(ppo=0.6, base_cot=0.15))


def test_pretrain_config_rejects_unknown_option_naming_the_file(tmp_path):
    config = tmp_path / "pretrain.yaml"
    config.write_text("steps: 10\nhidden: 64\n")
    with pytest.raises(ValueError, match=r"pretrain\.yaml: unknown option\(s\) hidden"):
        load_pretrain_spec(config, seed=0)


def test_demo_configs_agree_on_the_base_model_and_batch():
    spec = load_pretrain_spec(CONFIG_DIR / "pretrain.yaml", seed=0)
    assert spec.seq_len <= spec.tiny.max_position_embeddings
    import yaml

    ppo = yaml.safe_load((CONFIG_DIR / "ppo.yaml").read_text())
    assert ppo["total_episodes"] % rollouts_per_update(ppo) == 0
    base = DemoOptions.base_model.relative_to(REPO).as_posix()
    for name in ("ppo", "sft", "grpo", "rloo"):
        assert yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["model_name_or_path"] == base
    assert yaml.safe_load((CONFIG_DIR / "eval.yaml").read_text())["models"][:2] == [
        f"base-direct={base}:direct",
        f"base-cot={base}:cot",
    ]


def test_the_committed_demo_base_passes_its_lookup_gate_as_recorded():
    """The weights in data/demo/base are the recorded checkpoint: its lookup on the real questions is
    recomputed here (a wrong or damaged folder scores near chance, 20%)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from demo.experiments import lookup_learning

    folder = DemoOptions.base_model
    record = json.loads((folder / "pretraining.json").read_text(encoding="utf-8"))
    rows = [
        json.loads(line) for line in (REPO / lookup_learning.fact_recall.TEST_FILE).read_text().splitlines()
    ]
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    lookup = lookup_learning.real_question_lookup(model, AutoTokenizer.from_pretrained(str(folder)), rows)
    assert lookup == pytest.approx(record["id_test"]["lookup"], abs=1e-4)
    assert lookup >= lookup_learning.GATE


def test_demo_options_pretrain_flags_apply_to_pretrain_only():
    assert parse_options([]).base_model == DemoOptions.base_model
    assert parse_options(["--pretrain", "--pretrain_seed", "3"]).base_model is None
    with pytest.raises(SystemExit):
        parse_options(["--pretrain_seed", "3"])


def test_corpus_stream_ends_every_document_with_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    stream = corpus_token_stream(tokenizer, "first document\n\nsecond document\n")
    assert stream.count(tokenizer.eos_token_id) == 2 and stream[-1] == tokenizer.eos_token_id


def test_pretrain_reuses_a_finished_build(tmp_path):
    tiny = TinySpec(hidden_size=32, num_layers=1, intermediate_size=64, extra_corpora=(DEMO_CORPUS,))
    spec = PretrainSpec(tiny=tiny, corpus=DEMO_CORPUS, steps=2, batch_size=2, seq_len=32, warmup_steps=0)
    first = pretrain_base(tmp_path / "demo", spec)
    again = pretrain_base(tmp_path / "demo", spec)
    assert first.rebuilt and not again.rebuilt and again.path == first.path
    assert (first.path / "config.json").is_file() and (first.path / "tokenizer.json").is_file()


@pytest.mark.slow
def test_short_ppo_run_raises_verifier_reward(tmp_path):
    """A few PPO updates from a briefly pretrained base: reward must clearly rise (a sign error or a
    broken verifier would leave it flat or falling)."""
    base = pretrain_base(
        TEST_CACHE / "demo-200",
        PretrainSpec(tiny=demo_tiny_spec(DEMO_CORPUS), corpus=DEMO_CORPUS, steps=SHORT_PRETRAIN_STEPS),
    )
    out = tmp_path / "ppo"
    # One thread, as the demo runs it: the measured reward curve (margin 0.47) reproduces exactly.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "recipes/ppo_medqa.py",
        "--config",
        str(CONFIG_DIR / "ppo.yaml"),
        "--model_name_or_path",
        str(base.path),
        "--output_dir",
        str(out),
        "--total_episodes",
        str(SHORT_PPO_UPDATES * 16),
    ]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == SHORT_PPO_UPDATES
    first = window_mean(rows, "verifier/reward", first=True, fraction=0.25)
    last = window_mean(rows, "verifier/reward", first=False, fraction=0.25)
    assert last - first >= 0.2, json.dumps([round(r["verifier/reward"], 2) for r in rows])


SHORT_PRETRAIN_STEPS = 200
SHORT_PPO_UPDATES = 24


def test_pretraining_gives_the_same_weights_whatever_the_callers_thread_count(tmp_path):
    """The build cache calls two builds of one spec the same; they must be bit-identical, also when one
    is built under pytest's threads and the other under the demo's single thread."""
    import torch
    from safetensors.torch import load_file

    from demo.pretrain import train_causal_lm
    from medrlvr_trl.tiny import build_tiny

    tiny = TinySpec(hidden_size=64, num_layers=2, intermediate_size=128, extra_corpora=(DEMO_CORPUS,))
    spec = PretrainSpec(tiny=tiny, corpus=DEMO_CORPUS, steps=3, batch_size=4, seq_len=128, warmup_steps=0)
    init = build_tiny(tmp_path / "tiny", tiny).policy
    corpus = Path(DEMO_CORPUS).read_text(encoding="utf-8")
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            train_causal_lm(init, corpus, spec, tmp_path / f"threads{threads}")
            assert torch.get_num_threads() == threads  # the caller's setting is restored
            weights.append(load_file(tmp_path / f"threads{threads}" / "model.safetensors"))
    finally:
        torch.set_num_threads(before)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


@pytest.mark.parametrize("value, expected", [(None, "1"), ("", "1"), ("2", "2"), ("two", None), ("0", None)])
def test_demo_threads_come_from_omp_num_threads_and_a_bad_value_is_one_clear_error(
    monkeypatch, value, expected
):
    import torch

    from demo.run import use_demo_threads
    from medrlvr_trl.user_errors import UserError

    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    before = torch.get_num_threads()
    try:
        if expected is None:
            with pytest.raises(UserError, match="OMP_NUM_THREADS"):
                use_demo_threads()
        else:
            use_demo_threads()
            assert os.environ["OMP_NUM_THREADS"] == expected and torch.get_num_threads() == int(expected)
    finally:
        torch.set_num_threads(before)
