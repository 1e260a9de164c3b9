"""Reading the answer letter out of a completion, under the two rules every completion is scored by.

- strict, what RL optimises (`score_completion`): in cot mode the training verifier on the whole
  completion; in direct mode `direct_letter`; in loglikelihood mode the chosen letter.
- lenient, how benchmark harnesses read answers (`lenient_letter`): anything may follow the first
  `</answer>`; the strict reader on the text up to there, else MMLU-Pro's answer patterns
  (`fallback_letter`), only where the text answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medrlvr_trl.evaluation.specs import ANSWER_MODES, LOGLIKELIHOOD
from medrlvr_trl.prompts import LETTERS
from medrlvr_trl.rewards import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RewardValues,
    Verdict,
    check_format,
    extract_letter,
    verify,
)
from medrlvr_trl.rewards.verifier import names_lettered_option

ACCURACY_RULE = "strict"
"""The rule behind `accuracy`, the chart and the paired comparisons: the one RL is trained on."""


def direct_letter(completion: str, *, options: Sequence[str] | None = None) -> str | None:
    """The letter of a direct answer: from its `<answer>` section if present, else its first line.

    Read with the verifier's letter rules; `options` (the option texts) keep "E. coli" from reading as E.
    """
    text = completion.strip()
    start, end = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if 0 <= start < end:
        text = text[start + len(ANSWER_OPEN) : end]
    else:
        text = text.split("\n", 1)[0]
    return extract_letter(text, options=options)


def score_completion(
    completion: str,
    answer: str,
    num_options: int,
    answer_mode: str,
    values: RewardValues = RewardValues(),  # noqa: B008 (frozen, so one shared default is safe)
    *,
    options: Sequence[str] | None = None,
    verifier_mode: str = "paper",
) -> Verdict:
    """Score one completion under the strict rule; `format_ok` means "a letter could be read" in
    direct mode. A loglikelihood-mode "completion" is the chosen letter, read as a direct answer.

    `options`, the question's option texts, let an answer like "E. coli" be told from letter E.
    `verifier_mode` is the format mode the model was trained with (`ModelSpec.verifier_mode`, cot only).
    """
    if answer_mode == "cot":
        return verify(completion, answer, num_options, mode=verifier_mode, values=values, options=options)
    if answer_mode not in ("direct", LOGLIKELIHOOD):
        raise ValueError(f"answer mode {answer_mode!r} is not one of {list(ANSWER_MODES)}")
    verify("", answer, num_options, options=options)  # validates the gold answer the same way cot mode does
    letter = direct_letter(completion, options=options)
    if letter is None:
        return Verdict(format_ok=False, letter=None, correct=False, reward=values.format_error)
    correct = letter == answer
    return Verdict(
        format_ok=True, letter=letter, correct=correct, reward=values.correct if correct else values.wrong
    )


LENIENT_SOURCES = ("verifier", "answer tag", "answer is", "answer:", LOGLIKELIHOOD)
"""Which rule read a lenient letter, in the order they are tried (`lenient_source` in predictions)."""
_ANSWER_PATTERNS = (
    ("answer is", r"answer is \(?({letters})\b"),
    ("answer:", r"[aA]nswer:\s*\(?({letters})\b"),
)
"""The two answer patterns of MMLU-Pro's extraction chain (lm-eval's mmlu_pro task uses the first),
with its A-J replaced by the question's letters and a word boundary after the letter, so "the answer
is Bacteroides" is not read as B. MMLU-Pro's third rule, the last standalone letter anywhere, is
left out: it reads "A" from "A 45-year-old ..." and "C" from "37°C" in text that answers nothing."""
_LAST_WINS = frozenset({"answer:"})
"""Patterns whose last occurrence counts (MMLU-Pro takes the last "Answer: X", the first "answer is")."""
_ARTICLE_FOLLOWERS_OK = frozenset({"because", "since", "as", "is", "was", "which", "for", "given", "due"})
"""Words after "A" that show it is the letter ("A because ..."), not the article ("A patient ...")."""
_HEDGE_RE = re.compile(r"\)?\s*(?:,|/|\bor\b|\band\b)\s*\(?[A-Z]\b")
_ARTICLE_RE = re.compile(r"\s+(\d|[a-z]+)")


@functools.cache
def _answer_patterns(num_options: int) -> tuple[tuple[str, re.Pattern[str]], ...]:
    letters = f"[{LETTERS[0]}-{LETTERS[num_options - 1]}]"
    return tuple((name, re.compile(rule.format(letters=letters))) for name, rule in _ANSWER_PATTERNS)


def _answers_with(text: str, match: re.Match[str], options: Sequence[str] | None) -> bool:
    """Whether a pattern's letter is an answer: not a hedge ("B or C"), not the article ("A 45-year-old"),
    not a unit ("37°C", "C°"), not part of a word ("B-cell"), and not the start of another option's
    text ("E. coli" when E. coli is an option: the verifier's option-text guard)."""
    letter, start, end = match[1], match.start(1), match.end(1)
    rest = text[end:].split("\n", 1)[0]
    parenthesised = text[start - 1 : start] == "("
    if text[:start].rstrip().endswith("°") or rest.lstrip().startswith("°") or re.match(r"-\w", rest):
        return False
    if _HEDGE_RE.match(rest):
        return False
    article = _ARTICLE_RE.match(rest)
    if letter == "A" and not parenthesised and article and article[1] not in _ARTICLE_FOLLOWERS_OK:
        return False
    if options and not parenthesised and rest[:1] in (".", ")", ":") and rest[1:].strip():
        return not names_lettered_option(letter, rest[1:], letter + rest, options)
    return True


def fallback_letter(
    text: str, num_options: int, *, options: Sequence[str] | None = None
) -> tuple[str | None, str | None]:
    """The letter an "answer is (X)" or "Answer: X" pattern reads in `text`, and the pattern's name
    (or None, None). Only the question's letters count; `_answers_with` drops letters that do not answer."""
    for name, pattern in _answer_patterns(num_options):
        matches = list(pattern.finditer(text))
        if name in _LAST_WINS:
            matches.reverse()
        for match in matches:
            if _answers_with(text, match, options):
                return match[1], name
    return None, None


def _through_answer_close(completion: str) -> str:
    """The completion up to and including its first `</answer>` (all of it when there is none)."""
    end = completion.find(ANSWER_CLOSE)
    return completion if end < 0 else completion[: end + len(ANSWER_CLOSE)]


def _answer_section(text: str) -> str | None:
    """The text after the first `<answer>`, up to `</answer>` or the end (None without the tag)."""
    start = text.find(ANSWER_OPEN)
    if start < 0:
        return None
    return text[start + len(ANSWER_OPEN) :].split(ANSWER_CLOSE, 1)[0]


def lenient_letter(
    completion: str, num_options: int, answer_mode: str, *, options: Sequence[str] | None = None
) -> tuple[str | None, str | None]:
    """The letter under the lenient rule and which rule read it (`LENIENT_SOURCES`), or (None, None).

    Text after the first `</answer>` is ignored. Then, in order: the strict reader (the verifier's
    format and letter rules in cot mode, `direct_letter` in direct mode); in cot mode, the verifier's
    letter rules on a complete `<answer>...</answer>` section when the format around it failed; the
    "answer is (X)" and "Answer: X" patterns (`fallback_letter`), only inside the `<answer>` section
    when it holds text, so a letter in `<think>` never stands in for a text answer. None when nothing
    answers with a letter: the caller counts it wrong, never a guess.
    """
    text = _through_answer_close(completion)
    section = _answer_section(text)
    if answer_mode == "cot":
        tagged = check_format(text, "paper")
        letter = extract_letter(tagged.answer, options=options) if tagged else None
        if letter is not None:
            return letter, "verifier"
        if tagged is None and section is not None and text.endswith(ANSWER_CLOSE):
            letter = extract_letter(section, options=options)
            if letter is not None:
                return letter, "answer tag"
    else:
        letter = direct_letter(text, options=options)
        if letter is not None:
            return letter, "verifier"
    region = section if section is not None and section.strip() else text
    return fallback_letter(region, num_options, options=options)


UNPARSED = "unparsed"


def strict_letter(record: Mapping[str, Any]) -> str | None:
    """The letter a prediction record names under the strict rule, or None."""
    return record["letter"] if record["format_ok"] else None
