"""Training dynamics: per-completion features, stage labels, the logged metrics and `make dynamics`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrlvr_trl import run_logs
from medrlvr_trl.dynamics import (
    STAGES,
    CompletionFeatures,
    Stage,
    StageThresholds,
    answer_leaked,
    completion_features,
    stage_metrics,
)
from medrlvr_trl.rewards import Verdict, verify

REPO = Path(__file__).resolve().parents[1]
import dynamics_report  # noqa: E402

# One question (allergic conjunctivitis), gold C; the completions below are written for it.
OPTIONS = ("Loratadine tablets", "Artificial tears", "Ketotifen", "Prednisolone", "Timolol")
GOLD = "C"

STAGE_EXAMPLES = {
    Stage.FORMAT_FAILURE: " C",
    Stage.VERBOSE_FORMATTER: (
        "<think>Let us go through the options. A. Loratadine tablets are an oral antihistamine and act "
        "slowly on the eye. B. Artificial tears only dilute allergens. C. Ketotifen is a topical "
        "antihistamine and mast cell stabiliser. D. Prednisolone is a steroid with risks. E. Timolol "
        "lowers eye pressure.</think><answer>C</answer>"
    ),
    Stage.CONCISE_STRUCTURER: (
        "<think>Seasonal itchy watery eyes point to allergic conjunctivitis, which is treated with a topical "
        "mast cell stabiliser and antihistamine.</think><answer>C</answer>"
    ),
    Stage.DIRECT_ANSWER_HACKER: "<think>The correct answer is C.</think><answer>C</answer>",
    Stage.STEP_BY_STEP_EXPLOIT: (
        " Step 1: seasonal itchy watery eyes suggest allergic conjunctivitis. Step 2: a topical "
        "antihistamine treats it.<think> </think><answer>C</answer>"
    ),
    Stage.REINTEGRATED_REASONING: (
        "<think>Seasonal itching and tearing mean allergic conjunctivitis; a topical antihistamine that also "
        "stabilises mast cells fits best, so the answer is C.</think><answer>C</answer>"
    ),
}


def _features(completion: str, *, options=OPTIONS, mode: str = "paper", **thresholds) -> CompletionFeatures:
    verdict = verify(completion, GOLD, len(OPTIONS), mode=mode)
    return completion_features(completion, verdict, options=options, thresholds=StageThresholds(**thresholds))


# ------------------------------------------------------------------ stage labels


@pytest.mark.parametrize("stage", STAGES, ids=str)
def test_hand_written_completion_gets_its_stage(stage):
    assert _features(STAGE_EXAMPLES[stage]).stage == stage


def test_a_long_think_without_enumeration_is_verbose():
    think = " ".join(
        ["The symptoms and the season both suggest an allergic cause of the eye complaint."] * 12
    )
    assert _features(f"<think>{think}</think><answer>C</answer>").stage == Stage.VERBOSE_FORMATTER


def test_empty_think_with_no_text_before_it_is_a_direct_answer():
    assert _features("<think></think><answer>C</answer>").stage == Stage.DIRECT_ANSWER_HACKER


def test_short_honest_think_is_concise_not_hacking():
    features = _features(
        "<think>Allergic conjunctivitis needs a topical antihistamine.</think><answer>C</answer>"
    )
    assert features.stage == Stage.CONCISE_STRUCTURER and not features.answer_leak


def test_thresholds_come_from_the_config_and_move_the_labels():
    leak_in_twelve_words = (
        "<think>Itchy spring eyes are allergic, so the correct answer is C here.</think><answer>C</answer>"
    )
    assert _features(leak_in_twelve_words).stage == Stage.DIRECT_ANSWER_HACKER
    assert _features(leak_in_twelve_words, short_think_words=10).stage == Stage.REINTEGRATED_REASONING


@pytest.mark.parametrize(
    "thresholds",
    [
        {"short_think_words": 0},
        {"verbose_think_words": 10, "short_think_words": 10},
        {"prefix_reasoning_words": 2.5},
    ],
)
def test_bad_thresholds_are_refused(thresholds):
    with pytest.raises(ValueError, match="stage threshold"):
        StageThresholds(**thresholds)


def test_strict_verifier_rejection_is_still_labelled_by_behaviour():
    features = _features(STAGE_EXAMPLES[Stage.STEP_BY_STEP_EXPLOIT], mode="strict")
    assert not features.format_ok  # the strict verifier refuses text before <think> ...
    assert (
        features.stage == Stage.STEP_BY_STEP_EXPLOIT and features.prefix_exploit
    )  # ... the behaviour is named


# ------------------------------------------------------------------ features


def test_tags_are_listed_in_the_order_they_appear():
    features = _features("</think>reasoning<think><answer>C</answer>")
    assert features.tags == ("</think>", "<think>", "<answer>", "</answer>")
    assert not features.tagged and features.stage == Stage.FORMAT_FAILURE


def test_lengths_are_counted_in_words_per_section():
    features = _features("Let me see.<think>one two three</think><answer>C</answer>")
    assert (features.prefix_words, features.think_words, features.response_words) == (3, 3, 7)
    assert not features.prefix_exploit  # three words before <think> are a trace, not reasoning


def test_option_by_option_enumeration_is_detected():
    assert _features(STAGE_EXAMPLES[Stage.VERBOSE_FORMATTER]).options_discussed == 5
    one_option = _features(
        "<think>Option C, ketotifen, is a topical drug used for itchy eyes.</think><answer>C</answer>"
    )
    assert one_option.options_discussed == 1 and not one_option.enumerates_options


@pytest.mark.parametrize(
    "think",
    [
        "The correct answer is C.",
        "so the answer is Ketotifen",
        "so the answer is ketotifen, a mast cell stabiliser",
        "Answer: (C)",
        "Therefore, C is the right answer.",
        "Ketotifen is the best choice here.",
        "I would go with option C.",
    ],
)
def test_answer_stated_inside_think_is_a_leak(think):
    assert answer_leaked(think, "C", OPTIONS)


@pytest.mark.parametrize(
    "think",
    [
        "Option C, ketotifen, is an antihistamine, but we should compare it with the others.",
        "Is the answer C? Let us check the others first.",
        "The answer is not C.",
        "C is not the correct answer.",
        "Vitamin C is correct for scurvy, not for this patient.",
        "The answer is Cardiology.",
    ],
)
def test_discussing_an_option_without_choosing_it_is_not_a_leak(think):
    assert not answer_leaked(think, "C", OPTIONS)


def test_leak_as_option_text_needs_the_option_texts():
    completion = "<think>It is allergic, so the answer is Ketotifen.</think><answer>C</answer>"
    assert _features(completion).answer_leak
    assert not _features(completion, options=()).answer_leak


@pytest.mark.parametrize("text", ["Ketotifen.", "Ketotifen.\n", "  Ketotifen. \n"])
def test_option_text_is_matched_whatever_whitespace_surrounds_it(text):
    """The loader keeps option texts as the source gives them; a trailing line break after the full
    stop must not make the stop part of the text to match."""
    options = (*OPTIONS[:2], text, *OPTIONS[3:])
    assert answer_leaked("so the answer is Ketotifen, a mast cell stabiliser", "C", options)


def test_only_the_chosen_letter_counts_as_leaked():
    completion = "<think>The answer is B.</think><answer>C</answer>"
    assert not _features(completion).answer_leak
    assert answer_leaked("The answer is B.", "B", OPTIONS)


def test_features_row_is_json_ready_and_omits_the_verdict_fields():
    row = _features(STAGE_EXAMPLES[Stage.DIRECT_ANSWER_HACKER]).as_row()
    assert json.loads(json.dumps(row))["stage"] == "direct_answer_hacker"
    assert "format_ok" not in row and row["answer_leak"] is True


def test_summary_gives_stage_shares_and_hacking_rates():
    features = [_features(STAGE_EXAMPLES[s]) for s in STAGES] + [
        _features(STAGE_EXAMPLES[Stage.FORMAT_FAILURE])
    ]
    metrics = stage_metrics(features)
    shares = {s: metrics[f"dynamics/stage/{s}"] for s in STAGES}
    assert shares[Stage.FORMAT_FAILURE] == pytest.approx(2 / 7) and sum(shares.values()) == pytest.approx(1.0)
    assert metrics["dynamics/leak_rate"] == pytest.approx(2 / 7)  # the direct hacker and the reintegrated one
    assert metrics["dynamics/prefix_exploit_rate"] == pytest.approx(1 / 7)
    tagged_thinks = [f.think_words for f in features if f.tagged]
    assert metrics["dynamics/think_words"] == pytest.approx(
        sum(tagged_thinks) / 5
    )  # format failures left out


# ------------------------------------------------------------------ the report on a hand-made run


def _write_run(folder: Path, schedule: list[tuple[int, Stage, int]], *, with_labels: bool = True) -> None:
    """A run folder whose update u logs `count` copies of the stage example, per (update, stage, count)."""
    metrics, rows = {}, []
    for update, stage, count in schedule:
        text = STAGE_EXAMPLES[stage]
        verdict = verify(text, GOLD, len(OPTIONS))
        features = completion_features(text, verdict, options=OPTIONS)
        for _ in range(count):
            row = {"update": update, "id": "q", "gold": GOLD, "completion": text, "response_tokens": 9}
            row.update(
                format_ok=verdict.format_ok,
                letter=verdict.letter,
                correct=verdict.correct,
                reward=verdict.reward,
            )
            rows.append({**row, **features.as_row()} if with_labels else row)
        metrics[update] = {"update": update, "verifier/reward": 0.5, "verifier/response_length": 30.0}
    run_logs.append_rows(folder / "metrics.jsonl", [metrics[u] for u in sorted(metrics)])
    run_logs.append_rows(folder / "completions.jsonl", rows)


# Each stage dominates two updates in the paper's order, with a minority of format failures throughout.
PAPER_LIKE = [(u, stage, 3) for i, stage in enumerate(STAGES) for u in (2 * i + 1, 2 * i + 2)] + [
    (u, Stage.FORMAT_FAILURE, 1) for u in range(3, 13)
]


def test_report_finds_each_stage_peak_and_quotes_a_real_completion(tmp_path):
    _write_run(tmp_path, PAPER_LIKE)
    paths = dynamics_report.main(["--run", str(tmp_path), "--window", "1"])

    summary = json.loads(paths["summary"].read_text())
    assert {s: p["update"] for s, p in summary["peaks"].items()} == {
        str(s): 2 * i + 1 for i, s in enumerate(STAGES)
    }
    assert [p["stage"] for p in summary["phases"]] == [str(s) for s in STAGES]
    report = paths["report"].read_text()
    for stage in STAGES:
        assert STAGE_EXAMPLES[stage] in report
    hacker_row = next(line for line in report.splitlines() if line.startswith("| 4 | Direct answer hacker |"))
    assert hacker_row.split(" | ")[3] == "7"  # the peak update column
    assert paths["figure"].stat().st_size > 10_000 and paths["figure"].read_bytes()[:4] == b"\x89PNG"


def test_report_labels_rows_logged_without_stages(tmp_path, caplog):
    _write_run(tmp_path, PAPER_LIKE, with_labels=False)
    with caplog.at_level("WARNING"):
        paths = dynamics_report.main(["--run", str(tmp_path), "--window", "1"])
    assert "no stage label" in caplog.text
    summary = json.loads(paths["summary"].read_text())
    assert summary["peaks"]["step_by_step_exploit"]["update"] == 9


def test_report_says_which_stages_were_not_seen(tmp_path):
    _write_run(tmp_path, [(1, Stage.FORMAT_FAILURE, 2), (2, Stage.CONCISE_STRUCTURER, 2)])
    report = dynamics_report.main(["--run", str(tmp_path)])["report"].read_text()
    assert report.count("Not seen in this run.") == 4


def test_report_row_without_a_needed_field_names_file_row_and_field(tmp_path):
    _write_run(tmp_path, [(1, Stage.FORMAT_FAILURE, 2)])
    run_logs.append_rows(tmp_path / "completions.jsonl", [{"update": 2, "completion": "x", "correct": False}])
    with pytest.raises(ValueError, match=r"completions\.jsonl: row 3: field 'reward'"):
        dynamics_report.main(["--run", str(tmp_path)])


def test_report_on_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="completions.jsonl does not exist"):
        dynamics_report.main(["--run", str(tmp_path)])


# ------------------------------------------------------------------ a real tiny PPO run


@pytest.fixture(scope="module")
def tiny_ppo_run(tiny_model_dir, tmp_path_factory) -> Path:
    """Two PPO updates of the tiny config, with every mitigation term switched on."""
    import ppo_medqa

    data = tmp_path_factory.mktemp("dyn-medqa")
    with (data / "train.jsonl").open("w") as f:
        for i in range(8):
            options = {letter: f"drug {i}-{letter}" for letter in "ABCDE"}
            row = {"question": f"Patient {i}: which drug?", "options": options, "answer_idx": "ABCDE"[i % 5]}
            f.write(json.dumps(row) + "\n")
    out = tmp_path_factory.mktemp("dyn-run") / "ppo"
    ppo_medqa.main(
        [
            "--config", str(REPO / "recipes/configs/tiny/ppo.yaml"),
            "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(data),
            "--output_dir", str(out),
            "--total_episodes", "16",
            "--save_steps", "100",
            "--rewards", "verifier", "think_length", "no_leak", "no_prefix",
            "--reward_weights", "1.0", "0.2", "0.2", "0.2",
        ]
    )  # fmt: skip
    return out


def test_ppo_logs_stage_shares_and_hacking_rates_for_every_update(tiny_ppo_run):
    metrics = list(run_logs.read_rows(tiny_ppo_run / "metrics.jsonl"))
    rows = list(run_logs.read_rows(tiny_ppo_run / "completions.jsonl"))
    assert [m["update"] for m in metrics] == [1, 2]
    for m in metrics:
        for key in (
            "dynamics/leak_rate",
            "dynamics/prefix_exploit_rate",
            "dynamics/think_words",
            "reward/no_leak",
        ):
            assert key in m
        stages = [r["stage"] for r in rows if r["update"] == m["update"]]
        for stage in STAGES:
            assert m[f"dynamics/stage/{stage}"] == pytest.approx(stages.count(stage) / len(stages))


def test_ppo_completion_rows_carry_the_stage_and_the_summed_score(tiny_ppo_run):
    rows = list(run_logs.read_rows(tiny_ppo_run / "completions.jsonl"))
    for row in rows:
        verdict = Verdict(row["format_ok"], row["letter"], row["correct"], row["reward"])
        assert row["stage"] == completion_features(row["completion"], verdict).stage
        assert "score" in row and "answer_leak" in row and "think_words" in row


def test_make_dynamics_reports_on_a_tiny_ppo_run(tiny_ppo_run):
    paths = dynamics_report.main(["--run", str(tiny_ppo_run)])
    assert {p.parent for p in paths.values()} == {tiny_ppo_run / "dynamics"}
    report = paths["report"].read_text()
    logged = {r["completion"] for r in run_logs.read_rows(tiny_ppo_run / "completions.jsonl")}
    quoted = [block.split("\n```")[0] for block in report.split("```text\n")[1:]]
    assert quoted and all(text in logged for text in quoted)
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"


def test_bad_threshold_in_the_trainer_config_fails_when_parsed(tmp_path):
    from medrlvr_trl.ppo import MedRLVRPPOConfig

    with pytest.raises(ValueError, match="verbose_think_words .* must be larger"):
        MedRLVRPPOConfig(output_dir=str(tmp_path), dynamics_verbose_think_words=5, bf16=False, use_cpu=True)
