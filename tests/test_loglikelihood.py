"""The loglikelihood answer mode against lm-evaluation-harness itself, on the same rows and weights.

lm-eval runs in-process on the task in tests/lm_eval_tasks/ (a local JSON file, no Hub); its
per-question log-likelihoods and predictions must equal `medrlvr_trl.loglikelihood`'s.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medrlvr_trl.data import load_mcqa
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


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    """MedQA demo rows (5 options) and MMLU-Pro health rows (6 to 10), with the direct prompt."""
    rows = list(load_mcqa(str(ROOT / "data/demo/medqa/test.jsonl"), split="test", limit=12))
    rows += list(load_mcqa(str(ROOT / "data/demo/mmlu_pro_health/test.jsonl"), split="test", limit=4))
    for row in rows:
        row["prompt"] = build_prompt(row["question"], row["options"], template="direct")
    return rows


def _harness_samples(model_dir: Path, questions: list[dict], workdir: Path, monkeypatch) -> list[dict]:
    """lm-eval's logged samples for the parity task, in question order."""
    from lm_eval.tasks import TaskManager

    with open(workdir / f"{TASK}.jsonl", "w", encoding="utf-8") as handle:
        for row in questions:
            choices = option_letters(len(row["options"]))
            record = {"prompt": row["prompt"], "choices": choices, "label": choices.index(row["answer"])}
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
        assert sample["arguments"][0][0] == question["prompt"]  # the harness saw our prompt, verbatim
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
        assert list(a.loglikelihoods.values()) == pytest.approx(list(b.loglikelihoods.values()), abs=1e-5)


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


def test_harness_medqa_prompt_is_medqa_4options_prompt():
    path = Path(lm_eval.__file__).parent / "tasks" / "medqa" / "preprocess_medqa.py"
    spec = importlib.util.spec_from_file_location("preprocess_medqa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    options = ["Ceftriaxone", "Doxycycline", "Azithromycin", "Penicillin G"]
    doc = {"sent1": "Which drug treats gonorrhea?", **{f"ending{i}": text for i, text in enumerate(options)}}
    assert harness_medqa_prompt(doc["sent1"], options) == module.doc_to_text(doc)
