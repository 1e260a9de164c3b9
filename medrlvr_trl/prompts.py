"""Prompt templates and answer targets for multiple-choice questions.

The prompt is a reproduction parameter (Med-RLVR, section "Prompt"), so template texts live here as
data in `TEMPLATES` and every recipe renders prompts through `build_prompt`.

Whitespace convention: a prompt ends with "Assistant:" and no trailing space; anything the model
writes (or an SFT target) starts with its own leading space, so prompt + target reads
"Assistant: B". Ending the prompt on a bare space would leave the tokenizer a lone-space token that
base models rarely see before a word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
MIN_OPTIONS = 2
MAX_OPTIONS = len(LETTERS)

INSTRUCTION = "Answer with just one of the letters from the options below."
INPUT_FIELD = "{input}"


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt text with one `{input}` slot; `expects_tags` says whether completions should use
    <think>/<answer> tags (and so whether evaluation scores them with the verifier). `instructed`
    inputs carry this project's instruction and an "Options:" line before the lettered options;
    otherwise the input is the question and the lettered options alone. `verbatim` templates paste
    the question and option texts exactly as the dataset gives them, whitespace included (as
    lm-evaluation-harness does); the others strip the question and put each option on one line."""

    name: str
    text: str
    expects_tags: bool
    instructed: bool = True
    verbatim: bool = False

    def __post_init__(self) -> None:
        if self.text.count(INPUT_FIELD) != 1:
            raise ValueError(f"prompt template {self.name!r} must contain {INPUT_FIELD} exactly once")

    def render(self, input_text: str) -> str:
        # str.replace, not str.format: question text and future templates may hold literal braces.
        return self.text.replace(INPUT_FIELD, input_text)


_R1_TEXT = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
    "<answer> answer here </answer>.\nUser: {input}\nAssistant:"
)
# Our choice (the paper does not print its direct-answer prompt): the R1 framing with the
# reasoning and tag sentences removed, so the two baselines differ only in those instructions.
_DIRECT_TEXT = (
    "A conversation between User and Assistant. The user asks a question, and the assistant "
    "provides the user with the answer.\nUser: {input}\nAssistant:"
)

# lm-evaluation-harness's `medqa_4options` prompt ("Question: ...", the lettered options, "Answer:"),
# so that `loglikelihood` answers on MedQA's 4-option test set are that task's `acc`. Verbatim, as
# that task's doc_to_text pastes its fields: an option text ending in a line break keeps it.
_LM_EVAL_TEXT = "Question: {input}\nAnswer:"

TEMPLATES: dict[str, PromptTemplate] = {
    "r1": PromptTemplate(name="r1", text=_R1_TEXT, expects_tags=True),
    "direct": PromptTemplate(name="direct", text=_DIRECT_TEXT, expects_tags=False),
    "lm_eval": PromptTemplate(
        name="lm_eval", text=_LM_EVAL_TEXT, expects_tags=False, instructed=False, verbatim=True
    ),
}

TARGET_STYLES: tuple[str, ...] = ("letter", "letter_text", "tagged")


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name; an unknown name is an error that lists the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known templates: {sorted(TEMPLATES)}") from None


def option_letters(n: int) -> list[str]:
    """The first `n` option letters (A, B, ...); at most 26."""
    if not 0 <= n <= MAX_OPTIONS:
        raise ValueError(f"cannot letter {n} options: need 0 to {MAX_OPTIONS}")
    return list(LETTERS[:n])


def _checked_options(options: Sequence[str]) -> list[str]:
    if isinstance(options, str) or not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        count = "a string" if isinstance(options, str) else f"{len(options)} options"
        raise ValueError(f"options: got {count}; need a list of {MIN_OPTIONS} to {MAX_OPTIONS} option texts")
    for letter, text in zip(LETTERS, options, strict=False):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"option {letter}: got {text!r}; every option needs non-empty text")
    return list(options)


def _clean_options(options: Sequence[str]) -> list[str]:
    # One line per option: internal newlines/runs of spaces collapse to single spaces.
    return [" ".join(text.split()) for text in _checked_options(options)]


def build_prompt(question: str, options: Sequence[str], *, template: str = "r1") -> str:
    """Render a question and its options (lettered A, B, ...) with the named template.

    The training templates (`r1`, `direct`) strip the question and put each option on one line, so a
    line break inside an option text cannot pass for the next option; the `lm_eval` template pastes
    both as given (`PromptTemplate.verbatim`). The r1 and direct prompts end with "Assistant:" (no
    `<think>` prefill, no trailing space).
    """
    chosen = get_template(template)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question: got {question!r}; need non-empty text")
    if chosen.verbatim:
        texts = _checked_options(options)
    else:
        question, texts = question.strip(), _clean_options(options)
    lines = [question, INSTRUCTION, "Options:"] if chosen.instructed else [question]
    lines += [f"{letter}. {text}" for letter, text in zip(LETTERS, texts, strict=False)]
    return chosen.render("\n".join(lines))


def answer_target(letter: str, options: Sequence[str], *, style: str) -> str:
    """The SFT completion for the gold `letter`, with a leading space (see module docstring).

    Styles: "letter" -> " B", "letter_text" -> " B. Ceftriaxone", "tagged" -> " <answer>B</answer>".
    """
    cleaned = _clean_options(options)
    if letter not in LETTERS[: len(cleaned)]:
        raise ValueError(
            f"answer letter {letter!r} is not one of the {len(cleaned)} option letters "
            f"{''.join(LETTERS[: len(cleaned)])}"
        )
    if style == "letter":
        return f" {letter}"
    if style == "letter_text":
        return f" {letter}. {cleaned[LETTERS.index(letter)]}"
    if style == "tagged":
        return f" <answer>{letter}</answer>"
    raise ValueError(f"unknown answer target style {style!r}; known styles: {list(TARGET_STYLES)}")
