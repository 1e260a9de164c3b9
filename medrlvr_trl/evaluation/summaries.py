"""One model on one dataset in numbers: accuracy under both rules with error bars, the letters it
answers, deduplicated accuracy; and the baselines (random guess, best constant letter) and the
description of each dataset (size, gold letters, a hash of its questions) that results.json holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medrlvr_trl.data import QuestionIndex, question_overlap, questions_sha256
from medrlvr_trl.evaluation.answers import LENIENT_SOURCES, UNPARSED, strict_letter
from medrlvr_trl.evaluation.permutations import permutation_summary
from medrlvr_trl.evaluation.specs import DatasetSpec
from medrlvr_trl.prompts import LETTERS

MCQA_ACCURACY_PATH = str(Path(__file__).parent.parent / "metrics" / "mcqa_accuracy")


def load_accuracy_metric() -> Any:
    """The local `mcqa_accuracy` evaluate module (loaded by path; never touches the Hub)."""
    import evaluate

    return evaluate.load(MCQA_ACCURACY_PATH)


def accuracy_summary(
    records: Sequence[dict[str, Any]], metric: Any, *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Accuracy under both rules with bootstrap stds, unparsed rate, n, format-valid rate and mean
    completion length (tokens). `accuracy` / `accuracy_std` are the strict rule's (older readers).
    `accuracy_wilson95` / `accuracy_lenient_wilson95`: 95% Wilson intervals, which keep a width where
    the bootstrap std is 0 (accuracy 0 or 1)."""
    import numpy as np

    from medrlvr_trl.stats import wilson_interval

    if not records:
        raise ValueError("cannot summarise an empty set of predictions")
    references = [r["answer"] for r in records]
    strict = metric.compute(
        predictions=[strict_letter(r) or "" for r in records],
        references=references,
        n_resamples=n_resamples,
        seed=seed,
    )
    lenient = metric.compute(
        predictions=[r["letter_lenient"] or "" for r in records],
        references=references,
        n_resamples=n_resamples,
        seed=seed,
    )
    return {
        "accuracy": strict["accuracy"],
        "accuracy_std": strict["accuracy_std"],
        "accuracy_strict": strict["accuracy"],
        "accuracy_lenient": lenient["accuracy"],
        "accuracy_lenient_std": lenient["accuracy_std"],
        "unparsed_rate": float(np.mean([r["letter_lenient"] is None for r in records])),
        "n": strict["n"],
        "format_valid_rate": float(np.mean([r["format_ok"] for r in records])),
        "mean_completion_tokens": float(np.mean([r["completion_tokens"] for r in records])),
        "lenient_sources": lenient_source_counts(records),
        "accuracy_wilson95": list(
            wilson_interval(sum(strict_letter(r) == r["answer"] for r in records), len(records))
        ),
        "accuracy_lenient_wilson95": list(
            wilson_interval(sum(r["letter_lenient"] == r["answer"] for r in records), len(records))
        ),
    }


def lenient_source_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many lenient letters each rule read (`LENIENT_SOURCES`), and how many stayed unparsed: a
    lenient accuracy resting on the answer patterns reads differently from one the verifier gave."""
    counts = {**dict.fromkeys(LENIENT_SOURCES, 0), UNPARSED: 0}
    for record in records:
        source = record.get("lenient_source") if record["letter_lenient"] is not None else None
        key = UNPARSED if source is None else source
        counts[key] = counts.get(key, 0) + 1
    return counts


def random_guess(rows: Any) -> dict[str, float]:
    """A uniform guesser: expected accuracy (mean of 1/num_options) and the std of its accuracy.

    The std is analytic (`stats.random_guess_std`). A guesser always names one of the question's
    letters, so both rules give it the same score and nothing is unparsed.
    """
    from medrlvr_trl.stats import random_guess_std

    counts = [len(options) for options in rows["options"]]
    accuracy = sum(1.0 / k for k in counts) / len(counts)
    std = random_guess_std(counts)
    return {
        "accuracy": accuracy,
        "accuracy_std": std,
        "accuracy_strict": accuracy,
        "accuracy_lenient": accuracy,
        "accuracy_lenient_std": std,
        "unparsed_rate": 0.0,
        "n": len(counts),
    }


def letter_distribution(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How often each strict letter was answered; `unparsed` counts answers with none.

    Every letter of the widest question is listed, zeros included, so a letter never chosen shows.
    """
    width = max(r["num_options"] for r in records)
    counts = dict.fromkeys(LETTERS[:width], 0)
    unparsed = 0
    for record in records:
        letter = strict_letter(record)
        if letter is None:
            unparsed += 1
        else:
            counts[letter] = counts.get(letter, 0) + 1
    return {**dict(sorted(counts.items())), UNPARSED: unparsed}


def gold_letter_distribution(rows: Any) -> dict[str, int]:
    """How often each letter is the gold answer, every letter of the widest question listed."""
    width = max(len(options) for options in rows["options"])
    counts = dict.fromkeys(LETTERS[:width], 0)
    for answer in rows["answer"]:
        counts[answer] += 1
    return counts


def dedup_summary(records: Sequence[Mapping[str, Any]], kept: Sequence[int]) -> dict[str, Any]:
    """Strict accuracy on the questions `kept` (`unique_question_indices`) and their number."""
    return {
        "accuracy_dedup": sum(records[i]["correct"] for i in kept) / len(kept),
        "n_dedup": len(kept),
    }


def summarise_dataset(
    records_by_shift: Sequence[Sequence[dict[str, Any]]],
    metric: Any,
    kept: Sequence[int],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """One model on one dataset: `accuracy_summary` of the unshifted options, their letter distribution and
    within-set-deduplicated accuracy, and with several shifts `permutation_summary`."""
    unshifted = records_by_shift[0]
    summary: dict[str, Any] = accuracy_summary(unshifted, metric, n_resamples=n_resamples, seed=seed)
    summary["letter_distribution"] = letter_distribution(unshifted)
    summary.update(dedup_summary(unshifted, kept))
    if len(records_by_shift) > 1:
        summary.update(permutation_summary(records_by_shift))
    return summary


def constant_letter_baseline(rows: Any) -> dict[str, Any]:
    """The best score of always naming one letter: the most frequent gold letter (the first on a tie),
    its accuracy and that accuracy's std over resamples of the questions, sqrt(p (1 - p) / n).

    A letter prior scores this much with no knowledge at all, so it is the floor a model must beat;
    random is not (27.7% for always-A on the real 4-option MedQA test against random's 25%). The letter
    is chosen on the test set itself, so the floor is, if anything, high.
    """
    counts = gold_letter_distribution(rows)
    n = sum(counts.values())
    letter = max(counts, key=lambda key: (counts[key], -LETTERS.index(key)))
    accuracy = counts[letter] / n
    return {
        "letter": letter,
        "accuracy": accuracy,
        "accuracy_std": (accuracy * (1 - accuracy) / n) ** 0.5,
        "n": n,
    }


def random_summary(rows: Any, kept: Sequence[int]) -> dict[str, Any]:
    """`random_guess` on every question, with its expected accuracy on the deduplicated ones."""
    subset = {"options": [rows["options"][i] for i in kept]}
    return {**random_guess(rows), "accuracy_dedup": random_guess(subset)["accuracy"], "n_dedup": len(kept)}


def describe_dataset(
    spec: DatasetSpec, rows: Any, kept: Sequence[int], train: QuestionIndex | None = None
) -> dict[str, Any]:
    """The `datasets` entry of results.json: the spec, its size with and without within-set
    duplicates, its gold letters, a hash of its questions and, given a training-set index, its overlap
    with it."""
    entry = {
        **asdict(spec),
        "n": len(rows),
        "n_dedup": len(kept),
        "gold_letter_distribution": gold_letter_distribution(rows),
        "questions_sha256": questions_sha256(rows),
    }
    if train is not None:
        entry["contamination"] = question_overlap(train, rows, names=("training set", spec.label)).as_record()
    return entry
