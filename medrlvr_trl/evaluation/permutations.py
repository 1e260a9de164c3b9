"""Option order: cyclic shifts of a question's options, and what answers under several shifts say.

Shift s moves option i to position (i + s) mod n and the gold letter follows its text. A model that
knows the answer names the same option text under every shift (`consistency_rate`); a letter prior
does not, and its accuracy falls when averaged over shifts (`shift_mean_outcomes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medrlvr_trl.evaluation.answers import strict_letter
from medrlvr_trl.prompts import LETTERS


def shift_options(options: Sequence[str], answer: str, shift: int) -> tuple[list[str], str]:
    """Option i moves to position (i + shift) mod n; the gold letter follows its text.

    Shift 0 is the order the dataset gives; a shift of n or more repeats a smaller one.
    """
    n = len(options)
    cut = n - shift % n
    gold = LETTERS[(LETTERS.index(answer) + shift) % n]
    return [*options[cut:], *options[:cut]], gold


def shift_row(row: Mapping[str, Any], shift: int) -> dict[str, Any]:
    """A copy of a question with its options shifted and `answer` / `answer_index` following the gold text."""
    options, gold = shift_options(list(row["options"]), row["answer"], shift)
    return {**row, "options": options, "answer": gold, "answer_index": LETTERS.index(gold)}


def permuted_rows(rows: Any, shifts: int) -> list[list[dict[str, Any]]]:
    """The questions under shifts 0 .. shifts - 1 (shift 0: as given)."""
    return [[shift_row(row, s) for row in rows] for s in range(shifts)]


def chosen_option(record: Mapping[str, Any]) -> int | None:
    """The index, in the unshifted options, of the option the strict letter names (None: no option)."""
    letter = strict_letter(record)
    n = record["num_options"]
    if letter is None or letter not in LETTERS[:n]:
        return None
    return (LETTERS.index(letter) - record["shift"]) % n


def consistency_rate(records_by_shift: Sequence[Sequence[Mapping[str, Any]]]) -> float:
    """Share of questions whose strict answer names the same option text under every shift.

    Option texts are unique within a question (`load_mcqa` checks), so the same text is the same
    unshifted index. A question with no option named under some shift is inconsistent.
    """
    per_question = zip(*records_by_shift, strict=True)
    consistent = [
        None not in choices and len(set(choices)) == 1
        for choices in ([chosen_option(r) for r in records] for records in per_question)
    ]
    return sum(consistent) / len(consistent)


def shift_mean_outcomes(records_by_shift: Sequence[Sequence[Mapping[str, Any]]]) -> list[float]:
    """Per question, the share of option shifts it was answered right under (strict): the per-question
    score behind `accuracy_mean_over_shifts`, which a letter prior cannot lift by luck of one order."""
    return [
        sum(r["correct"] for r in records) / len(records) for records in zip(*records_by_shift, strict=True)
    ]


def permutation_summary(records_by_shift: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Strict accuracy per shift, its mean and the consistency rate (results.json, when K > 1)."""
    import numpy as np

    per_shift = [float(np.mean([r["correct"] for r in records])) for records in records_by_shift]
    return {
        "accuracy_per_shift": per_shift,
        "accuracy_mean_over_shifts": float(np.mean(per_shift)),
        "consistency_rate": consistency_rate(records_by_shift),
    }
