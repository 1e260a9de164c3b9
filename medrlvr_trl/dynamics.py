"""Training dynamics: what each completion looks like, and which of Med-RLVR's six stages it shows.

The paper (Figure 2, Table 3) found six stages by reading samples. Here every completion gets
measured features and one stage label, so a phase of training can be read off as the distribution
of labels over a window of updates, during training (`stage_metrics`, logged next to reward and KL)
and after it (`recipes/dynamics_report.py`). docs/dynamics.md explains the rules and thresholds.

Lengths are counted in words (`str.split`), not tokens, so labels do not depend on the tokenizer
and can be recomputed from the text in `completions.jsonl` alone.

Sections (text before `<think>`, think, answer) come from `rewards.check_format` in "paper" mode,
whatever mode the verifier ran in: a strict verifier rejects text before `<think>`, but the
behaviour (the step-by-step exploit) is still worth naming. A completion whose tags do not parse
is a format failure and has no section features (they are zero / False).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from functools import lru_cache
from typing import Any

from medrlvr_trl.prompts import LETTERS
from medrlvr_trl.rewards import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    TaggedCompletion,
    Verdict,
    check_format,
    extract_letter,
)


class Stage(StrEnum):
    """The six stages of Med-RLVR's training dynamics, in the order the paper saw them."""

    FORMAT_FAILURE = "format_failure"
    VERBOSE_FORMATTER = "verbose_formatter"
    CONCISE_STRUCTURER = "concise_structurer"
    DIRECT_ANSWER_HACKER = "direct_answer_hacker"
    STEP_BY_STEP_EXPLOIT = "step_by_step_exploit"
    REINTEGRATED_REASONING = "reintegrated_reasoning"


STAGES: tuple[Stage, ...] = tuple(Stage)
STAGE_TITLES: dict[Stage, str] = {
    Stage.FORMAT_FAILURE: "Format failure",
    Stage.VERBOSE_FORMATTER: "Verbose formatter",
    Stage.CONCISE_STRUCTURER: "Concise structurer",
    Stage.DIRECT_ANSWER_HACKER: "Direct answer hacker",
    Stage.STEP_BY_STEP_EXPLOIT: "Step-by-step exploit",
    Stage.REINTEGRATED_REASONING: "Reintegrated reasoning",
}


@dataclass(frozen=True)
class StageThresholds:
    """Word counts that separate the stages; the paper gives none, so every default is our choice.

    short_think_words: a think under this is "shrunk" (stages 4 and 5; the think-length penalty
      ramps up below it). 15 words is about one short sentence of rationale.
    verbose_think_words: a think of at least this is verbose (stage 2). 150 words is several
      sentences per option for a five-option question.
    prefix_reasoning_words: text before `<think>` of at least this is reasoning written outside the
      tags (the step-by-step exploit). Below it ("Let me think.") it is only a trace of hacking.
    enumeration_min_options: a think that addresses at least this many options (capped at the
      question's option count) walks through them one by one.
    """

    short_think_words: int = 15
    verbose_think_words: int = 150
    prefix_reasoning_words: int = 10
    enumeration_min_options: int = 3

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"stage threshold {item.name}: got {value!r}; need a whole number >= 1")
        if self.verbose_think_words <= self.short_think_words:
            raise ValueError(
                f"stage thresholds: verbose_think_words ({self.verbose_think_words}) must be larger than "
                f"short_think_words ({self.short_think_words})"
            )


DEFAULT_THRESHOLDS = StageThresholds()


@dataclass(frozen=True)
class CompletionFeatures:
    """What one completion looks like; `stage` is derived from the rest (see `label_stage`)."""

    format_ok: bool  # as the verifier judged it, in its own mode
    tags: tuple[str, ...]  # every tag occurrence, in order of appearance
    tagged: bool  # the four tags parse in "paper" mode (sections below are measured only then)
    prefix_words: int  # words before <think>
    think_words: int
    response_words: int  # the whole completion, tags not counted
    answer_leak: bool  # the think states the chosen option as the answer
    options_discussed: int  # distinct options the think refers to by letter marker or text
    enumerates_options: bool
    prefix_exploit: bool  # reasoning written before <think> (prefix_words >= threshold)
    stage: Stage

    def as_row(self) -> dict[str, Any]:
        """The features for a `completions.jsonl` row (the verdict's own fields are written separately)."""
        row = asdict(self)
        del row["format_ok"]
        row["tags"] = list(self.tags)
        row["stage"] = str(self.stage)
        return row


# ------------------------------------------------------------------ small measurements

_TAG_RE = re.compile("|".join(re.escape(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)))


def tag_sequence(completion: str) -> tuple[str, ...]:
    """Every `<think>`/`</think>`/`<answer>`/`</answer>` occurrence, in order (a scan, not a parse)."""
    return tuple(match.group() for match in _TAG_RE.finditer(completion))


def word_count(text: str) -> int:
    return len(text.split())


def _text_pattern(text: str) -> str:
    """An option text as a regex: case-insensitive, any run of whitespace, whole words only."""
    words = [re.escape(word) for word in text.strip().rstrip(" .").split()]
    return r"(?<!\w)(?i:" + r"\s+".join(words) + r")(?!\w)"


def _letter_pattern(letter: str) -> str:
    """A letter named as an option: "C", "(C)", "[C]", "option C", "choice C"; upper case only."""
    return r"(?:(?i:option|choice)\s+)?[(\[]?" + letter + r"[)\]]?(?![A-Za-z0-9])"


# An answer statement's lead-in: "the (correct) answer is", "answer:", "the best option would be", ...
_STATEMENT = (
    r"(?i:\b(?:the\s+)?(?:(?:correct|right|best|final|most\s+likely|likely)\s+)?(?:answer|option|choice)"
    r"\s*(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:)\s*(?!not\b)"
    r"(?:(?:likely|probably|clearly|definitely|therefore)\s+)?)"
)
_CHOICE_VERB = r"(?i:\bI\s+(?:would\s+|will\s+|'ll\s+)?(?:choose|pick|select|go\s+with)\s+)"
# "... is correct", "... is the right answer", "... is the best choice" (never "... is not ...").
_VERDICT_TAIL = (
    r"\s+(?i:is\s+(?:the\s+)?(?:correct|right)(?:\s+(?:answer|option|choice))?"
    r"|is\s+(?:the\s+)?(?:best|most\s+likely)\s+(?:answer|option|choice))\b"
)
# Where a bare letter may start a sentence-like clause ("C is correct", not "vitamin C is correct").
_CLAUSE_START = r"(?:^|(?<=[.!?;:\n])|(?<=[.!?;:\n]\s)|(?<=,\s)|(?<=\bso\s)|(?<=\bthus\s)|(?<=\bhence\s))"


@lru_cache(maxsize=4096)
def _leak_regex(letter: str, option_text: str) -> re.Pattern[str]:
    targets = [_letter_pattern(letter)]
    if option_text.strip():
        targets.append(_text_pattern(option_text))
    target = "(?:" + "|".join(targets) + ")"
    reverse_letter = (
        r"(?:(?:(?i:option|choice)\s+" + letter + r"|[(\[]" + letter + r"[)\]])"
        r"|" + _CLAUSE_START + letter + r")(?![A-Za-z0-9])"
    )
    reverse_targets = [reverse_letter] + ([_text_pattern(option_text)] if option_text.strip() else [])
    reverse = "(?:" + "|".join(reverse_targets) + ")" + _VERDICT_TAIL
    return re.compile(f"{_STATEMENT}{target}|{_CHOICE_VERB}{target}|{reverse}", re.MULTILINE)


def answer_leaked(think: str, letter: str | None, options: Sequence[str] = ()) -> bool:
    """Whether `think` states option `letter` (or its text) as the answer.

    Counts: "the correct answer is C", "so the answer is Ketotifen", "Answer: (C)", "C is correct",
    "Ketotifen is the best choice", "I choose C". Does not count: discussing C ("Option C, ketotifen,
    is an antihistamine"), asking ("Is the answer C?"), negating ("the answer is not C"), or stating
    another option. With no chosen letter there is nothing to leak.
    """
    if letter is None:
        return False
    index = LETTERS.index(letter)
    option_text = options[index] if index < len(options) else ""
    return _leak_regex(letter, option_text).search(think) is not None


@lru_cache(maxsize=64)
def _marker_regex(letter: str) -> re.Pattern[str]:
    return re.compile(
        r"(?i:\b(?:option|choice)\s+)" + letter + r"(?![A-Za-z0-9])"
        r"|\(" + letter + r"\)"
        r"|^[ \t]*(?:[-*][ \t]*)?" + letter + r"[.):](?!\w)",
        re.MULTILINE,
    )


def options_discussed(think: str, options: Sequence[str] = (), *, max_letters: int = 10) -> int:
    """How many distinct options the think refers to: by a letter marker ("Option B", "(B)", a line
    starting "B." or "B)") or by the option's text. Without option texts, letters A..J are tried."""
    letters = LETTERS[: len(options)] if options else LETTERS[:max_letters]
    count = 0
    for index, letter in enumerate(letters):
        if _marker_regex(letter).search(think):
            count += 1
        elif index < len(options) and re.search(_text_pattern(options[index]), think):
            count += 1
    return count


# ------------------------------------------------------------------ labelling


def label_stage(
    tagged: TaggedCompletion | None,
    *,
    answer_leak: bool,
    enumerates_options: bool,
    thresholds: StageThresholds,
) -> Stage:
    """The stage one completion shows; the first rule that matches wins.

    1. tags do not parse                                          -> format failure
    2. short think and reasoning before <think>                    -> step-by-step exploit
    3. short think that leaks the answer or is empty               -> direct answer hacker
    4. long think, or a not-short think that goes option by option -> verbose formatter
    5. think with a hacking trace (a leak, or text before <think>) -> reintegrated reasoning
    6. otherwise                                                   -> concise structurer
    """
    if tagged is None:
        return Stage.FORMAT_FAILURE
    think_words, prefix_words = word_count(tagged.think), word_count(tagged.prefix)
    short = think_words < thresholds.short_think_words
    if short and prefix_words >= thresholds.prefix_reasoning_words:
        return Stage.STEP_BY_STEP_EXPLOIT
    if short and (answer_leak or think_words == 0):
        return Stage.DIRECT_ANSWER_HACKER
    if think_words >= thresholds.verbose_think_words or (enumerates_options and not short):
        return Stage.VERBOSE_FORMATTER
    if answer_leak or prefix_words > 0:
        return Stage.REINTEGRATED_REASONING
    return Stage.CONCISE_STRUCTURER


def completion_features(
    completion: str,
    verdict: Verdict,
    *,
    options: Sequence[str] = (),
    thresholds: StageThresholds = DEFAULT_THRESHOLDS,
) -> CompletionFeatures:
    """Measure one completion and label its stage. `options` (the question's option texts, in letter
    order) lets leaks stated as option text ("the answer is Ketotifen") be found; without them only
    letters are."""
    tagged = check_format(completion, "paper")
    if tagged is None:
        leak, discussed, enumerates, prefix_words, think_words = False, 0, False, 0, 0
    else:
        leak = answer_leaked(tagged.think, extract_letter(tagged.answer), options)
        discussed = options_discussed(tagged.think, options)
        needed = min(thresholds.enumeration_min_options, len(options) or thresholds.enumeration_min_options)
        enumerates = discussed >= needed
        prefix_words, think_words = word_count(tagged.prefix), word_count(tagged.think)
    return CompletionFeatures(
        format_ok=verdict.format_ok,
        tags=tag_sequence(completion),
        tagged=tagged is not None,
        prefix_words=prefix_words,
        think_words=think_words,
        response_words=word_count(_TAG_RE.sub(" ", completion)),
        answer_leak=leak,
        options_discussed=discussed,
        enumerates_options=enumerates,
        prefix_exploit=prefix_words >= thresholds.prefix_reasoning_words,
        stage=label_stage(tagged, answer_leak=leak, enumerates_options=enumerates, thresholds=thresholds),
    )


# ------------------------------------------------------------------ summaries


def stage_shares(stages: Sequence[Stage | str]) -> dict[Stage, float]:
    """Share of each stage (all six keys, in paper order) among `stages`; all zero when empty."""
    counts = Counter(Stage(stage) for stage in stages)
    total = sum(counts.values())
    return {stage: (counts[stage] / total if total else 0.0) for stage in STAGES}


def stage_metrics(features: Sequence[CompletionFeatures]) -> dict[str, float]:
    """The per-update dynamics metrics logged next to reward and KL.

    `dynamics/stage/<name>`: share of each stage; `dynamics/leak_rate`, `dynamics/prefix_exploit_rate`,
    `dynamics/enumeration_rate`: shares of all completions; `dynamics/think_words`: mean think length
    over completions whose tags parse (0 when none do).
    """
    shares = stage_shares([f.stage for f in features])
    metrics = {f"dynamics/stage/{stage}": share for stage, share in shares.items()}
    total = len(features)
    tagged = [f.think_words for f in features if f.tagged]

    def rate(flags: list[bool]) -> float:
        return sum(flags) / total if total else 0.0

    metrics["dynamics/leak_rate"] = rate([f.answer_leak for f in features])
    metrics["dynamics/prefix_exploit_rate"] = rate([f.prefix_exploit for f in features])
    metrics["dynamics/enumeration_rate"] = rate([f.enumerates_options for f in features])
    metrics["dynamics/think_words"] = sum(tagged) / len(tagged) if tagged else 0.0
    return metrics
