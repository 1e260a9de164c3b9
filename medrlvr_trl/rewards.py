"""The verifiable reward: format check, answer-letter extraction and the score (Med-RLVR, "Reward").

`completion` is the text generated after the prompt, special tokens removed.

Format. Tags are exact and case-sensitive (`<Answer>` and `< answer >` are plain text).
  mode "paper" (default): `<think>`, `</think>`, `<answer>`, `</answer>` each occur exactly once,
    in that order; only whitespace between `</think>` and `<answer>` and after `</answer>`. Any
    text may come before `<think>` (the paper's stage-5 exploit, reasoning before the tags, passed
    its check; we keep that so the dynamics can be reproduced).
  mode "strict": as "paper", and also only whitespace before `<think>` and a think section that is
    not empty or all whitespace.
"Whitespace" means what `str.isspace` accepts.

Letter. Read only when the format is valid, from the answer section with outer whitespace removed:
  an optional prefix "the answer is", "answer is" or "answer:" (any case), then one of
    - the letter alone ("B"; a lone lower-case letter also counts: "b" -> "B"),
    - an upper-case letter followed by ".", ")" or ":" and then anything ("B. Ceftriaxone", "B)"),
    - an upper-case letter in "(B)" or "[B]", then anything.
  Anything else has no letter: "A or B", "A/B", "A, C", "B and D", "B Ceftriaxone", "b.", "".
  `Verdict.letter` holds the letter as read, even when it lies beyond the question's options
  ("F" for a four-option question); such a letter is never correct.

Reward. Invalid format -> `values.format_error` (-1); valid with the gold letter ->
`values.correct` (1); otherwise (wrong letter, no letter, letter out of range) -> `values.wrong` (0).
`verify` never raises on a completion string; a bad gold answer or option count is a caller bug
and raises ValueError.

Extra reward terms (think length, leaks, prefix text) can later read the `TaggedCompletion` that
`check_format` returns and adjust the `Verdict`, without changing the rules above.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from medrlvr_trl.prompts import LETTERS, MAX_OPTIONS, MIN_OPTIONS

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


@dataclass(frozen=True)
class FormatRules:
    """What a format mode demands beyond the four tags in order."""

    allow_prefix: bool
    require_think: bool


FORMAT_MODES: dict[str, FormatRules] = {
    "paper": FormatRules(allow_prefix=True, require_think=False),
    "strict": FormatRules(allow_prefix=False, require_think=True),
}


@dataclass(frozen=True)
class RewardValues:
    """Reward for each outcome; the paper's values are the defaults."""

    format_error: float = -1.0
    wrong: float = 0.0
    correct: float = 1.0


@dataclass(frozen=True)
class TaggedCompletion:
    """A well-formatted completion split into its parts (text before `<think>`, think, answer)."""

    prefix: str
    think: str
    answer: str


@dataclass(frozen=True)
class Verdict:
    format_ok: bool
    letter: str | None
    correct: bool
    reward: float


_LETTER_RE = re.compile(
    r"(?i:(?:the\s+)?answer\s+is\b|answer\s*:)?\s*"
    r"(?:(?P<alone>[A-Za-z])|(?P<punct>[A-Z])[.):].*|\((?P<paren>[A-Z])\).*|\[(?P<bracket>[A-Z])\].*)",
    re.DOTALL,
)


def _rules(mode: str) -> FormatRules:
    try:
        return FORMAT_MODES[mode]
    except KeyError:
        raise ValueError(f"unknown format mode {mode!r}; known modes: {sorted(FORMAT_MODES)}") from None


def _blank(text: str) -> bool:
    return not text or text.isspace()


def check_format(completion: str, mode: str = "paper") -> TaggedCompletion | None:
    """Split a completion into its parts if it follows the format rules of `mode`, else None."""
    rules = _rules(mode)
    if any(completion.count(tag) != 1 for tag in _TAGS):
        return None
    think_open, think_close = completion.index(THINK_OPEN), completion.index(THINK_CLOSE)
    answer_open, answer_close = completion.index(ANSWER_OPEN), completion.index(ANSWER_CLOSE)
    if not think_open < think_close < answer_open < answer_close:
        return None
    prefix = completion[:think_open]
    think = completion[think_open + len(THINK_OPEN) : think_close]
    if not _blank(completion[think_close + len(THINK_CLOSE) : answer_open]):
        return None
    if not _blank(completion[answer_close + len(ANSWER_CLOSE) :]):
        return None
    if not rules.allow_prefix and not _blank(prefix):
        return None
    if rules.require_think and _blank(think):
        return None
    return TaggedCompletion(
        prefix=prefix, think=think, answer=completion[answer_open + len(ANSWER_OPEN) : answer_close]
    )


def extract_letter(answer_text: str) -> str | None:
    """The option letter an answer names (upper-case), or None if it names none clearly."""
    match = _LETTER_RE.fullmatch(answer_text.strip())
    if match is None:
        return None
    return next(group for group in match.groups() if group is not None).upper()


def _check_gold(answer: str, num_options: int) -> int:
    try:
        count = operator.index(num_options)
    except TypeError:
        raise ValueError(f"num_options: got {num_options!r}; need an integer") from None
    if not MIN_OPTIONS <= count <= MAX_OPTIONS:
        raise ValueError(f"num_options: got {count}; need {MIN_OPTIONS} to {MAX_OPTIONS}")
    if answer not in LETTERS[:count]:
        raise ValueError(
            f"gold answer: got {answer!r}; need one upper-case letter among the {count} options "
            f"{''.join(LETTERS[:count])} (fix the dataset row or its normalisation)"
        )
    return count


def verify(
    completion: str,
    answer: str,
    num_options: int,
    *,
    mode: str = "paper",
    values: RewardValues = RewardValues(),  # frozen, so one shared default is safe
) -> Verdict:
    """Score one completion against the gold letter `answer` of a `num_options`-option question."""
    _check_gold(answer, num_options)
    tagged = check_format(completion, mode)
    if tagged is None:
        return Verdict(format_ok=False, letter=None, correct=False, reward=values.format_error)
    letter = extract_letter(tagged.answer)
    correct = letter == answer
    return Verdict(
        format_ok=True, letter=letter, correct=correct, reward=values.correct if correct else values.wrong
    )
