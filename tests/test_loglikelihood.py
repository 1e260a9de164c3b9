"""The loglikelihood answer mode against lm-evaluation-harness itself, on the same rows and weights.

lm-eval runs in-process on the task in tests/lm_eval_tasks/ (a local JSON file, no Hub); its
per-question log-likelihoods and predictions must equal `medrlvr_trl.loglikelihood`'s. Rows whose
option texts hold line breaks, double spaces or trailing whitespace are prompted by lm-eval's own
`medqa_4options` `doc_to_text` on the source row and by this project from the loaded row: the two
prompts must be the same string.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medrlvr_trl.data import load_mcqa
from medrlvr_trl.evaluation import DEFAULT_TEMPLATE, LOGLIKELIHOOD, ModelSpec, predict_permutations
from medrlvr_trl.generation import Completion
from medrlvr_trl.loglikelihood import (
    continuation_loglikelihoods,
    harness_medqa_prompt,
    score_letters,
    split_pair,
)
from medrlvr_trl.prompts import build_prompt, option_letters

lm_eval = pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parents[1]
TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASK = "medrlvr_parity"
TOLERANCE = 1e-4

# 4-option MedQA rows (the source's schema) whose texts are not clean, as 47 of the 1,273 real
# 4-option test rows are ('...intoxication\n"'): a line break or a double space inside an option,
# whitespace or a stray quote at its end, a space before it, a double space in the question and
# whitespace after it. lm-eval's medqa_4options pastes every field as it is.
WHITESPACE_ROWS = [
    {
        "id": "ws-1",
        "question": "A 23-year-old man is found confused  after a party. Which is most likely?",
        "options": {
            "A": 'Acute alcohol intoxication\n"',
            "B": "Opioid  overdose",
            "C": "Hypoglycaemia ",
            "D": "Serotonin\nsyndrome",
        },
        "answer_idx": "A",
    },
    {
        "id": "ws-2",
        "question": "Which drug treats gonorrhea? ",
        "options": {"A": " Ceftriaxone", "B": "Doxycycline\t", "C": "Azithromycin\n\n", "D": "Penicillin  G"},
        "answer_idx": "A",
    },
    {
        "id": "ws-3",
        "question": "Which vitamin deficiency causes\nWernicke encephalopathy?",
        "options": {"A": "Niacin", "B": "Thiamine  (B1)\n", "C": "Vitamin\n C", "D": 'Folate "'},
        "answer_idx": "B",
    },
]


@pytest.fixture(scope="module")
def noisy_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with large random weights saved to a folder, so that both harnesses load the
    same weights and the letters' log-likelihoods differ clearly from question to question."""
    from medrlvr_trl.modeling import load_policy, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_policy(str(tiny_model_dir), None, tokenizer, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    folder = tmp_path_factory.mktemp("noisy-tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ours(noisy_model_dir):
    from medrlvr_trl.modeling import load_policy, load_tokenizer

    tokenizer = load_tokenizer(str(noisy_model_dir))
    return load_policy(str(noisy_model_dir), None, tokenizer, dtype=torch.float32), tokenizer


def _medqa_doc_to_text():
    """lm-eval's own `medqa_4options` prompt builder (its `doc_to_text`), loaded from its task folder."""
    path = Path(lm_eval.__file__).parent / "tasks" / "medqa" / "preprocess_medqa.py"
    spec = importlib.util.spec_from_file_location("preprocess_medqa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.doc_to_text


def _medqa_doc(row: dict) -> dict:
    """A source row as lm-eval's medqa_4options reads it (GBaker/MedQA-USMLE-4-options-hf's fields)."""
    return {"sent1": row["question"], **{f"ending{i}": row["options"][x] for i, x in enumerate("ABCD")}}


@pytest.fixture(scope="module")
def whitespace_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whitespace") / "test.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in WHITESPACE_ROWS), encoding="utf-8")
    return path


def _loglikelihood_mode_prompts(rows) -> list[str]:
    """The prompts evaluation's loglikelihood mode shows, with its default template, read off its records."""
    spec = ModelSpec(
        label="ll", path="unused", answer_mode=LOGLIKELIHOOD, prompt_template=DEFAULT_TEMPLATE[LOGLIKELIHOOD]
    )

    def answer_a(requests):
        return [Completion(text="A", num_tokens=0, loglikelihoods={"A": 0.0}) for _ in requests]

    (records,) = predict_permutations(rows, spec, 1, answer_a)
    return [record["prompt"] for record in records]


@pytest.fixture(scope="module")
def questions(whitespace_file) -> list[dict]:
    """MedQA demo rows (5 options) and MMLU-Pro health rows (6 to 10) with the direct prompt, which is
    also lm-eval's (`harness_prompt`); then `WHITESPACE_ROWS` loaded from their file and prompted as
    loglikelihood mode prompts them, with lm-eval's medqa_4options prompt of the source row beside."""
    rows = list(load_mcqa(str(ROOT / "data/demo/medqa/test.jsonl"), split="test", limit=12))
    rows += list(load_mcqa(str(ROOT / "data/demo/mmlu_pro_health/test.jsonl"), split="test", limit=4))
    for row in rows:
        row["prompt"] = row["harness_prompt"] = build_prompt(
            row["question"], row["options"], template="direct"
        )
    loaded = load_mcqa(str(whitespace_file), split="test")
    doc_to_text = _medqa_doc_to_text()
    for row, prompt, source in zip(loaded, _loglikelihood_mode_prompts(loaded), WHITESPACE_ROWS, strict=True):
        rows.append({**row, "prompt": prompt, "harness_prompt": doc_to_text(_medqa_doc(source))})
    return rows


def _harness_samples(model_dir: Path, questions: list[dict], workdir: Path, monkeypatch) -> list[dict]:
    """lm-eval's logged samples for the parity task, in question order."""
    from lm_eval.tasks import TaskManager

    with open(workdir / f"{TASK}.jsonl", "w", encoding="utf-8") as handle:
        for row in questions:
            choices = option_letters(len(row["options"]))
            record = {
                "prompt": row["harness_prompt"],
                "choices": choices,
                "label": choices.index(row["answer"]),
            }
            handle.write(json.dumps(record) + "\n")
    monkeypatch.chdir(workdir)  # the task YAML names its data file relative to the working directory
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32",
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
        num_fewshot=0,
        batch_size=4,
        device="cpu",
        log_samples=True,
        bootstrap_iters=0,
    )
    return sorted(output["samples"][TASK], key=lambda sample: sample["doc_id"])


def test_predictions_and_loglikelihoods_equal_lm_evals(
    noisy_model_dir, ours, questions, tmp_path, monkeypatch
):
    samples = _harness_samples(noisy_model_dir, questions, tmp_path, monkeypatch)
    model, tokenizer = ours
    scores = score_letters(
        model,
        tokenizer,
        [q["prompt"] for q in questions],
        [len(q["options"]) for q in questions],
        batch_size=3,
    )
    assert len(samples) == len(scores) == len(questions)
    for question, sample, score in zip(questions, samples, scores, strict=True):
        letters = option_letters(len(question["options"]))
        assert sample["arguments"][0][0] == question["prompt"], question[
            "id"
        ]  # the harness's prompt, verbatim
        harness_lls = [float(ll) for ll, _ in sample["filtered_resps"]]
        harness_letter = letters[int(np.argmax(harness_lls))]
        assert score.letter == harness_letter, question["id"]
        assert [score.loglikelihoods[x] for x in letters] == pytest.approx(harness_lls, abs=TOLERANCE)
        assert sample["acc"] == float(score.letter == question["answer"])
    assert len({score.letter for score in scores}) > 1  # a constant answer would make the check hollow


def test_raw_continuations_are_split_and_scored_as_lm_eval_does(noisy_model_dir, ours):
    """Multi-token continuations and prompts ending in whitespace, through lm-eval's HF model."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    pairs = [
        ("User: which drug?\nAssistant:", " Ceftriaxone"),
        ("User: which drug?\nAssistant: ", "Ceftriaxone 1 g"),
        ("User: which drug?\nAssistant:\n", " B. Gram-positive cocci in chains"),
        ("Options:\nA. tetracycline", " A"),
    ]
    harness = HFLM(pretrained=str(noisy_model_dir), dtype="float32", device="cpu", batch_size=2)
    requests = [Instance("loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]
    expected = [ll for ll, _ in harness.loglikelihood(requests, disable_tqdm=True)]
    model, tokenizer = ours
    assert any(len(split_pair(tokenizer, *pair)[1]) > 1 for pair in pairs)
    assert continuation_loglikelihoods(model, tokenizer, pairs, batch_size=3) == pytest.approx(
        expected, abs=TOLERANCE
    )


def test_left_padded_batches_score_as_one_question_at_a_time(ours, questions):
    model, tokenizer = ours
    prompts = [q["prompt"] for q in questions]
    counts = [len(q["options"]) for q in questions]
    one_by_one = score_letters(model, tokenizer, prompts, counts, batch_size=1)
    batched = score_letters(model, tokenizer, prompts, counts, batch_size=16)
    assert [s.letter for s in batched] == [s.letter for s in one_by_one]
    for a, b in zip(batched, one_by_one, strict=True):
        # float32 sums: equal to about one part in a million (1.3e-5 on a score of -16.6)
        assert list(a.loglikelihoods.values()) == pytest.approx(
            list(b.loglikelihoods.values()), rel=2e-6, abs=1e-5
        )


def test_trailing_whitespace_moves_to_the_continuation(ours):
    _, tokenizer = ours
    assert split_pair(tokenizer, "Assistant: ", "B") == split_pair(tokenizer, "Assistant:", " B")


class _FlatModel(torch.nn.Module):
    """Equal logits everywhere: every letter is equally likely."""

    def __init__(self, vocab: int = 8) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"max_position_embeddings": 64})()
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        return type("Output", (), {"logits": logits})()


class _CharTokenizer:
    bos_token_id = None
    eos_token_id = 0
    pad_token_id = 0

    def encode(self, text, add_special_tokens=True):
        return [1 + ord(c) % 7 for c in text]

    def decode(self, token_id):
        return "\x00"


def test_ties_go_to_the_first_letter():
    (score,) = score_letters(_FlatModel(), _CharTokenizer(), ["Q?"], [4])
    assert score.letter == "A"
    assert len(set(score.loglikelihoods.values())) == 1


def test_prompt_and_option_counts_must_pair_up():
    with pytest.raises(ValueError, match="2 prompts but 1 option counts"):
        score_letters(_FlatModel(), _CharTokenizer(), ["a", "b"], [4])


@pytest.mark.parametrize(
    "row",
    [
        {
            "question": "Which drug treats gonorrhea?",
            "options": {"A": "Ceftriaxone", "B": "Doxycycline", "C": "Azithromycin", "D": "Penicillin G"},
        },
        *WHITESPACE_ROWS,
    ],
    ids=lambda row: row.get("id", "clean"),
)
def test_harness_medqa_prompt_is_medqa_4options_prompt(row):
    options = [row["options"][x] for x in "ABCD"]
    assert harness_medqa_prompt(row["question"], options) == _medqa_doc_to_text()(_medqa_doc(row))


def test_loglikelihood_mode_shows_lm_evals_prompt_for_loaded_rows_with_untidy_whitespace(whitespace_file):
    """Loaded from a file and prompted by evaluation as lm-eval prompts the source rows, character for
    character: neither the loader nor the `lm_eval` template tidies the texts."""
    doc_to_text = _medqa_doc_to_text()
    expected = [doc_to_text(_medqa_doc(row)) for row in WHITESPACE_ROWS]
    assert _loglikelihood_mode_prompts(load_mcqa(str(whitespace_file), split="test")) == expected
    assert 'A. Acute alcohol intoxication\n"\nB. Opioid  overdose\nC. Hypoglycaemia \n' in expected[0]
