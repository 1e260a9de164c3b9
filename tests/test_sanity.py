"""The sanity task (`demo.sanity`) and `make sanity` (`demo.sanity_run`): the data is what the generator
writes, the cue alone fixes the gold letter, the warm-up carries no cue -> letter information, the
report's numbers are computed from the runs, and a short PPO run learns the task."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from demo.pretrain import pretrain_base
from demo.run import CONFIG_DIR as DEMO_CONFIGS
from demo.run import load_pretrain_spec, read_metrics, window_mean
from demo.sanity import CUES, build_rows, sanity_base, shuffled_gold, warmup_corpus, write_task
from demo.sanity_run import CONFIG_DIR, DATA_DIR, bar, letter_curves, results_table, run_sanity, verdict
from medrlvr_trl.prompts import LETTERS, build_prompt
from medrlvr_trl.user_errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text().splitlines()]


def test_committed_files_are_what_the_generator_writes(tmp_path):
    written = write_task(tmp_path)
    for name, path in written.items():
        committed = DATA_DIR / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), (
            f"{name}: run python -m demo.sanity --out data/sanity"
        )


@pytest.mark.parametrize("split", ["train.jsonl", "test.jsonl"])
def test_the_cue_alone_fixes_the_gold_letter_and_every_letter_is_gold_equally_often(split):
    rows = _rows(split)
    for row in rows:
        cue = row["meta_info"].split(":")[1]
        assert row["answer_idx"] == LETTERS[CUES.index(cue)]
        assert row["options"][row["answer_idx"]] == row["answer"]
        assert row["question"].count(cue) >= 3  # salient: several mentions in a short stem
    counts = Counter(row["answer_idx"] for row in rows)
    assert set(counts) == set(LETTERS[: len(CUES)]) and len(set(counts.values())) == 1


def test_held_out_questions_are_new():
    train = {(r["question"], tuple(r["options"].values())) for r in _rows("train.jsonl")}
    assert not any((r["question"], tuple(r["options"].values())) in train for r in _rows("test.jsonl"))


def test_control_keeps_the_letter_counts_but_breaks_the_cue_map():
    train, control = _rows("train.jsonl"), _rows("control/train.jsonl")
    assert Counter(r["answer_idx"] for r in control) == Counter(r["answer_idx"] for r in train)
    assert [r["question"] for r in control] == [r["question"] for r in train]
    cue_map_hits = sum(a["answer_idx"] == b["answer_idx"] for a, b in zip(train, control, strict=True))
    assert cue_map_hits / len(train) < 0.3  # about 1 / 5: the cue no longer predicts the gold letter
    assert all(r["options"][r["answer_idx"]] == r["answer"] for r in control)


def test_shuffled_gold_moves_letters_with_their_option_text():
    rows = build_rows(10, random.Random(0))
    control = shuffled_gold(rows, random.Random(1))
    assert sorted(r["answer_idx"] for r in control) == sorted(r["answer_idx"] for r in rows)


def test_warmup_corpus_has_the_format_and_the_cue_but_random_letters():
    rows = _rows("train.jsonl")
    documents = warmup_corpus(rows, random.Random(0)).split("\n\n")
    assert len(documents) == len(rows)
    by_cue: dict[str, Counter] = {}
    for row, document in zip(rows, documents, strict=True):
        prompt = build_prompt(row["question"], list(row["options"].values()))
        assert document.startswith(prompt)
        cue = row["meta_info"].split(":")[1]
        completion = document[len(prompt) :]
        assert completion.startswith(f" <think> The patient is on the {cue} ward.")
        letter = completion.split("<answer>")[1][0]
        by_cue.setdefault(cue, Counter())[letter] += 1
    for cue, letters in by_cue.items():  # every letter under every cue: no cue -> letter information
        assert set(letters) == set(LETTERS[: len(CUES)]), cue
        assert max(letters.values()) / sum(letters.values()) < 0.35, (cue, letters)


def test_letter_curves_read_accuracy_entropy_and_shares(tmp_path):
    rows = [
        {"update": 1, "letter": "A", "correct": True},
        {"update": 1, "letter": "B", "correct": False},
        {"update": 2, "letter": "A", "correct": True},
        {"update": 2, "letter": None, "correct": False},
        {"update": 2, "letter": "G", "correct": False},  # out of range: counted with the unanswered
        {"update": 2, "letter": "A", "correct": True},
    ]
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = letter_curves(tmp_path, n_options=5)
    assert curves["update"] == [1, 2]
    assert curves["accuracy"] == [0.5, 0.5]
    assert curves["letter_entropy"] == pytest.approx([1.0, 1.0])
    assert curves["A"] == [0.5, 0.5] and curves["B"] == [0.5, 0.0] and curves["E"] == [0.0, 0.0]


GOOD = {
    "before": 0.2,
    "after": 0.9,
    "format_valid_after": 0.99,
    "per_cue_after": {"A": 1.0, "B": 1.0, "C": 1.0, "D": 0.5, "E": 1.0},
    "updates": 100,
    "seconds": 200.0,
}
ALL_RUNS = {"ppo": GOOD, "grpo": GOOD, "rloo": GOOD, "control": {**GOOD, "after": 0.25}}


def test_bar_is_met_by_every_trainer_learning_every_cue_and_a_flat_control():
    assert bar(ALL_RUNS)["met"] and verdict(bar(ALL_RUNS)) == "MET"
    assert "| grpo | 0.200 | 0.900 | +0.700 | 0.990 | A 1.00 B 1.00 C 1.00 D 0.50 E 1.00 | 100 | 200 |" in (
        results_table(ALL_RUNS)
    )


@pytest.mark.parametrize(
    ("run", "change", "check"),
    [
        ("control", {"after": 0.9}, "control_lift_below_0.15"),
        ("grpo", {"after": 0.55}, "grpo_after_at_least_0.8"),
        ("rloo", {"before": 0.6}, "rloo_lift_at_least_0.4"),
        ("ppo", {"format_valid_after": 0.9}, "ppo_format_valid_at_least_0.95"),
        # 0.80 held-out with one cue never answered right: greedy answers are all or nothing per cue
        (
            "ppo",
            {"after": 0.8, "per_cue_after": {"A": 1.0, "B": 1.0, "C": 1.0, "D": 1.0, "E": 0.0}},
            "ppo_every_cue_at_least_0.5",
        ),
    ],
)
def test_bar_fails_on_each_check(run, change, check):
    result = bar({**ALL_RUNS, run: {**ALL_RUNS[run], **change}})
    assert not result["met"] and not result["checks"][check]
    assert check in verdict(result)


def test_bar_is_not_met_without_every_run():
    result = bar({"ppo": GOOD, "grpo": GOOD})
    assert all(result["checks"].values()) and not result["met"]
    assert result["missing_runs"] == ["rloo", "control"]
    assert "runs not made: rloo, control" in verdict(result)


def test_unknown_run_is_one_line_before_any_work(tmp_path):
    with pytest.raises(UserError, match="unknown sanity run"):
        run_sanity(["ppo", "dpo"], seed=0, output_dir=tmp_path, build_dir=tmp_path, verbose=False)
    assert not any(tmp_path.iterdir())


def test_sanity_configs_share_the_base_the_data_and_the_kl_anchor():
    import yaml

    configs = {
        name: yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()) for name in ("ppo", "grpo", "rloo")
    }
    assert {c["model_name_or_path"] for c in configs.values()} == {"build/demo/sanity-base"}
    assert {c["dataset_name"] for c in configs.values()} == {"data/sanity"}
    assert configs["ppo"]["kl_coef"] == configs["grpo"]["beta"] == configs["rloo"]["beta"]
    assert yaml.safe_load((CONFIG_DIR / "eval.yaml").read_text())["option_permutations"] == 1


SHORT_RUN_UPDATES = 60


@pytest.mark.slow
def test_short_ppo_run_learns_the_cues(tmp_path):
    """PPO from the warmed-up demo base, 60 updates: training accuracy must rise well above chance
    (a sign error, the reward on the wrong token or a broken advantage would leave it at 0.2)."""
    # The corpus-only demo base (cached in build/demo, as `make sanity` builds it): from a
    # 200-step base 40 updates stayed at chance (0.24 -> 0.17). Two builds of one base spec that differed
    # in their last bits (final pretraining loss 1.1286 vs 1.1299, most likely from different thread counts,
    # which pretraining now pins) took off at different updates: 40 updates gave a lift of 0.45 from one
    # and 0.27, still rising, from the other; 60 gave 0.38 and 0.42 (first vs last 12 updates). A broken
    # trainer or the control stays near 0.
    build_dir = REPO / "build" / "demo"
    demo_base = pretrain_base(build_dir, load_pretrain_spec(DEMO_CONFIGS / "pretrain.yaml", seed=0))
    base = sanity_base(build_dir, demo_base.path, DATA_DIR / "train.jsonl")
    out = tmp_path / "ppo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "recipes/ppo_medqa.py", "--config", str(CONFIG_DIR / "ppo.yaml")]
    command += [
        "--model_name_or_path",
        str(base),
        "--output_dir",
        str(out),
        "--total_episodes",
        str(SHORT_RUN_UPDATES * 16),
        "--lr_scheduler_type",
        "constant",  # the config decays to 0 over its 100 updates; these are its first 60 at full rate
    ]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    rows = read_metrics(out / "metrics.jsonl")
    first = window_mean(rows, "verifier/accuracy", first=True, fraction=0.2)
    last = window_mean(rows, "verifier/accuracy", first=False, fraction=0.2)
    assert last - first >= 0.25, json.dumps([round(r["verifier/accuracy"], 2) for r in rows])
