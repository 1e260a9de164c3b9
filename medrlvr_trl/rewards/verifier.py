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

Letter. Read only when the format is valid, from the answer section with outer whitespace removed
and Markdown emphasis ("**C**", "*C*", "__C__", around any part) taken off:
  an optional prefix (any case) "the answer is", "answer is", "the correct answer is", "the final
  answer is" (with or without "the"; an optional colon after "is"), or "answer:", "correct answer:",
  "final answer:"; then an optional word "option" or "choice" (any case); then one of
    - the letter alone ("B"; a lone lower-case letter also counts: "b" -> "B"),
    - an upper-case letter followed by ".", ")" or ":" and then anything ("B. Ceftriaxone", "B)"),
    - an upper-case letter, a spaced hyphen or dash (" - ", " – ", " — ") and text ("B - Ceftriaxone"),
    - an upper-case letter in "(B)" or "[B]", then anything.
  Anything else has no letter: "A or B", "A/B", "A, C", "B and D", "B Ceftriaxone", "A drug that",
  "My answer is B", "b.", "".
  Option texts that start like a letter ("E. coli", "C. difficile colitis"). Given the option texts
  (`options`, in letter order), an answer of the second or third form with text after the letter
  and its punctuation has no letter when
    - that text is not the text of the letter's own option, and
    - the answer after any prefix and "option" word (case-insensitive, whitespace collapsed) is
      the start of, or starts with, the text of another option that begins "<upper-case letter>.";
  it then names that option by its text, and text answers are not read. The letter's own option
  never conflicts: both readings name it. With options A = "E. coli", C = "C. difficile colitis":
  "E. coli" -> None, "E. coli sepsis" -> None, "A. E. coli" -> A, "C. difficile" -> C, "E." -> E,
  "E) coli" -> E. Without the option texts "E. coli" reads as E.
  `Verdict.letter` holds the letter as read, even when it lies beyond the question's options
  ("F" for a four-option question); such a letter is never correct.

Reward. Invalid format -> `values.format_error` (-1); valid with the gold letter ->
`values.correct` (1); otherwise (wrong letter, no letter, letter out of range) -> `values.wrong` (0).
`verify` never raises on a completion string; a bad gold answer, option count or option list is a
caller bug and raises ValueError.

Extra reward terms (think length, leaks, prefix text) can later read the `TaggedCompletion` that
`check_format` returns and adjust the `Verdict`, without changing the rules above.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Gold:
    """What the verifier needs to know about one prompt."""

    answer: str
    num_options: int
    id: str
    options: tuple[str, ...] = ()  # option texts in letter order (leak detection reads them)


_EMPHASIS_RE = re.compile(
    r"""
    (?P<mark>\*\*|__|\*)         # a Markdown bold or italic marker: "**C**", "__C__", "*C*"
    (?=\S)(?P<inner>.+?)(?<=\S)  # the emphasised text, on one line, not starting or ending with a space
    (?P=mark)                    # closed by the same marker
    """,
    re.VERBOSE,
)

_LETTER_RE = re.compile(
    r"""
    (?i:                                                        # an optional prefix, any case:
        (?:the\s+)?(?:(?:correct|final)\s+)?answer\s+is\b\s*:?  #   "the answer is", "The correct answer is:"
      | (?:(?:correct|final)\s+)?answer\s*:                     #   "Answer:", "Correct answer:", "Final answer:"
    )?
    \s*
    (?i:(?:option|choice)\s+)?                                  # an optional word: "Option C", "choice C"
    (?P<body>
        (?P<alone>[A-Za-z])                                     # the letter alone: "B", "b"
      | (?P<punct>[A-Z])                                        # an upper-case letter, then
        (?: [.):]                                               #   ".", ")" or ":": "B. Ceftriaxone", "B)"
          | [ \t]+[-\u2013\u2014](?=[ \t]+\S)                   #   or a spaced hyphen or dash before text: "B - Ceftriaxone"
        )
        (?P<text>.*)                                            #   then anything
      | \((?P<paren>[A-Z])\).*                                  # "(B)", "(B) Ceftriaxone"
      | \[(?P<bracket>[A-Z])\].*                                # "[B]", "[B] Ceftriaxone"
    )
    """,
    re.DOTALL | re.VERBOSE,
)

_LETTERED_OPTION_RE = re.compile(r"[A-Z]\.")
"""An option text that itself starts like a letter answer: "E. coli", "C. difficile colitis"."""


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


def extract_letter(answer_text: str, *, options: Sequence[str] | None = None) -> str | None:
    """The option letter an answer names (upper-case), or None if it names none clearly.

    `options` (the option texts in letter order) let "E. coli" be told apart from letter E.
    """
    match = _LETTER_RE.fullmatch(_unemphasise(answer_text.strip()).strip())
    if match is None:
        return None
    letter = next(match[name] for name in ("alone", "punct", "paren", "bracket") if match[name] is not None)
    if match["punct"] and options and match["text"].strip():
        if _names_a_lettered_option(letter, match["text"], match["body"], options):
            return None
    return letter.upper()


def _unemphasise(text: str) -> str:
    """Text without Markdown emphasis markers, so "**C**" and "The answer is *C*" read like "C"."""
    while True:
        plain = _EMPHASIS_RE.sub(r"\g<inner>", text)
        if plain == text:
            return plain
        text = plain


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _names_a_lettered_option(letter: str, text: str, body: str, options: Sequence[str]) -> bool:
    """Whether `body` ("E. coli") is another option's text that starts like a letter, not letter `letter`."""
    own = LETTERS.index(letter)
    if own < len(options) and _normalised(text) == _normalised(options[own]):
        return False  # the letter and its own option's text: "A. E. coli" for A = "E. coli"
    answer = _normalised(body)
    for index, option in enumerate(options):
        if index == own or not _LETTERED_OPTION_RE.match(option.strip()):
            continue  # the letter's own option agrees with the letter; others cannot be confused
        option_text = _normalised(option)
        if option_text.startswith(answer) or answer.startswith(option_text):
            return True
    return False


def names_lettered_option(letter: str, text: str, body: str, options: Sequence[str]) -> bool:
    """Whether an answer `body` such as "E. coli" names another option by its text rather than letter
    `letter` (`text`: what follows the letter and its punctuation). Evaluation's lenient rule applies the
    same guard to the letters its answer patterns read."""
    return _names_a_lettered_option(letter, text, body, options)


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


def _check_options(options: Sequence[str] | None, count: int) -> None:
    if options is None:
        return
    if isinstance(options, str):
        raise ValueError(f"options: got the string {options!r}; need a sequence of option texts")
    if options and len(options) != count:
        raise ValueError(f"options: got {len(options)} option texts for num_options={count}")


def verify(
    completion: str,
    answer: str,
    num_options: int,
    *,
    mode: str = "paper",
    values: RewardValues = RewardValues(),  # frozen, so one shared default is safe
    options: Sequence[str] | None = None,
) -> Verdict:
    """Score one completion against the gold letter `answer` of a `num_options`-option question.

    `options`, the option texts in letter order, are optional; with them an answer such as "E. coli"
    that is an option's text is not misread as letter E (see the module docstring).
    """
    _check_options(options, _check_gold(answer, num_options))
    tagged = check_format(completion, mode)
    if tagged is None:
        return Verdict(format_ok=False, letter=None, correct=False, reward=values.format_error)
    letter = extract_letter(tagged.answer, options=options)
    correct = letter == answer
    return Verdict(
        format_ok=True, letter=letter, correct=correct, reward=values.correct if correct else values.wrong
    )
