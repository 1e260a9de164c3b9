"""Evaluation: parsing what to evaluate, scoring fixed completions, generation, the recipe end to end."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sft import load_recipe

from medrlvr_trl import evaluation
from medrlvr_trl.data import QuestionIndex, unique_question_indices
from medrlvr_trl.evaluation import (
    EvalReport,
    MCQAEvalArguments,
    MissingModelError,
    ModelSpec,
    accuracy_summary,
    consistency_rate,
    dedup_summary,
    describe_dataset,
    direct_letter,
    fallback_letter,
    gold_letter_distribution,
    headline_entries,
    headline_pair,
    lenient_letter,
    letter_distribution,
    load_accuracy_metric,
    model_role,
    paired_comparisons,
    parse_dataset_specs,
    parse_model_specs,
    parse_train_dataset,
    predict_permutations,
    prediction_path,
    prediction_records,
    random_guess,
    random_summary,
    resolve_model,
    results_markdown,
    score_completion,
    scoring_rules,
    shift_options,
    shift_row,
    summarise_dataset,
)
from medrlvr_trl.generation import Completion, GenerationSettings, generate_hf
from medrlvr_trl.plots import plot_accuracy_bars
from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.stats import bootstrap_means, bootstrap_std
from medrlvr_trl.user_errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write_medqa(folder: Path, split: str, n: int) -> Path:
    """MedQA-schema rows (options as a letter -> text dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{split}.jsonl").open("w") as handle:
        for i in range(n):
            options = {letter: f"drug {letter.lower()}{i}" for letter in "ABCD"}
            answer = "ABCD"[i % 4]
            row = {"question": f"Which drug treats condition {i}?", "options": options, "answer_idx": answer}
            handle.write(json.dumps({**row, "answer": options[answer]}) + "\n")
    return folder


def write_mmlu_pro(folder: Path, categories: list[str]) -> Path:
    """MMLU-Pro-schema rows with ten options and a category per row."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "test.jsonl").open("w") as handle:
        for i, category in enumerate(categories):
            options = [f"choice {k} of {i}" for k in range(10)]
            row = {"question_id": i, "question": f"Health question {i}?", "options": options}
            handle.write(json.dumps({**row, "answer": "ABCDEFGHIJ"[i % 10], "category": category}) + "\n")
    return folder


# --- what to evaluate ----------------------------------------------------------------------------


def test_model_entries_accept_comma_and_list_forms_with_optional_mode_and_template():
    parsed = parse_model_specs(["sft=runs/sft,ppo=runs/ppo:cot", "base=Qwen/Qwen2.5-3B:direct:r1"])
    assert parsed == [
        ("sft", "runs/sft", None, None),
        ("ppo", "runs/ppo", "cot", None),
        ("base", "Qwen/Qwen2.5-3B", "direct", "r1"),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("runs/sft", "expected LABEL="),
        ("a=runs/a:fast", "unknown answer mode 'fast'"),
        ("a=x,a=y", "labels must be unique"),
        ("random=x", "reserved"),
    ],
)
def test_bad_model_entries_are_rejected_with_the_expected_syntax(entry, message):
    with pytest.raises(ValueError, match=message):
        parse_model_specs(entry)


def test_dataset_entries_carry_split_category_and_hub_config():
    medqa, mmlu, bigbio = parse_dataset_specs(
        "medqa=data/demo/medqa,mmlu=TIGER-Lab/MMLU-Pro@test@category=health,dev=bigbio/med_qa:med_qa_en_source@validation"
    )
    assert (medqa.source, medqa.split, medqa.category) == ("data/demo/medqa", "test", None)
    assert (mmlu.source, mmlu.split, mmlu.category) == ("TIGER-Lab/MMLU-Pro", "test", "health")
    assert (bigbio.source, bigbio.split) == ("bigbio/med_qa:med_qa_en_source", "validation")
    assert medqa.revision is None
    (pinned,) = parse_dataset_specs("medqa=bigbio/med_qa:med_qa_en_source@test@revision=0123abc")
    assert (pinned.source, pinned.split, pinned.revision) == (
        "bigbio/med_qa:med_qa_en_source",
        "test",
        "0123abc",
    )


def test_run_info_of_a_trained_model_sets_its_answer_mode_and_template(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "sft")
    (folder / "run_info.json").write_text(json.dumps({"answer_mode": "direct", "eval_prompt_template": "r1"}))
    assert resolve_model("sft", str(folder), None, None).answer_mode == "direct"
    assert resolve_model("sft", str(folder), None, None).prompt_template == "r1"
    assert resolve_model("sft", str(folder), "cot", None).prompt_template == "r1"  # the entry wins on mode
    plain = resolve_model("base", str(tiny_model_dir), "direct", None)
    assert (plain.answer_mode, plain.prompt_template) == ("direct", "direct")


def test_a_run_trained_with_the_strict_verifier_is_scored_with_it(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "ppo")
    reward = "verifier mode=strict {'format_error': -1.0, 'wrong': 0.0, 'correct': 1.0}"
    (folder / "run_info.json").write_text(json.dumps({"kind": "ppo", "answer_mode": "cot", "reward": reward}))
    spec = resolve_model("ppo", str(folder), None, None)
    assert spec.verifier_mode == "strict"
    assert resolve_model("base", str(tiny_model_dir), "cot", None).verifier_mode == "paper"
    rows = [{"id": "q1", "question": "Q?", "answer": "B", "options": ["w", "x", "y", "z"]}]
    prefixed = [Completion("Reasoning first. <think>r</think><answer>B</answer>", 9)]  # paper passes it
    (strict,) = predict_permutations(rows, spec, 1, lambda prompts: prefixed)[0]
    (paper,) = predict_permutations(rows, ModelSpec("b", "p", "cot", "r1"), 1, lambda prompts: prefixed)[0]
    assert (strict["format_ok"], strict["correct"], strict["reward"]) == (False, False, -1.0)
    assert (paper["format_ok"], paper["correct"]) == (True, True)


@pytest.mark.parametrize(
    ("info", "mode"),
    [
        (None, "paper"),
        ({"reward": "verifier mode=paper {}"}, "paper"),
        ({"reward": "verifier mode=strict {}; terms {}"}, "strict"),
        ({"verifier_mode": "strict", "reward": "verifier mode=paper"}, "strict"),
    ],
)
def test_run_verifier_mode_reads_the_key_else_the_reward_line_else_paper(info, mode):
    assert evaluation.run_verifier_mode(info) == mode


def test_an_unknown_verifier_mode_in_run_info_is_a_user_error():
    with pytest.raises(UserError, match="verifier mode 'loose'"):
        evaluation.run_verifier_mode({"verifier_mode": "loose"})


@pytest.mark.parametrize(
    ("label", "info", "role"),
    [
        ("sft", None, "sft"),
        ("ppo", None, "rl"),
        ("grpo-3b", None, "rl"),
        ("base-cot", None, "base"),
        ("my-model", {"kind": "rloo"}, "rl"),
        ("candidate", {"kind": "sft", "answer_mode": "direct"}, "sft"),
        ("ppo", {"answer_mode": "cot"}, "rl"),  # no kind recorded: the label decides
        ("dropout", None, "base"),  # "ppo" inside a word is not the word ppo
        ("ppo_from_sft", None, "rl"),  # an RL run started from the SFT model
        ("sft-then-grpo", None, "rl"),
        ("ppo_from_sft", {"kind": "sft"}, "sft"),  # run_info's kind still decides
    ],
)
def test_model_role_comes_from_run_info_kind_else_from_the_label_s_words(label, info, role):
    assert model_role(label, info) == role


def test_a_missing_model_folder_is_reported_by_name(tmp_path):
    with pytest.raises(MissingModelError, match="ppo.*does not exist"):
        resolve_model("ppo", str(tmp_path / "runs" / "ppo"), None, None)


def test_a_gguf_file_is_a_model_entry_and_a_missing_one_is_reported(tmp_path):
    with pytest.raises(MissingModelError, match="'base'.*GGUF file .*does not exist"):
        resolve_model("base", str(tmp_path / "smollm2.gguf"), "direct", None)
    (tmp_path / "smollm2.gguf").write_bytes(b"GGUF")  # converted when it loads, not when checked
    assert resolve_model("base", str(tmp_path / "smollm2.gguf"), "direct", None).answer_mode == "direct"


def test_an_uncached_hub_id_is_reported_when_offline():
    with pytest.raises(MissingModelError, match="not in the Hub cache"):
        resolve_model("base", "no-such-org/no-such-model", "cot", None)


def test_a_checkpoint_without_tokenizer_files_is_rejected(tmp_path, tiny_model_dir):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(ValueError, match="no tokenizer files"):
        resolve_model("ckpt", str(folder), "cot", None)


# --- scoring -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "letter"),
    [
        (" B", "B"),
        (" C. Ceftriaxone\nUser: next question", "C"),
        (" The answer is D.", "D"),
        (" <answer>A</answer>", "A"),
        (" A or B", None),
        ("", None),
        (" The correct answer is B. Ceftriaxone\nExplanation: a third-generation cephalosporin", "B"),
        (" Correct answer: B", "B"),
        (" The correct answer is: B", "B"),
        (" **B**", "B"),
        (" Option B", "B"),
        (" B - Ceftriaxone", "B"),
        (" <answer>The answer is **B**</answer>", "B"),
        (" A drug that blocks the receptor", None),
        (" B and D", None),
        (" I think B", None),
    ],
)
def test_direct_answers_are_read_from_the_first_line_or_the_answer_tag(completion, letter):
    assert direct_letter(completion) == letter


MICROBE_OPTIONS = ["Staphylococcus aureus", "C. difficile colitis", "E. coli", "Listeria"]


@pytest.mark.parametrize(
    ("completion", "without_options", "with_options"),
    [
        (" E. coli\nIt is a gram-negative rod.", "E", None),
        (" C. difficile", "C", None),
        (" <answer>S. aureus</answer>", "S", "S"),  # no option text starts with "S. aureus"
        (" C. E. coli", "C", "C"),
        (" B. C. difficile colitis", "B", "B"),
        (" D. Listeria", "D", "D"),
    ],
)
def test_direct_answers_that_are_lettered_option_texts_have_no_letter(
    completion, without_options, with_options
):
    assert direct_letter(completion) == without_options
    assert direct_letter(completion, options=MICROBE_OPTIONS) == with_options


def test_score_completion_passes_the_option_texts_in_both_modes():
    direct = score_completion(" E. coli", "C", 4, "direct", options=MICROBE_OPTIONS)
    assert (direct.format_ok, direct.letter, direct.correct) == (False, None, False)
    cot = score_completion("<think>r</think><answer>E. coli</answer>", "C", 4, "cot", options=MICROBE_OPTIONS)
    assert (cot.format_ok, cot.letter, cot.correct) == (True, None, False)
    right = score_completion(" The correct answer is C. E. coli", "C", 4, "direct", options=MICROBE_OPTIONS)
    assert (right.letter, right.correct) == ("C", True)
    with pytest.raises(ValueError, match="options: got 4 option texts for num_options=5"):
        score_completion(" C", "C", 5, "direct", options=MICROBE_OPTIONS)


@pytest.mark.parametrize(
    ("completion", "mode", "strict", "lenient", "source"),
    [
        ("<think>r</think><answer>B</answer>", "cot", "B", "B", "verifier"),
        # Text after the tags: training gives -1, so strict has no letter; lenient ignores it.
        ("<think>r</think><answer>B</answer>\nUser: and the next question?", "cot", None, "B", "verifier"),
        ("<think>r</think><answer>B</answer> <answer>C</answer>", "cot", None, "B", "verifier"),
        ("I think it is renal. The answer is (B).", "cot", None, "B", "answer is"),
        ("Reasoning first.\nAnswer: C\nmore text", "cot", None, "C", "answer:"),
        ("Answer: Because of the kidney", "cot", None, None, None),  # no letter word after "Answer:"
        ("the answer is Bacteroides", "cot", None, None, None),
        ("Between A and C, I pick C", "cot", None, None, None),  # no answer pattern: no letter
        ("<think>A or C</think>answer follows<answer>C</answer>", "cot", None, "C", "answer tag"),
        ("The answer is (E).", "cot", None, None, None),  # E is not one of the four letters
        ("<think>no idea</think>", "cot", None, None, None),
        (" B", "direct", "B", "B", "verifier"),
        (" I would say the answer is (C)", "direct", None, "C", "answer is"),
        (" I am not sure", "direct", None, None, None),  # "I" is not one of the four letters
    ],
)
def test_strict_and_lenient_rules_on_crafted_completions(completion, mode, strict, lenient, source):
    verdict = score_completion(completion, "B", 4, mode)
    assert verdict.letter == strict
    assert lenient_letter(completion, 4, mode) == (lenient, source)


def test_fallback_letters_are_limited_to_the_question_s_options():
    assert fallback_letter("so the answer is (E)", 5) == ("E", "answer is")
    assert fallback_letter("so the answer is (E)", 4) == (None, None)
    assert fallback_letter("A I think", 10) == (None, None)  # no last-standalone-letter rule
    assert fallback_letter("Answer: B\nlater, Answer: C", 4) == ("C", "answer:")  # the last "Answer: X"
    assert fallback_letter("the answer is B, then the answer is C", 4) == ("B", "answer is")  # the first


ECHOED_STEM = (
    "A 45-year-old man presents with a fever of 37°C and a rash. Which of the following is the most "
    "likely diagnosis?\nA. Measles\nB. Rubella\nC. Roseola\nD. Scarlet fever"
)
TRIAL_OPTIONS = ["Stratified analysis", "Blinding", "Randomization", "E. coli O157 culture", "Matching"]


@pytest.mark.parametrize(
    ("completion", "mode", "num_options", "options"),
    [
        (ECHOED_STEM, "cot", 5, None),  # the article "A", "C" of 37°C, the option list: nothing answers
        (ECHOED_STEM, "direct", 5, None),
        ("Temperature 98.6 °F on admission, then 101 °F", "cot", 10, None),  # F after a degree sign
        ("Which design? A. Stratified analysis ... B. Blinding is", "cot", 5, None),  # cut-off option list
        ("It is B or C", "cot", 4, None),  # a hedge
        ("The answer is B or C.", "cot", 4, None),  # a hedge after the pattern
        ("So the answer is (B) or (C).", "cot", 4, None),
        ("Answer: A 45-year-old man with fever", "cot", 4, None),  # the article after "Answer:"
        ("the answer is C °", "cot", 4, None),  # a letter followed by a degree sign is a unit
        ("the answer is B-cell lymphoma", "cot", 4, None),  # a letter inside a word
        ("<think>the answer is B</think><answer>Blinding</answer>", "cot", 5, TRIAL_OPTIONS),
        ("<think>the answer is B</think>\n<answer>Blinding</answer> more", "cot", 5, TRIAL_OPTIONS),
        (" <answer>Blinding, so not A</answer>", "direct", 5, TRIAL_OPTIONS),
        (" The answer is E. coli O157 culture", "direct", 5, TRIAL_OPTIONS),  # option D's text
        ("I would send an E. coli O157 culture. Answer: E. coli O157 culture", "cot", 5, TRIAL_OPTIONS),
    ],
)
def test_lenient_rule_reads_no_letter_from_text_that_does_not_answer(completion, mode, num_options, options):
    assert lenient_letter(completion, num_options, mode, options=options) == (None, None)


@pytest.mark.parametrize(
    ("completion", "mode", "num_options", "expected"),
    [
        ("the answer is A because it blocks the receptor", "cot", 4, ("A", "answer is")),
        ("the answer is (A) a 45-year-old", "cot", 4, ("A", "answer is")),
        ("Answer: A", "cot", 4, ("A", "answer:")),
        ("<think>the answer is B</think><answer>the answer is (D)</answer>", "cot", 5, ("D", "verifier")),
        ("<think>B?</think> then <answer>D</answer>", "cot", 5, ("D", "answer tag")),
        ("<think>the answer is B</think><answer></answer>", "cot", 5, ("B", "answer is")),
        ("<think>long reasoning, the answer is (C", "cot", 5, ("C", "answer is")),  # cut off, no <answer>
        (" The answer is D. E. coli O157 culture", "direct", 5, ("D", "verifier")),
        ("I think so. The answer is E. Matching", "cot", 5, ("E", "answer is")),  # E's own text
    ],
)
def test_lenient_rule_reads_letters_that_answer(completion, mode, num_options, expected):
    assert lenient_letter(completion, num_options, mode, options=TRIAL_OPTIONS) == expected


def test_lenient_letter_stays_importable_with_its_signature():
    import inspect

    params = inspect.signature(evaluation.lenient_letter).parameters
    assert list(params) == ["completion", "num_options", "answer_mode", "options"]
    assert params["options"].kind is inspect.Parameter.KEYWORD_ONLY


def test_summary_counts_which_rule_read_each_lenient_letter_and_results_md_shows_them():
    rows = [{"id": f"q{i}", "answer": "B", "options": ["w", "x", "y", "z"]} for i in range(5)]
    texts = [
        "<think>r</think><answer>B</answer>",
        "<think>r</think> x <answer>C</answer>",
        "the answer is (B)",
        "Answer: D",
        "A 45-year-old with fever of 37°C",
    ]
    records = prediction_records(rows, ["p"] * 5, [Completion(t, 3) for t in texts], "cot")
    summary = accuracy_summary(records, load_accuracy_metric(), n_resamples=10)
    assert summary["lenient_sources"] == {
        "verifier": 1,
        "answer tag": 1,
        "answer is": 1,
        "answer:": 1,
        "loglikelihood": 0,
        "unparsed": 1,
    }
    report = EvalReport(
        models=[], datasets=[{"label": "medqa", "n": 5}], generation={}, results={"ppo": {"medqa": summary}}
    )
    table = results_markdown(report)
    assert "## Which rule read each lenient letter" in table
    assert "| model | dataset | verifier | answer tag | answer is | answer: | unparsed |" in table
    assert "| ppo | medqa | 1 | 1 | 1 | 1 | 1 |" in table


def test_fixed_completions_score_to_the_hand_counted_accuracy():
    # (completion, gold, options, mode): hand-checked verdicts in the comments.
    cases = [
        ("<think>renal</think><answer>B</answer>", "B", 4, "cot"),  # right
        ("<think>renal</think><answer>C</answer>", "B", 4, "cot"),  # wrong letter
        ("B", "B", 4, "cot"),  # right letter but no tags: format failure
        ("<think>x</think><answer>F</answer>", "F", 10, "cot"),  # right, ten options
        (" A", "A", 4, "direct"),  # right
        (" D. Warfarin", "C", 4, "direct"),  # wrong
        (" I am not sure", "C", 4, "direct"),  # no letter: wrong
        (" <answer>E</answer>", "E", 5, "direct"),  # right (tagged SFT target)
    ]
    verdicts = [score_completion(c, gold, n, mode) for c, gold, n, mode in cases]
    assert [v.correct for v in verdicts] == [True, False, False, True, True, False, False, True]
    records = [
        {
            "letter": v.letter,
            "answer": gold,
            "format_ok": v.format_ok,
            "completion_tokens": 3,
            "letter_lenient": lenient_letter(c, n, mode)[0],
        }
        for v, (c, gold, n, mode) in zip(verdicts, cases, strict=True)
    ]
    summary = accuracy_summary(records, load_accuracy_metric())
    assert summary["accuracy"] == summary["accuracy_strict"] == pytest.approx(4 / 8)
    # Lenient reads no letter in the untagged cot "B" (no answer pattern) nor in " I am not sure".
    assert summary["accuracy_lenient"] == pytest.approx(4 / 8)
    assert summary["unparsed_rate"] == pytest.approx(2 / 8)
    assert summary["accuracy_lenient_std"] > 0
    assert summary["format_valid_rate"] == pytest.approx(6 / 8)
    assert summary["n"] == 8


def test_metric_module_loads_offline_and_counts_missing_letters_as_wrong():
    metric = load_accuracy_metric()
    scores = metric.compute(predictions=["A", "", "C", "D"], references=["A", "B", "C", "A"], seed=5)
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["accuracy_std"] == pytest.approx(bootstrap_std([1, 0, 1, 0], seed=5))


def test_random_guess_is_the_mean_chance_over_each_questions_option_count():
    rows = {"options": [["a"] * 4, ["a"] * 5, ["a"] * 10]}
    summary = random_guess(rows)
    assert summary["accuracy"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 10) / 3)
    assert summary["accuracy_std"] == pytest.approx(np.sqrt(0.25 * 0.75 + 0.2 * 0.8 + 0.1 * 0.9) / 3)
    assert summary["accuracy_lenient"] == summary["accuracy_strict"] == summary["accuracy"]
    assert (summary["unparsed_rate"], summary["n"]) == (0.0, 3)


def test_random_guess_on_four_option_questions_has_a_real_error_bar():
    assert random_guess({"options": [["a"] * 4] * 100})["accuracy_std"] == pytest.approx(0.0433, abs=5e-5)


def test_prediction_records_keep_every_question_with_its_verdict():
    rows = [
        {"id": "q1", "answer": "A", "options": ["x", "y", "z", "w"]},
        {"id": "q2", "answer": "B", "options": ["x", "y", "z", "w"]},
    ]
    completions = [Completion(" A", 1), Completion("gibberish", 4)]
    records = prediction_records(rows, ["p1", "p2"], completions, "direct")
    assert [(r["id"], r["letter"], r["correct"], r["completion_tokens"]) for r in records] == [
        ("q1", "A", True, 1),
        ("q2", None, False, 4),
    ]
    assert [(r["letter_lenient"], r["correct_lenient"], r["lenient_source"]) for r in records] == [
        ("A", True, "verifier"),
        (None, False, None),
    ]


def test_prediction_records_carry_both_rules_for_a_completion_that_runs_past_the_tags():
    rows = [{"id": "q1", "answer": "B", "options": ["w", "x", "y", "z"]}]
    completion = Completion("<think>r</think><answer>B</answer>\nUser: next", 9)
    (record,) = prediction_records(rows, ["p"], [completion], "cot")
    assert (record["letter"], record["format_ok"], record["correct"], record["reward"]) == (
        None,
        False,
        False,
        -1.0,
    )
    assert (record["letter_lenient"], record["correct_lenient"]) == ("B", True)


def test_prediction_records_read_letters_against_the_row_s_option_texts():
    rows = [{"id": "q1", "answer": "C", "options": MICROBE_OPTIONS}] * 2
    completions = [Completion(" E. coli", 3), Completion(" **C. E. coli**", 6)]
    records = prediction_records(rows, ["p1", "p1"], completions, "direct")
    assert [(r["letter"], r["correct"]) for r in records] == [(None, False), ("C", True)]


# --- option order, answer letters, duplicates ---------------------------------------------------


def test_a_cyclic_shift_moves_every_option_one_place_on_and_the_gold_letter_with_its_text():
    assert shift_options(["w", "x", "y", "z"], "B", 1) == (["z", "w", "x", "y"], "C")
    assert shift_options(["w", "x", "y", "z"], "D", 1) == (["z", "w", "x", "y"], "A")
    assert shift_options(["w", "x", "y", "z"], "B", 2) == (["y", "z", "w", "x"], "D")
    assert shift_options(["w", "x", "y", "z"], "B", 0) == shift_options(["w", "x", "y", "z"], "B", 4)
    shifted = shift_row({"id": "q", "options": ["w", "x", "y", "z"], "answer": "B", "answer_index": 1}, 1)
    assert (shifted["answer"], shifted["answer_index"], shifted["options"][2]) == ("C", 2, "x")


SHIFT_ROWS = [
    {"id": f"q{i}", "question": f"Question {i}?", "options": options, "answer": answer}
    for i, (options, answer) in enumerate(
        [(["w", "x", "y", "z"], "B"), (["p", "q", "r"], "A"), (["s", "t", "u", "v"], "D")]
    )
]
GOLD_TEXT = {row["question"]: row["options"]["ABCD".index(row["answer"])] for row in SHIFT_ROWS}


def _answers(choose):
    """A fake `generate`: one direct answer per prompt, from `choose(question, {text: letter})`."""

    def generate(prompts):
        completions = []
        for prompt in prompts:
            lines = prompt.split("\n")
            question = next(line.removeprefix("User: ") for line in lines if line.startswith("User: "))
            letters = {line[3:]: line[0] for line in lines if line[1:3] == ". "}
            completions.append(Completion(choose(question, letters), 1))
        return completions

    return generate


DIRECT = ModelSpec("m", "m", "direct", "direct")


def test_a_model_always_answering_a_is_never_consistent_and_one_choosing_the_gold_text_always_is():
    always_a = predict_permutations(SHIFT_ROWS, DIRECT, 2, _answers(lambda q, letters: " A"))
    assert [[r["shift"] for r in records] for records in always_a] == [[0, 0, 0], [1, 1, 1]]
    assert [[r["answer"] for r in records] for records in always_a] == [["B", "A", "D"], ["C", "B", "A"]]
    assert [[r["correct"] for r in records] for records in always_a] == [
        [False, True, False],
        [False, False, True],
    ]
    assert consistency_rate(always_a) == 0.0
    right = predict_permutations(
        SHIFT_ROWS, DIRECT, 3, _answers(lambda q, letters: " " + letters[GOLD_TEXT[q]])
    )
    assert all(r["correct"] for records in right for r in records)
    assert consistency_rate(right) == 1.0


def test_an_answer_unparsed_under_one_shift_makes_its_question_inconsistent():
    def choose(question, letters):
        gold = letters[GOLD_TEXT[question]]
        return " no idea" if question == "Question 0?" and gold != "B" else f" {gold}"  # fails once shifted

    records = predict_permutations(SHIFT_ROWS, DIRECT, 2, _answers(choose))
    assert [r["letter"] for r in records[1]] == [None, "B", "A"]
    assert consistency_rate(records) == pytest.approx(2 / 3)
    summary = summarise_dataset(records, load_accuracy_metric(), [0, 1, 2], n_resamples=50)
    assert summary["accuracy_per_shift"] == [1.0, pytest.approx(2 / 3)]
    assert summary["accuracy_mean_over_shifts"] == pytest.approx(5 / 6)
    assert summary["accuracy"] == summary["accuracy_per_shift"][0]
    assert summary["consistency_rate"] == pytest.approx(2 / 3)
    assert "accuracy_per_shift" not in summarise_dataset(records[:1], load_accuracy_metric(), [0, 1, 2])


def test_one_shift_gives_the_unshifted_prompts_and_predictions_keep_their_old_file_names(tmp_path):
    (records,) = predict_permutations(SHIFT_ROWS, DIRECT, 1, _answers(lambda q, letters: " A"))
    prompts = [r["prompt"] for r in records]
    assert prompts == [build_prompt(r["question"], r["options"], template="direct") for r in SHIFT_ROWS]
    assert prediction_path(tmp_path, "m", "d") == tmp_path / "predictions" / "m__d.jsonl"
    assert prediction_path(tmp_path, "m", "d", 2) == tmp_path / "predictions" / "shift2" / "m__d.jsonl"


def _record(letter, *, format_ok=True, num_options=4, correct=False):
    return {"letter": letter, "format_ok": format_ok, "num_options": num_options, "correct": correct}


def test_letter_distribution_counts_strict_letters_with_every_letter_listed_and_unparsed_last():
    records = [_record("A"), _record("A"), _record("C"), _record(None, format_ok=False)]
    records.append(_record("B", format_ok=False))  # a letter outside the tags: none under the strict rule
    records.append(_record("F"))  # strict keeps an out-of-range letter; it is wrong, and counted
    assert letter_distribution(records) == {"A": 2, "B": 0, "C": 1, "D": 0, "F": 1, "unparsed": 2}
    assert list(letter_distribution(records))[-1] == "unparsed"
    rows = {"options": [["a"] * 4, ["a"] * 5, ["a"] * 4], "answer": ["B", "B", "E"]}
    assert gold_letter_distribution(rows) == {"A": 0, "B": 2, "C": 0, "D": 0, "E": 1}


def test_accuracy_without_within_set_duplicates_counts_each_question_once():
    questions = ["Which drug?", "which  DRUG", "Which drug!", "Another one?"]
    kept = unique_question_indices(questions)
    assert kept == [0, 3]
    # Three copies of a question answered right, one other question answered wrong: 75% -> 50%.
    records = [_record("A", correct=True)] * 3 + [_record("B")]
    assert dedup_summary(records, kept) == {"accuracy_dedup": 0.5, "n_dedup": 2}
    rows = {"options": [["a"] * 4, ["a"] * 4, ["a"] * 4, ["a"] * 10]}
    assert random_summary(rows, kept)["accuracy_dedup"] == pytest.approx((1 / 4 + 1 / 10) / 2)


def test_dataset_entries_hold_gold_letters_sizes_and_the_overlap_with_the_training_set():
    import datasets

    rows = datasets.Dataset.from_dict(
        {
            "id": ["e1", "e2"],
            "question": ["What causes fever?", "New question?"],
            "options": [["a", "b"], ["a", "b"]],
            "answer": ["A", "A"],
        }
    )
    spec = parse_dataset_specs("medqa=data/demo/medqa")[0]
    train = QuestionIndex.build(["t1"], ["what causes FEVER"])
    entry = describe_dataset(spec, rows, [0, 1], train)
    assert (entry["n"], entry["n_dedup"], entry["gold_letter_distribution"]) == (2, 2, {"A": 2, "B": 0})
    contamination = entry["contamination"]
    assert (contamination["exact"], contamination["near"], contamination["n"]) == (1, 0, 2)
    assert contamination["threshold"] == 0.5
    assert contamination["examples"] == [
        {"id": "e1", "match_id": "t1", "kind": "exact", "ngram_overlap": 1.0}
    ]
    assert "contamination" not in describe_dataset(spec, rows, [0, 1])


def test_dataset_entries_hash_the_loaded_questions_so_two_results_can_be_matched():
    from medrlvr_trl.data import load_mcqa

    spec = parse_dataset_specs("medqa=data/demo/medqa")[0]
    rows = load_mcqa(str(REPO / "data/demo/medqa"), split="test")
    first = describe_dataset(spec, rows, [0])["questions_sha256"]
    assert (
        first
        == describe_dataset(spec, load_mcqa(str(REPO / "data/demo/medqa"), split="test"), [0])[
            "questions_sha256"
        ]
    )
    assert len(first) == 64
    changed = rows.map(lambda row, i: {"options": row["options"][::-1]} if i == 3 else {}, with_indices=True)
    assert describe_dataset(spec, changed, [0])["questions_sha256"] != first  # one reordered option list
    assert describe_dataset(spec, rows.select(range(len(rows) - 1)), [0])["questions_sha256"] != first


def test_the_training_set_entry_defaults_to_the_train_split():
    spec = parse_train_dataset("medqa_train=data/demo/medqa")
    assert (spec.label, spec.source, spec.split) == ("medqa_train", "data/demo/medqa", "train")
    assert parse_train_dataset("t=GBaker/MedQA-USMLE-4-options@validation").split == "validation"
    with pytest.raises(ValueError, match="expected one entry"):
        parse_train_dataset("a=x,b=y")
    with pytest.raises(ValueError, match="option_permutations"):
        MCQAEvalArguments(models=["m=x"], option_permutations=0)


# --- generation ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir):
    """The tiny model with large random weights, so completions differ from prompt to prompt."""
    from medrlvr_trl.modeling import load_policy, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_policy(str(tiny_model_dir), None, tokenizer)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model, tokenizer


def test_batched_left_padded_generation_matches_one_prompt_at_a_time(tiny_generator):
    model, tokenizer = tiny_generator
    prompts = [f"User: {'why ' * k}is the sky blue?\nAssistant:" for k in (1, 25, 4, 60, 9)]
    one_by_one = generate_hf(model, tokenizer, prompts, GenerationSettings(max_new_tokens=10, batch_size=1))
    batched = generate_hf(model, tokenizer, prompts, GenerationSettings(max_new_tokens=10, batch_size=5))
    assert batched == one_by_one
    assert len({c.text for c in batched}) > 1  # the check above would be empty if all outputs were equal


class _ScriptedModel(torch.nn.Module):
    """Returns a fixed continuation, to check how generated ids become text and a length."""

    def __init__(self, continuation: list[int]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.continuation = continuation

    def generate(self, input_ids, **kwargs):
        tail = torch.tensor([self.continuation] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)


def test_completion_text_and_length_stop_at_the_first_eos(tiny_model_dir):
    from medrlvr_trl.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    answer_ids = tokenizer(" B", add_special_tokens=False)["input_ids"]
    model = _ScriptedModel(answer_ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * 3)
    (completion,) = generate_hf(model, tokenizer, ["User: q\nAssistant:"], GenerationSettings())
    assert completion == Completion(text=" B", num_tokens=len(answer_ids))


# --- outputs -------------------------------------------------------------------------------------


def test_accuracy_figure_is_written_as_a_png(tmp_path):
    results = {
        "random": {"medqa": {"accuracy": 0.25, "accuracy_std": 0.01}},
        "sft": {
            "medqa": {"accuracy": 0.5, "accuracy_std": 0.014},
            "mmlu": {"accuracy": 0.3, "accuracy_std": 0.02},
        },
    }
    path = plot_accuracy_bars(results, tmp_path / "fig" / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_accuracy_bars_of_a_failed_run_get_the_wilson_interval_not_a_zero_width_bar():
    from medrlvr_trl.plots import bar_errors

    failed = {"accuracy": 0.0, "accuracy_std": 0.0, "accuracy_wilson95": [0.0, 0.0876]}
    assert bar_errors(failed) == (0.0, pytest.approx(8.76))
    perfect = {"accuracy": 1.0, "accuracy_std": 0.0, "accuracy_wilson95": [0.9124, 1.0]}
    assert bar_errors(perfect) == (pytest.approx(8.76), 0.0)
    assert bar_errors({"accuracy": 0.5, "accuracy_std": 0.02, "accuracy_wilson95": [0.3, 0.7]}) == (2.0, 2.0)
    assert bar_errors({"accuracy": 0.2, "accuracy_std": 0.01}) == (1.0, 1.0)  # random row: its analytic std


def test_accuracy_figure_adds_a_headline_panel_only_when_given_one(tmp_path):
    import matplotlib.image

    results = {"sft": {"medqa": {"accuracy": 0.5, "accuracy_std": 0.01}}, "ppo": {"medqa": {"accuracy": 0.6}}}
    headline = [
        {
            "model_a": "ppo",
            "model_b": "sft",
            "dataset": "medqa",
            "diff": 0.1,
            "ci95": [0.02, 0.18],
            "mcnemar_p": 0.01,
        }
    ]
    plain = plot_accuracy_bars(results, tmp_path / "plain.png")
    with_panel = plot_accuracy_bars(results, tmp_path / "panel.png", headline=headline)
    assert matplotlib.image.imread(with_panel).shape[1] > matplotlib.image.imread(plain).shape[1]


@pytest.mark.parametrize("with_panel", [False, True])
def test_a_long_chart_title_stays_inside_a_narrow_figure(tmp_path, monkeypatch, with_panel):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    results = {"sft": {"medqa": {"accuracy": 0.5, "accuracy_std": 0.01}}, "ppo": {"medqa": {"accuracy": 0.6}}}
    headline = [{"model_a": "ppo", "model_b": "sft", "dataset": "medqa", "diff": 0.1, "ci95": [0.0, 0.2],
                 "mcnemar_p": 0.2}]  # fmt: skip
    title = evaluation.chart_title(stop_at_answer_close=True)
    plot_accuracy_bars(results, tmp_path / "a.png", title=title, headline=headline if with_panel else ())
    (fig,) = figures
    texts = [fig._suptitle, *(ax.title for ax in fig.axes)]
    (shown,) = [t for t in texts if t is not None and " ".join(t.get_text().split()) == title]
    box = shown.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
    monkeypatch.undo()
    plt.close(fig)


def _model_entry(accuracy: float, lenient: float, unparsed: float) -> dict[str, float]:
    return {
        "accuracy": accuracy,
        "accuracy_std": 0.014,
        "accuracy_strict": accuracy,
        "accuracy_lenient": lenient,
        "accuracy_lenient_std": 0.012,
        "unparsed_rate": unparsed,
        "format_valid_rate": 1.0,
        "mean_completion_tokens": 1.0,
    }


def test_results_table_names_each_column_s_rule_with_error_bars_gaps_and_paired_tests():
    models = [
        ModelSpec("sft", "runs/sft", "direct", "direct", role="sft"),
        ModelSpec("ppo", "runs/ppo", "cot", "r1", role="rl"),
    ]
    outcomes = {"sft": {"medqa": [True, False, False, True]}, "ppo": {"medqa": [True, True, True, False]}}
    paired = paired_comparisons(models, outcomes, ["medqa", "mmlu"])
    report = EvalReport(
        models=[],
        datasets=[{"label": "medqa"}, {"label": "mmlu"}],
        generation={},
        results={
            "sft": {"medqa": _model_entry(0.5, 0.55, 0.02)},
            "ppo": {"medqa": _model_entry(0.75, 0.8, 0.0)},
            "random": {
                "medqa": random_guess({"options": [["a"] * 4] * 100}),
                "mmlu": random_guess({"options": [["a"] * 10] * 100}),
            },
        },
        paired=paired,
        headline=headline_pair(models),
        scoring=scoring_rules(stop_at_answer_close=False),
    )
    table = results_markdown(report)
    assert (
        "| model | medqa strict | medqa lenient | medqa unparsed | mmlu strict | mmlu lenient | mmlu unparsed |"
        in table
    )
    assert "| sft | 50.0 +- 1.4 | 55.0 +- 1.2 | 2.0 | - | - | - |" in table
    assert "| random | 25.0 +- 4.3 | 25.0 +- 4.3 | 0.0 | 10.0 +- 3.0 | 10.0 +- 3.0 | 0.0 |" in table
    assert "- strict (`accuracy`" in table and "generated to EOS" in table
    assert "## Headline: RLVR minus SFT (ppo - sft, strict rule)" in table
    # ppo - sft = +25 points; discordant: only ppo right on 2 questions, only sft right on 1 -> p = 1.
    # Both accuracies, n, then the difference; then both models' format-valid / unparsed rates.
    assert "| medqa | ppo | sft | 75.0 | 50.0 | 4 | +25.0 |" in table and "| 1 | 2 | 1 |" in table
    assert "| 2 | 1 | 100.0 / 0.0 | 100.0 / 2.0 |" in table
    assert "trust the p-value" in table
    assert "mmlu | ppo" not in table  # no pair where neither model was scored
    stopped = EvalReport([], [{"label": "medqa"}], {}, {}, scoring=scoring_rules(stop_at_answer_close=True))
    assert "stop_at_answer_close was on" in results_markdown(stopped)


def test_constant_letter_baseline_is_the_most_frequent_gold_letter_first_on_a_tie():
    rows = {"options": [["a", "b", "c", "d", "e"]] * 13, "answer": list("AAABBBBBCCCCC")}
    baseline = evaluation.constant_letter_baseline(rows)
    assert baseline == {
        "letter": "B",
        "accuracy": pytest.approx(5 / 13),
        "accuracy_std": pytest.approx(np.sqrt(5 / 13 * 8 / 13 / 13)),
        "n": 13,
    }


def _letters_report(distribution: dict[str, int]) -> EvalReport:
    return EvalReport(
        models=[],
        datasets=[{"label": "medqa"}],
        generation={},
        results={"ll": {"medqa": {**_model_entry(0.367, 0.367, 0.0), "letter_distribution": distribution}}},
        constant_letter={"medqa": {"letter": "E", "accuracy": 0.3, "accuracy_std": 0.08, "n": 30}},
    )


def test_a_model_naming_one_letter_in_most_answers_gets_a_warning_with_the_constant_letter_floor():
    warned = results_markdown(_letters_report({"A": 2, "B": 1, "C": 0, "D": 1, "E": 16, "unparsed": 10}))
    assert "## Warnings" in warned
    assert "- ll on medqa: answers E to 16 of 30 questions (53.3%)" in warned
    assert "(always E scores 30.0%)" in warned
    assert "| constant letter | 30.0 +- 8.0 (E) | 30.0 +- 8.0 (E) | 0.0 |" in warned
    even = results_markdown(_letters_report({"A": 5, "B": 5, "C": 5, "D": 0, "E": 15, "unparsed": 0}))
    assert "## Warnings" not in even  # exactly half is not more than half


def _failed_run_records(unparsed: int, n: int = 40) -> list[dict]:
    """A run whose first `unparsed` completions are empty and the rest wrong (answer B, gold A)."""
    rows = [{"id": f"q{i}", "answer": "A", "options": ["w", "x", "y", "z"]} for i in range(n)]
    completions = [Completion("", 0)] * unparsed + [Completion(" B", 1)] * (n - unparsed)
    return prediction_records(rows, ["p"] * n, completions, "direct")


def test_failed_runs_show_wilson_intervals_rates_and_a_warning_instead_of_a_precise_tie():
    metric = load_accuracy_metric()
    models = [
        ModelSpec("sft", "s", "direct", "direct", role="sft"),
        ModelSpec("ppo", "p", "cot", "r1", role="rl"),
    ]
    records = {"sft": _failed_run_records(38), "ppo": _failed_run_records(39)}
    results = {
        m: {"medqa": summarise_dataset([r], metric, range(40), n_resamples=50)} for m, r in records.items()
    }
    assert results["ppo"]["medqa"]["accuracy_wilson95"] == [0.0, pytest.approx(0.0876, abs=1e-4)]
    outcomes = {m: {"medqa": [r["correct"] for r in rs]} for m, rs in records.items()}
    paired = paired_comparisons(models, outcomes, ["medqa"], n_resamples=50)
    assert (paired[0]["accuracy_a"], paired[0]["accuracy_b"]) == (0.0, 0.0)
    report = EvalReport(
        models=[],
        datasets=[{"label": "medqa"}],
        generation={},
        results=results,
        paired=paired,
        headline=headline_pair(models),
    )
    table = results_markdown(report)
    assert "| ppo | 0.0 [0.0, 8.8] | 0.0 [0.0, 8.8] | 97.5 |" in table  # not "0.0 +- 0.0"
    assert "- ppo on medqa: no letter in 97.5% of its answers" in table
    assert "- sft on medqa: no letter in 95.0% of its answers" in table
    assert (
        "| medqa | ppo | sft | 0.0 | 0.0 | 40 | +0.0 | [+0.0, +0.0] | 1 | 0 | 0 | 2.5 / 97.5 | 5.0 / 95.0 |"
        in table
    )
    fine = {**results["sft"]["medqa"], "unparsed_rate": 0.5}
    assert "## Warnings" not in results_markdown(
        EvalReport([], [{"label": "medqa"}], {}, {"sft": {"medqa": fine}})
    )


def test_with_option_shifts_the_headline_compares_mean_over_shifts_accuracy_too():
    models = [
        ModelSpec("sft", "s", "direct", "direct", role="sft"),
        ModelSpec("ppo", "p", "cot", "r1", role="rl"),
    ]
    outcomes = {"sft": {"medqa": [True, False, False, True]}, "ppo": {"medqa": [True, True, True, False]}}
    # ppo right on every question under shift 0 only (a letter prior), sft right under both shifts.
    shifted = {"sft": {"medqa": [1.0, 0.0, 0.0, 1.0]}, "ppo": {"medqa": [0.5, 0.5, 0.5, 0.0]}}
    results = {
        "sft": {"medqa": {**_model_entry(0.5, 0.5, 0.0), "accuracy_mean_over_shifts": 0.5}},
        "ppo": {"medqa": {**_model_entry(0.75, 0.75, 0.0), "accuracy_mean_over_shifts": 0.375}},
    }
    paired = paired_comparisons(models, outcomes, ["medqa"], n_resamples=200, shift_outcomes=shifted)
    (entry,) = paired
    assert entry["diff"] == pytest.approx(0.25) and entry["diff_mean_over_shifts"] == pytest.approx(-0.125)
    differences = np.array([-0.5, 0.5, 0.5, -1.0])
    expected = np.percentile(bootstrap_means(differences, n_resamples=200, seed=0), [2.5, 97.5])
    assert entry["ci95_mean_over_shifts"] == pytest.approx(list(expected))
    report = EvalReport([], [{"label": "medqa"}], {}, results, paired=paired, headline=headline_pair(models))
    table = results_markdown(report)
    assert "| A / B mean over shifts (%) | A - B over shifts (points) [95% CI] |" in table
    assert f"| 37.5 / 50.0 | -12.5 [{100 * expected[0]:+.1f}, {100 * expected[1]:+.1f}] |" in table
    assert "diff_mean_over_shifts" not in paired_comparisons(models, outcomes, ["medqa"], n_resamples=20)[0]


def test_shift_mean_outcomes_are_each_question_s_share_of_shifts_answered_right():
    shift0 = [{"correct": True}, {"correct": False}]
    shift1 = [{"correct": True}, {"correct": True}]
    assert evaluation.shift_mean_outcomes([shift0, shift1]) == [1.0, 0.5]


def test_results_md_names_pairs_where_the_interval_and_the_p_value_disagree():
    # 13 questions, 3 only-A-right and 10 only-B-right: McNemar p = 0.092, the bootstrap interval
    # leaves 0 out.
    a = [True] * 3 + [False] * 10
    b = [False] * 3 + [True] * 10
    models = [
        ModelSpec("sft", "s", "direct", "direct", role="sft"),
        ModelSpec("ppo", "p", "cot", "r1", role="rl"),
    ]
    (entry,) = paired_comparisons(models, {"ppo": {"medqa": a}, "sft": {"medqa": b}}, ["medqa"])
    assert entry["mcnemar_p"] == pytest.approx(0.0923, abs=1e-4) and entry["ci95"][1] < 0
    assert evaluation.interval_and_p_disagree(entry)
    table = results_markdown(EvalReport([], [{"label": "medqa"}], {}, {}, paired=[entry]))
    assert "Interval and p-value disagree on: medqa ppo - sft." in table
    agree = {**entry, "mcnemar_p": 0.01}
    assert not evaluation.interval_and_p_disagree(agree)
    assert "disagree on" not in results_markdown(EvalReport([], [{"label": "medqa"}], {}, {}, paired=[agree]))


def test_paired_comparisons_read_later_stage_minus_earlier_for_every_pair():
    models = [
        ModelSpec("sft", "s", "direct", "direct", role="sft"),
        ModelSpec("ppo", "p", "cot", "r1", role="rl"),
        ModelSpec("base-direct", "b", "direct", "direct"),
        ModelSpec("base-cot", "b", "cot", "r1"),
    ]
    correct = {
        "sft": [1, 0, 1, 0],
        "ppo": [1, 1, 1, 0],
        "base-direct": [0, 0, 1, 0],
        "base-cot": [0, 0, 0, 0],
    }
    outcomes = {label: {"medqa": [bool(x) for x in values]} for label, values in correct.items()}
    paired = paired_comparisons(models, outcomes, ["medqa"], n_resamples=200, seed=3)
    assert [(e["model_a"], e["model_b"]) for e in paired] == [
        ("ppo", "sft"),
        ("sft", "base-direct"),
        ("sft", "base-cot"),
        ("ppo", "base-direct"),
        ("ppo", "base-cot"),
        ("base-direct", "base-cot"),
    ]
    first = paired[0]
    assert first["diff"] == pytest.approx(0.25) and first["ci95"][0] <= 0.25 <= first["ci95"][1]
    assert (first["only_a_correct"], first["only_b_correct"], first["mcnemar_p"]) == (1, 0, 1.0)
    assert headline_entries(paired, headline_pair(models)) == [first]
    assert headline_pair(models[2:]) is None and headline_entries(paired, None) == []


def test_cot_generation_runs_to_eos_unless_told_to_stop_at_the_answer_tag():
    assert MCQAEvalArguments(models=["m=x"]).generation_settings("cot").stop_strings == ()
    stopped = MCQAEvalArguments(models=["m=x"], stop_at_answer_close=True)
    assert stopped.generation_settings("cot").stop_strings == ("</answer>",)
    assert stopped.generation_settings("direct").stop_strings == ()


# --- the recipe ----------------------------------------------------------------------------------


@pytest.fixture()
def eval_data(tmp_path):
    medqa = write_medqa(tmp_path / "medqa", "test", 5)
    mmlu = write_mmlu_pro(tmp_path / "mmlu", ["health", "law", "health", "health"])
    return [f"medqa={medqa}", f"mmlu_health={mmlu}@test@category=health"]


def test_eval_recipe_writes_results_predictions_and_figure(tmp_path, tiny_model_dir, eval_data):
    sft = shutil.copytree(tiny_model_dir, tmp_path / "sft")
    (sft / "run_info.json").write_text(json.dumps({"answer_mode": "direct", "eval_prompt_template": "r1"}))
    rl = shutil.copytree(tiny_model_dir, tmp_path / "rl")
    (rl / "run_info.json").write_text(
        json.dumps({"kind": "grpo", "answer_mode": "cot", "prompt_template": "r1"})
    )
    out = tmp_path / "eval"
    train = write_medqa(tmp_path / "medqa", "train", 3)  # the first 3 test questions, word for word
    models = f"sft={sft},policy={rl},base-cot={tiny_model_dir}:cot"
    argv = ["--models", models, "--datasets", *eval_data]
    argv += ["--output_dir", str(out), "--max_new_tokens", "6", "--direct_max_new_tokens", "3"]
    argv += ["--option_permutations", "2", "--train_dataset", f"medqa_train={train}"]
    load_recipe("eval_mcqa").main(argv)

    report = json.loads((out / "results.json").read_text())
    modes = {m["label"]: (m["answer_mode"], m["role"]) for m in report["models"]}
    assert modes == {"sft": ("direct", "sft"), "policy": ("cot", "rl"), "base-cot": ("cot", "base")}
    assert report["results"]["sft"]["mmlu_health"]["n"] == 3  # the "law" row is filtered out
    random = report["results"]["random"]["mmlu_health"]
    assert random["accuracy"] == pytest.approx(0.1)
    assert random["accuracy_std"] == pytest.approx(np.sqrt(3 * 0.1 * 0.9) / 3)
    keys = {"accuracy", "accuracy_std", "accuracy_strict", "accuracy_lenient", "unparsed_rate", "n"}
    for label in ("sft", "policy", "base-cot"):
        for dataset, n in (("medqa", 5), ("mmlu_health", 3)):
            entry = report["results"][label][dataset]
            assert keys <= set(entry) and entry["accuracy"] == entry["accuracy_strict"]
            records = [
                json.loads(line) for line in (out / "predictions" / f"{label}__{dataset}.jsonl").open()
            ]
            assert len(records) == n
            assert {"letter", "correct", "letter_lenient", "correct_lenient", "lenient_source"} <= set(
                records[0]
            )
            assert entry["accuracy_lenient"] == pytest.approx(
                np.mean([r["correct_lenient"] for r in records])
            )
            assert entry["unparsed_rate"] == pytest.approx(
                np.mean([r["letter_lenient"] is None for r in records])
            )
            shifted = [json.loads(line) for line in prediction_path(out, label, dataset, 1).open()]
            assert [r["shift"] for r in records + shifted] == [0] * n + [1] * n
            assert [r["id"] for r in shifted] == [r["id"] for r in records]
            assert entry["accuracy_per_shift"] == [
                pytest.approx(np.mean([r["correct"] for r in rs])) for rs in (records, shifted)
            ]
            assert entry["accuracy_mean_over_shifts"] == pytest.approx(np.mean(entry["accuracy_per_shift"]))
            assert 0.0 <= entry["consistency_rate"] <= 1.0
            assert sum(entry["letter_distribution"].values()) == n
            assert entry["letter_distribution"]["unparsed"] == sum(
                not r["format_ok"] or r["letter"] is None for r in records
            )
            assert (entry["n_dedup"], entry["accuracy_dedup"]) == (n, pytest.approx(entry["accuracy"]))
    assert sorted(p.name for p in (out / "predictions").glob("*.jsonl")) == sorted(
        f"{m}__{d}.jsonl" for m in ("sft", "policy", "base-cot") for d in ("medqa", "mmlu_health")
    )
    datasets = {d["label"]: d for d in report["datasets"]}
    assert datasets["medqa"]["gold_letter_distribution"] == {"A": 2, "B": 1, "C": 1, "D": 1}
    assert report["constant_letter"]["medqa"] == {
        "letter": "A",
        "accuracy": pytest.approx(0.4),
        "accuracy_std": pytest.approx(np.sqrt(0.4 * 0.6 / 5)),
        "n": 5,
    }
    assert (
        "| constant letter | 40.0 +- 21.9 (A) | 40.0 +- 21.9 (A) | 0.0 |" in (out / "results.md").read_text()
    )
    assert datasets["mmlu_health"]["gold_letter_distribution"]["A"] == 1  # rows 0, 2, 3: A, C, D
    medqa_overlap = datasets["medqa"]["contamination"]
    assert (medqa_overlap["exact"], medqa_overlap["near"], medqa_overlap["n"]) == (3, 0, 5)
    assert [e["id"] for e in medqa_overlap["examples"]] == ["medqa-test-1", "medqa-test-2", "medqa-test-3"]
    assert datasets["mmlu_health"]["contamination"]["exact"] == 0
    assert report["train_dataset"]["label"] == "medqa_train" and report["train_dataset"]["n"] == 3
    assert report["generation"]["option_permutations"] == 2
    assert report["results"]["random"]["medqa"]["n_dedup"] == 5
    # Three models: three pairs per dataset, later stage first; the headline is RL minus SFT.
    pairs = [(e["dataset"], e["model_a"], e["model_b"]) for e in report["paired"]]
    assert pairs == [
        (d, a, b)
        for d in ("medqa", "mmlu_health")
        for a, b in (("policy", "sft"), ("sft", "base-cot"), ("policy", "base-cot"))
    ]
    for entry in report["paired"]:
        assert {"diff", "ci95", "mcnemar_p"} <= set(entry) and 0.0 <= entry["mcnemar_p"] <= 1.0
        assert entry["ci95"][0] <= entry["diff"] <= entry["ci95"][1]
    assert report["headline"] == ["policy", "sft"]
    headline = next(e for e in report["paired"] if (e["model_a"], e["model_b"]) == ("policy", "sft"))
    policy, sft_entry = (report["results"][m]["medqa"] for m in ("policy", "sft"))
    assert headline["diff_mean_over_shifts"] == pytest.approx(
        policy["accuracy_mean_over_shifts"] - sft_entry["accuracy_mean_over_shifts"]
    )
    assert report["scoring"]["accuracy_rule"] == "strict"
    assert report["generation"]["stop_at_answer_close"] is False
    assert (out / "accuracy.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert (
        "| base-cot |" in table
        and "medqa lenient" in table
        and "## Headline: RLVR minus SFT (policy - sft" in table
    )
    assert "## Option order: cyclic shifts" in table and "| shift 0 | shift 1 | mean | consistent |" in table
    assert "## Answer letters" in table and "| medqa | A | B | C | D | unparsed |" in table
    assert "| gold | 2 | 1 | 1 | 1 | - |" in table
    assert "## Within-set duplicates removed" in table and "medqa dedup (n=5)" in table
    assert (
        "## Overlap with the training set (medqa_train:" in table and "| medqa | 5 | 3 | 0 | 60.0 |" in table
    )


def test_eval_recipe_loglikelihood_mode_answers_the_most_likely_letter_of_the_lm_eval_prompt(
    tmp_path, tiny_model_dir, eval_data
):
    from transformers import AutoModelForCausalLM

    from medrlvr_trl.loglikelihood import score_letters
    from medrlvr_trl.modeling import load_tokenizer

    out = tmp_path / "eval"
    argv = ["--models", f"base-ll={tiny_model_dir}:loglikelihood", "--datasets", *eval_data]
    argv += ["--output_dir", str(out), "--option_permutations", "2", "--batch_size", "3"]
    load_recipe("eval_mcqa").main(argv)

    report = json.loads((out / "results.json").read_text())
    assert [(m["answer_mode"], m["prompt_template"]) for m in report["models"]] == [
        ("loglikelihood", "lm_eval")
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(tiny_model_dir)
    for dataset in ("medqa", "mmlu_health"):
        for shift in (0, 1):
            records = [json.loads(line) for line in prediction_path(out, "base-ll", dataset, shift).open()]
            assert all(
                r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:") for r in records
            )
            expected = score_letters(
                model, tokenizer, [r["prompt"] for r in records], [r["num_options"] for r in records]
            )
            for record, score in zip(records, expected, strict=True):
                assert record["letter"] == record["letter_lenient"] == score.letter == record["completion"]
                assert record["loglikelihoods"] == pytest.approx(score.loglikelihoods, abs=1e-5)
                assert (record["format_ok"], record["lenient_source"], record["completion_tokens"]) == (
                    True,
                    "loglikelihood",
                    0,
                )
                assert record["correct"] == (score.letter == record["answer"])
        entry = report["results"]["base-ll"][dataset]
        assert entry["accuracy_strict"] == entry["accuracy_lenient"] and entry["unparsed_rate"] == 0.0


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Fail the test if the recipe reaches model loading."""
    recipe = load_recipe("eval_mcqa")

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(recipe, "load_policy", refuse)
    return recipe


def test_eval_recipe_rejects_a_missing_model_before_loading_any(
    tmp_path, tiny_model_dir, eval_data, no_model_loading
):
    models = f"base={tiny_model_dir}:cot,ppo={tmp_path / 'runs' / 'ppo'}"
    with pytest.raises(MissingModelError, match="'ppo'"):
        no_model_loading.main(
            ["--models", models, "--datasets", *eval_data, "--output_dir", str(tmp_path / "o")]
        )


def test_eval_recipe_can_skip_missing_models_when_asked(
    tmp_path, tiny_model_dir, eval_data, no_model_loading
):
    models = f"base={tiny_model_dir}:cot,ppo={tmp_path / 'runs' / 'ppo'}"
    argv = ["--models", models, "--datasets", *eval_data, "--output_dir", str(tmp_path / "o")]
    no_model_loading.main([*argv, "--skip_missing_models", "true", "--dry_run", "true"])


def test_eval_recipe_rejects_a_dataset_with_no_rows_after_filtering(
    tmp_path, tiny_model_dir, no_model_loading
):
    mmlu = write_mmlu_pro(tmp_path / "mmlu", ["law", "law"])
    argv = ["--models", f"base={tiny_model_dir}:cot", "--datasets", f"h={mmlu}@test@category=health"]
    with pytest.raises(ValueError, match="no rows with category 'health'"):
        no_model_loading.main([*argv, "--output_dir", str(tmp_path / "o")])


def test_eval_recipe_keeps_existing_results_unless_told_to_overwrite(
    tmp_path, tiny_model_dir, eval_data, no_model_loading
):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text("{}")
    argv = ["--models", f"base={tiny_model_dir}:cot", "--datasets", *eval_data, "--output_dir", str(out)]
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        no_model_loading.main(argv)
    no_model_loading.main([*argv, "--overwrite_output_dir", "true", "--dry_run", "true"])


def test_unimportable_vllm_is_a_user_error_naming_make_vllm(monkeypatch):
    """No silent fallback to transformers: the run would not be what the config says."""
    recipe = load_recipe("eval_mcqa")
    monkeypatch.setattr(recipe, "vllm_available", lambda: False)
    args = evaluation.MCQAEvalArguments(models=["m=x"], backend="vllm")
    spec = evaluation.ModelSpec(label="m", path="x", answer_mode="cot", prompt_template="r1")
    with pytest.raises(UserError, match="make vllm"):
        recipe.open_generator(spec, None, args, type("State", (), {"device": "cpu", "num_processes": 1})())


def test_summary_mean_length_counts_generated_tokens():
    records = [
        {"letter": "A", "letter_lenient": "A", "answer": "A", "format_ok": True, "completion_tokens": n}
        for n in (2, 4, 9)
    ]
    assert accuracy_summary(records, load_accuracy_metric())["mean_completion_tokens"] == pytest.approx(
        np.mean([2, 4, 9])
    )


@pytest.mark.slow
def test_two_process_evaluation_gives_the_single_process_predictions(tmp_path, tiny_model_dir, eval_data):
    import os
    import subprocess

    models = f"base={tiny_model_dir}:cot,base-ll={tiny_model_dir}:loglikelihood"
    argv = ["--models", models, "--datasets", *eval_data, "--max_new_tokens", "6"]
    load_recipe("eval_mcqa").main([*argv, "--output_dir", str(tmp_path / "one")])
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml")]
    command += [str(REPO / "recipes/eval_mcqa.py"), *argv, "--output_dir", str(tmp_path / "two")]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for dataset in ("medqa", "mmlu_health"):
        name = f"predictions/base__{dataset}.jsonl"
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
        # Scores of differently padded batches may differ in the last bits, so compare with a tolerance.
        one, two = (
            [json.loads(line) for line in (tmp_path / run / f"predictions/base-ll__{dataset}.jsonl").open()]
            for run in ("one", "two")
        )
        assert [r["letter"] for r in two] == [r["letter"] for r in one]
        for a, b in zip(one, two, strict=True):
            assert b["loglikelihoods"] == pytest.approx(a["loglikelihoods"], abs=1e-5)


@pytest.mark.parametrize("config", ["recipes/configs/eval.yaml", "recipes/configs/tiny/eval.yaml"])
def test_eval_config_files_parse_into_models_and_datasets(config):
    from medrlvr_trl.configs import parse_config

    (args,) = parse_config([evaluation.MCQAEvalArguments], ["--config", str(REPO / config)])
    labels = [label for label, *_ in parse_model_specs(args.models)]
    assert {"sft", "ppo", "base-direct", "base-cot"} <= set(labels)
    assert [d.label for d in parse_dataset_specs(args.datasets)] == ["medqa", "mmlu_pro_health"]


def test_the_paper_eval_config_asks_every_question_under_two_option_orders():
    from medrlvr_trl.configs import parse_config

    (args,) = parse_config(
        [evaluation.MCQAEvalArguments], ["--config", str(REPO / "recipes/configs/eval.yaml")]
    )
    assert args.option_permutations == 2


def test_eval_defaults_to_the_paper_s_five_option_medqa_as_the_configs_do():
    import yaml

    config = yaml.safe_load((REPO / "recipes/configs/eval.yaml").read_text())
    medqa = next(d for d in config["datasets"] if d.startswith("medqa="))
    paper = evaluation.DatasetSpec(label="medqa", source="bigbio/med_qa:med_qa_en_source", split="test")
    assert parse_dataset_specs(MCQAEvalArguments().datasets)[0] == parse_dataset_specs([medqa])[0] == paper


def test_every_hub_dataset_of_the_paper_eval_config_has_its_revision_field():
    """For the test sets and the training set checked for overlap: empty until a commit is looked up
    (empty reads the newest), else a full commit sha, since a branch or tag can move."""
    import re

    import yaml

    config = yaml.safe_load((REPO / "recipes/configs/eval.yaml").read_text())
    entries = [*config["datasets"], config["train_dataset"]]
    assert all("@revision=" in entry for entry in entries), entries
    specs = [*parse_dataset_specs(config["datasets"]), parse_train_dataset(config["train_dataset"])]
    assert all(s.revision is None or re.fullmatch("[0-9a-f]{40}", s.revision) for s in specs), specs


def test_eval_accepts_skip_invalid_rows_and_reports_the_rows_it_left_out(tmp_path, tiny_model_dir):
    from medrlvr_trl.configs import parse_config

    medqa = write_medqa(tmp_path / "medqa", "test", 4)
    with (medqa / "test.jsonl").open("a") as handle:  # a fifth row whose gold letter has no option
        handle.write(
            json.dumps({"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}) + "\n"
        )
    argv = ["--models", f"base={tiny_model_dir}:direct", "--datasets", f"medqa={medqa}"]
    argv += ["--output_dir", str(tmp_path / "o")]
    recipe = load_recipe("eval_mcqa")
    (strict_args,) = parse_config([MCQAEvalArguments], argv)
    with pytest.raises(UserError, match="row 5.*--skip_invalid_rows true"):
        recipe.make_plan(strict_args)
    (args,) = parse_config([MCQAEvalArguments], [*argv, "--skip_invalid_rows", "true"])
    plan = recipe.make_plan(args)
    assert len(plan.rows["medqa"]) == 4
    assert plan.skipped["medqa"].count == 1 and "row 5" in plan.skipped["medqa"].first[0]
