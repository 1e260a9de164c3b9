"""The shared multiple-choice schema, and how one source row is detected, checked and mapped onto it.

A row's schema is recognised from its keys and value types, not from the dataset's name:
- MedQA (`GBaker/MedQA-USMLE-4-options`, the original 5-option files): `options` is a dict
  letter -> text, `answer_idx` a letter, `answer` the option text (checked against `answer_idx`).
- bigbio `med_qa` source configs: `options` is a list of `{key, value}`, `answer_idx` a letter.
- MMLU-Pro: `options` is a list of texts, `answer` a letter and/or `answer_index` an integer.
Problems are raised as `RowProblem(field, problem)`; the caller adds the file and row number.
Question and option texts are kept as the source gives them, whitespace included: how they are shown
is the prompt template's business (`prompts.build_prompt`), and lm-eval's template shows them as they are.
"""

from __future__ import annotations

from typing import Any

import datasets

from medrlvr_trl.prompts import LETTERS

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "options": datasets.List(datasets.Value("string")),
        "answer": datasets.Value("string"),
        "answer_index": datasets.Value("int64"),
        "source": datasets.Value("string"),
    }
)
"""Columns of every loaded split; `source` is added by the loader, the rest come from `normalise_row`."""
_EXPECTED_SCHEMAS = (
    "MedQA (question, options: dict letter -> text, answer_idx: letter, optional answer: text), "
    "bigbio med_qa source (question, options: list of {key, value}, answer_idx), "
    "MMLU-Pro (question, options: list of texts, answer: letter and/or answer_index: int)"
)


class RowProblem(Exception):
    """One field of one row is wrong; the loader turns it into a `ValueError` naming file and row."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def normalise_row(row: Any, fallback_id: str) -> dict[str, Any]:
    """Detect the row's schema from its keys and value types, validate it, return the shared fields."""
    if not isinstance(row, dict):
        raise RowProblem("row", f"expected an object with named fields, found {type(row).__name__}")
    options = row.get("options")
    if isinstance(options, dict) and "answer_idx" in row:
        texts = _lettered_options(options, "options")
        index = _letter_index(row["answer_idx"], len(texts), "answer_idx")
        _check_answer_text(row.get("answer"), texts, index)
    elif isinstance(options, list) and options and isinstance(options[0], dict) and "answer_idx" in row:
        texts = _lettered_options(_key_value_pairs(options), "options")
        index = _letter_index(row["answer_idx"], len(texts), "answer_idx")
        _check_answer_text(row.get("answer"), texts, index)
    elif isinstance(options, list) and ("answer" in row or "answer_index" in row):
        texts = [_option_text(text, f"options[{i}]") for i, text in enumerate(options)]
        _check_option_count(len(texts))
        index = _mmlu_answer(row.get("answer"), row.get("answer_index"), len(texts))
    else:
        raise RowProblem(
            "answer" if isinstance(options, dict | list) else "options",
            f"unrecognised row schema: found keys {sorted(row)}; expected one of {_EXPECTED_SCHEMAS}",
        )
    texts = _without_trailing_placeholders(texts, index)
    _check_distinct(texts)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RowProblem("question", "the question is missing or empty")
    return {
        "id": _row_id(row, fallback_id),
        "question": question,
        "options": texts,
        "answer": LETTERS[index],
        "answer_index": index,
    }


def _row_id(row: dict[str, Any], fallback_id: str) -> str:
    for field in ("question_id", "id"):
        if field in row:
            value = row[field]
            if value is None or not str(value).strip():
                raise RowProblem(field, "the id is empty; give every row an id or remove the field")
            return str(value).strip()
    return fallback_id


def _key_value_pairs(options: list[Any]) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for i, item in enumerate(options):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or "value" not in item:
            raise RowProblem(
                f"options[{i}]", f"expected an object with a letter 'key' and a 'value', found {item!r}"
            )
        if item["key"] in pairs:
            raise RowProblem(f"options[{i}]", f"option letter {item['key']!r} appears twice")
        pairs[item["key"]] = item["value"]
    return pairs


def _lettered_options(options: dict[Any, Any], field: str) -> list[str]:
    """Order letter-keyed options A, B, C, ...; null values (padding in columnar files) mean absent."""
    present = {key: value for key, value in options.items() if value is not None}
    bad_keys = [key for key in present if not (isinstance(key, str) and len(key) == 1 and key in LETTERS)]
    if bad_keys:
        raise RowProblem(field, f"option keys must be single upper-case letters, found {bad_keys}")
    letters = sorted(present)
    _check_option_count(len(letters))
    if letters != list(LETTERS[: len(letters)]):
        raise RowProblem(
            field, f"option letters must run A, B, C, ... without gaps, found {', '.join(letters)}"
        )
    return [_option_text(present[letter], f"{field}[{letter}]") for letter in letters]


def _option_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowProblem(field, f"option text must be non-empty text, found {value!r}")
    return value


# Texts that fill an option slot without being an option (MMLU-Pro pads short option lists so).
PLACEHOLDER_OPTIONS = frozenset({"n/a", "na", "null", "-"})


def _is_placeholder(text: str) -> bool:
    return text.strip().casefold() in PLACEHOLDER_OPTIONS


def _without_trailing_placeholders(texts: list[str], answer: int) -> list[str]:
    """Drop placeholder options ("N/A") after the last real one; a placeholder anywhere else is an error.

    A trailing placeholder is padding, and keeping it would add a letter the model may pick and lower
    the chance rate; one inside the list, or one that is the gold answer, means the row is corrupt.
    """
    end = len(texts)
    while end > answer + 1 and _is_placeholder(texts[end - 1]):
        end -= 1
    for i, text in enumerate(texts[:end]):
        if _is_placeholder(text):
            raise RowProblem(
                f"options[{LETTERS[i]}]", f"option {LETTERS[i]} is a placeholder ({text!r}), not an option"
            )
    _check_option_count(end)
    return texts[:end]


def _check_distinct(texts: list[str]) -> None:
    """Two options with one text make the letter ambiguous and the question unanswerable as asked."""
    seen: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = " ".join(text.split()).casefold()
        if key in seen:
            raise RowProblem(
                "options", f"options {LETTERS[seen[key]]} and {LETTERS[i]} have the same text ({text!r})"
            )
        seen[key] = i


def _check_option_count(count: int) -> None:
    if not 2 <= count <= len(LETTERS):
        raise RowProblem("options", f"a question needs 2 to {len(LETTERS)} options, found {count}")


def _letter_index(letter: Any, count: int, field: str) -> int:
    stripped = letter.strip() if isinstance(letter, str) else None
    if stripped is None or len(stripped) != 1 or stripped not in LETTERS[:count]:
        raise RowProblem(field, f"answer letter {letter!r} is not among the options A-{LETTERS[count - 1]}")
    return LETTERS.index(stripped)


def _check_answer_text(answer: Any, options: list[str], index: int) -> None:
    """MedQA stores the answer twice (letter and text); a mismatch means the row is corrupt."""
    if answer is None:
        return
    if not isinstance(answer, str) or " ".join(answer.split()) != " ".join(options[index].split()):
        raise RowProblem(
            "answer", f"answer text {answer!r} differs from option {LETTERS[index]} ({options[index]!r})"
        )


def _mmlu_answer(letter: Any, index: Any, count: int) -> int:
    if letter is None and index is None:
        raise RowProblem("answer", "the row has neither an answer letter nor an answer_index")
    from_letter = None if letter is None else _letter_index(letter, count, "answer")
    if index is None:
        return from_letter
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise RowProblem(
            "answer_index", f"answer_index must be an integer from 0 to {count - 1}, found {index!r}"
        )
    if from_letter is not None and from_letter != index:
        raise RowProblem(
            "answer_index", f"answer_index {index} ({LETTERS[index]}) disagrees with answer letter {letter!r}"
        )
    return index
