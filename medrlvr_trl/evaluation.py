"""Multiple-choice evaluation: which models, on which data, prompted and scored how.

Two answer modes, as in Med-RLVR's Figure 3:
- `cot`: the R1 template; the model reasons in <think> tags and answers in <answer> tags.
- `direct`: the model answers straight away.

Every completion is scored under two rules (docs/evaluation.md):
- strict, what RL optimises: in cot mode the training verifier (`rewards.verify`, format mode
  "paper") on the whole completion, generated to EOS, so text after `</answer>` makes it wrong; in
  direct mode `direct_letter` (the `<answer>` section if there is one, else the first line, read
  with the verifier's letter rules).
- lenient, how benchmark harnesses read answers: anything may follow the first `</answer>`; the
  letter the strict reader finds in the text up to there, else MMLU-Pro's "answer is (X)" / "Answer:
  X" patterns (`fallback_letter`) limited to the question's letters, only where the text answers
  (`lenient_letter`): no last-standalone-letter rule, so an echoed question stem reads nothing.
A completion with no letter under a rule is wrong under it ("unparsed" means: none under the
lenient rule); it is never replaced by a random guess. Every question is scored; nothing is
dropped. `accuracy`, the chart and the paired comparisons use the strict rule.

Beside accuracy, three checks of what a number means: the letters each model answers next to the
gold letters (a letter prior looks like knowledge), accuracy under cyclic shifts of the options
with the share of questions answered with the same option text every time (`option_permutations`),
and how many test questions occur in the training set or twice in their own set (`train_dataset`,
`accuracy_dedup`).

Generation (`generate_hf`, `generate_vllm`, `generate_sharded`) lives in `medrlvr_trl.generation`, the
module PPO's rollouts sample through too; the recipe `recipes/eval_mcqa.py`
only wires these pieces together and writes the files.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrlvr_trl.data import (
    NEAR_DUPLICATE_THRESHOLD,
    NGRAM_WORDS,
    QuestionIndex,
    question_overlap,
)
from medrlvr_trl.generation import Completion, GenerationSettings
from medrlvr_trl.gguf_models import is_gguf_file
from medrlvr_trl.loglikelihood import score_letters
from medrlvr_trl.prompts import LETTERS, build_prompt
from medrlvr_trl.rewards import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    RewardValues,
    Verdict,
    check_format,
    extract_letter,
    verify,
)
from medrlvr_trl.rewards.verifier import FORMAT_MODES, names_lettered_option
from medrlvr_trl.run_info import RUN_INFO_FILE, read_run_info
from medrlvr_trl.run_logs import write_jsonl
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

MCQA_ACCURACY_PATH = str(Path(__file__).parent / "metrics" / "mcqa_accuracy")
LOGLIKELIHOOD = "loglikelihood"
ANSWER_MODES = ("cot", "direct", LOGLIKELIHOOD)
DEFAULT_TEMPLATE = {"cot": "r1", "direct": "direct", LOGLIKELIHOOD: "lm_eval"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
RANDOM_LABEL = "random"
CONSTANT_LETTER_LABEL = "constant letter"
"""The results.md row of `constant_letter_baseline` (results.json: the top-level key `constant_letter`)."""
UNPARSED_WARNING_RATE = 0.5
"""A model with no letter in more than this share of its answers gets a warning (a failed run)."""
MAJORITY_LETTER_SHARE = 0.5
"""A model naming one letter in more than this share of its answers gets a warning (a letter prior)."""
ACCURACY_RULE = "strict"
"""The rule behind `accuracy`, the chart and the paired comparisons: the one RL is trained on."""
ROLE_RANK = {"base": 0, "sft": 1, "rl": 2}
"""A paired comparison reads "A minus B" with A the later training stage: RL - SFT, SFT - base."""
RL_WORDS = frozenset({"ppo", "grpo", "rloo", "rl", "rlvr"})


class MissingModelError(UserError):
    """A model that is neither a local folder nor (offline) in the Hub cache."""


# --- what to evaluate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a label for tables, where it lives, and how it is prompted and scored."""

    label: str
    path: str
    answer_mode: str
    prompt_template: str
    role: str = "base"
    """`base`, `sft` or `rl` (`model_role`): orders paired comparisons and picks the headline pair."""
    verifier_mode: str = "paper"
    """The strict rule's format mode in cot mode: the one the model was trained with (`run_verifier_mode`)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One evaluation set: a label, a `load_mcqa` source, its split and an optional category filter."""

    label: str
    source: str
    split: str = "test"
    category: str | None = None
    revision: str | None = None
    """A Hub commit, branch or tag to read (`@revision=...`); None: the newest."""


def _split_items(items: Sequence[str] | str) -> list[str]:
    """Accept a YAML list, a CLI list, comma-separated strings, or any mix of them."""
    if isinstance(items, str):
        items = [items]
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _label_and_value(item: str, what: str, syntax: str) -> tuple[str, str]:
    label, sep, value = item.partition("=")
    if not sep or not label.strip() or not value.strip():
        raise UserError(f"{what} entry {item!r}: expected {syntax}")
    return label.strip(), value.strip()


def _check_unique(labels: list[str], what: str) -> None:
    seen = {label for label in labels if labels.count(label) > 1}
    if seen:
        raise UserError(f"{what}: labels must be unique, repeated: {sorted(seen)}")
    if RANDOM_LABEL in labels:
        raise UserError(f"{what}: the label {RANDOM_LABEL!r} is reserved for the random-guess baseline")


def parse_model_specs(items: Sequence[str] | str) -> list[tuple[str, str, str | None, str | None]]:
    """Parse `label=path[:mode[:template]]` entries into (label, path, mode or None, template or None).

    `mode` is `cot`, `direct` or `loglikelihood`; `template` a prompt template name. Missing parts are filled in by
    `resolve_model` (from the model's run_info.json, else `cot` with its default template).
    """
    from medrlvr_trl.prompts import TEMPLATES

    syntax = "LABEL=PATH_OR_HUB_ID[:cot|:direct|:loglikelihood[:TEMPLATE]], e.g. sft=runs/sft:direct"
    parsed = []
    for item in _split_items(items):
        label, value = _label_and_value(item, "--models", syntax)
        parts = value.split(":")
        mode = template = None
        if len(parts) >= 3 and parts[-2] in ANSWER_MODES and parts[-1] in TEMPLATES:
            mode, template, parts = parts[-2], parts[-1], parts[:-2]
        elif len(parts) >= 2 and parts[-1] in ANSWER_MODES:
            mode, parts = parts[-1], parts[:-1]
        elif len(parts) >= 2:
            raise UserError(
                f"--models entry {item!r}: unknown answer mode {parts[-1]!r}; use one of "
                f"{list(ANSWER_MODES)} (and optionally a template from {sorted(TEMPLATES)}): {syntax}"
            )
        parsed.append((label, ":".join(parts), mode, template))
    if not parsed:
        raise UserError(f"--models: no models given; expected {syntax}")
    _check_unique([p[0] for p in parsed], "--models")
    return parsed


_DATASET_SYNTAX = (
    "LABEL=SOURCE[@SPLIT][@category=NAME][@revision=COMMIT], e.g. "
    "mmlu_pro_health=TIGER-Lab/MMLU-Pro@test@category=health"
)


def _parse_dataset_entry(item: str, option: str, default_split: str) -> DatasetSpec:
    label, value = _label_and_value(item, option, _DATASET_SYNTAX)
    source, *extras = value.split("@")
    split, category, revision = default_split, None, None
    for extra in extras:
        if extra.startswith("category="):
            category = extra.removeprefix("category=") or None
        elif extra.startswith("revision="):
            revision = extra.removeprefix("revision=") or None
        elif extra and "=" not in extra:
            split = extra
        else:
            raise UserError(f"{option} entry {item!r}: cannot read {extra!r}; expected {_DATASET_SYNTAX}")
    return DatasetSpec(label=label, source=source, split=split, category=category, revision=revision)


def parse_dataset_specs(items: Sequence[str] | str) -> list[DatasetSpec]:
    """Parse `label=source[@split][@category=NAME]` entries (split defaults to `test`).

    `source` is anything `load_mcqa` reads (a Hub id, `repo:config`, a local file or folder).
    """
    specs = [_parse_dataset_entry(item, "--datasets", "test") for item in _split_items(items)]
    if not specs:
        raise UserError(f"--datasets: no datasets given; expected {_DATASET_SYNTAX}")
    _check_unique([s.label for s in specs], "--datasets")
    return specs


def parse_train_dataset(item: str) -> DatasetSpec:
    """Parse the `--train_dataset` entry: the `--datasets` syntax, with the split defaulting to `train`."""
    items = _split_items(item)
    if len(items) != 1:
        raise UserError(f"--train_dataset: expected one entry, got {len(items)}; syntax {_DATASET_SYNTAX}")
    return _parse_dataset_entry(items[0], "--train_dataset", "train")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def check_model_source(label: str, path: str) -> None:
    """Fail early, before anything loads, if a model or its tokenizer cannot be found.

    A local folder must hold a `config.json` and tokenizer files; a `.gguf` file must exist (it is
    converted when it loads, `gguf_models`). A name that is not a local path is taken as a Hub id;
    with HF_HUB_OFFLINE set it must already be in the local Hub cache.
    """
    folder = Path(path).expanduser()
    if is_gguf_file(path):
        if not folder.is_file():
            raise MissingModelError(
                f"model {label!r}: GGUF file {path!r} does not exist (relative to {Path.cwd()})"
            )
        return
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"model {label!r}: {path} has no config.json; is it a saved model folder?")
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise UserError(
                f"model {label!r}: {path} has no tokenizer files (one of {list(TOKENIZER_FILES)}); save the "
                "tokenizer with the model (the SFT and PPO recipes do) or copy it from the base model"
            )
        return
    if folder.exists():
        raise UserError(f"model {label!r}: {path} is a file; pass the folder the model was saved to")
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_local:
        maker = _smoke_target_writing(path)
        raise MissingModelError(
            f"model {label!r}: folder {path!r} does not exist (relative to {Path.cwd()})"
            + (f"; `{maker}` makes it" if maker else "")
        )
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise MissingModelError(
                f"model {label!r}: {path!r} is not a local folder and not in the Hub cache, and the Hub is "
                "offline (HF_HUB_OFFLINE=1); check the path or download the model first"
            )


TINY_CONFIGS = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "tiny"


def _smoke_target_writing(path: str) -> str | None:
    """`make <recipe>` when a tiny config (recipes/configs/tiny/<recipe>.yaml) writes to `path`."""
    import yaml

    target = Path(path).expanduser().resolve()
    for config in sorted(TINY_CONFIGS.glob("*.yaml")):
        output_dir = (yaml.safe_load(config.read_text()) or {}).get("output_dir")
        if output_dir and (Path.cwd() / output_dir).resolve() == target:
            return f"make {config.stem}"
    return None


def model_role(label: str, info: Mapping[str, Any] | None) -> str:
    """`sft`, `rl` or `base`: from run_info.json's `kind` (written by the SFT, PPO, GRPO and RLOO
    recipes), else from the label's words ("ppo", "grpo", "rloo", "rl", "rlvr", then "sft"), else base.

    An RL word wins over "sft": `ppo_from_sft` is an RL run started from the SFT model."""
    kind = str((info or {}).get("kind") or "").lower()
    words = {kind} if kind in RL_WORDS | {"sft"} else set(re.split(r"[^a-z0-9]+", label.lower()))
    if words & RL_WORDS:
        return "rl"
    return "sft" if "sft" in words else "base"


_REWARD_MODE_RE = re.compile(r"verifier mode=(\w+)")


def run_verifier_mode(info: Mapping[str, Any] | None) -> str:
    """The verifier format mode a run was trained with, from its run_info.json: `verifier_mode`, else
    the "verifier mode=..." of its `reward` line (older runs), else the paper's ("paper")."""
    info = info or {}
    mode = info.get("verifier_mode")
    if mode is None:
        match = _REWARD_MODE_RE.search(str(info.get("reward") or ""))
        mode = match[1] if match else "paper"
    if mode not in FORMAT_MODES:
        raise UserError(f"run_info.json: verifier mode {mode!r} is not one of {sorted(FORMAT_MODES)}")
    return mode


def resolve_model(label: str, path: str, mode: str | None, template: str | None) -> ModelSpec:
    """Check the model exists and fill in its answer mode, template and role.

    Order of precedence: the `--models` entry, then the model's run_info.json, then `cot` and the
    mode's default template (`r1` for cot, `direct` for direct).
    """
    from medrlvr_trl.prompts import get_template

    check_model_source(label, path)
    info = read_run_info(path) if Path(path).expanduser().is_dir() else None
    if mode is None and info is not None and info.get("answer_mode") is not None:
        mode = info["answer_mode"]
        if template is None:
            template = info.get("eval_prompt_template") or info.get("prompt_template")
        logger.info("model %s: answer mode %s from %s", label, mode, Path(path) / RUN_INFO_FILE)
    mode = mode or "cot"
    if mode not in ANSWER_MODES:
        raise UserError(f"model {label!r}: answer mode {mode!r} is not one of {list(ANSWER_MODES)}")
    template = template or DEFAULT_TEMPLATE[mode]
    get_template(template)
    role = model_role(label, info)
    verifier_mode = run_verifier_mode(info)
    if verifier_mode != "paper":
        logger.info("model %s: strict rule with verifier mode %s, as it was trained", label, verifier_mode)
    return ModelSpec(
        label=label,
        path=path,
        answer_mode=mode,
        prompt_template=template,
        role=role,
        verifier_mode=verifier_mode,
    )


# --- scoring -------------------------------------------------------------------------------------


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


# --- generation ----------------------------------------------------------------------------------


def generate_loglikelihood(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, int]],
    settings: GenerationSettings,
    *,
    label: str = "loglikelihood",
) -> list[Completion]:
    """Loglikelihood mode's answers to (prompt, number of options) requests (`loglikelihood.score_letters`).

    Only `settings.batch_size` applies: nothing is decoded.
    """
    scores = score_letters(
        model,
        tokenizer,
        [prompt for prompt, _ in requests],
        [n for _, n in requests],
        batch_size=settings.batch_size,
        label=label,
    )
    return [Completion(text=s.letter, num_tokens=0, loglikelihoods=s.loglikelihoods) for s in scores]


# --- option order --------------------------------------------------------------------------------


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


def predict_permutations(
    rows: Any, spec: ModelSpec, shifts: int, generate: Callable[[Sequence[str]], list[Completion]]
) -> list[list[dict[str, Any]]]:
    """Prediction records per shift, `[shift][question]`, from one `generate` call over every shift.

    One call keeps the batches full (and, with `generate_hf`, sorted by length) however many shifts.
    In loglikelihood mode `generate` gets (prompt, number of options) requests instead of prompts.
    """
    shifted = permuted_rows(rows, shifts)
    questions_in_order = [row for questions in shifted for row in questions]
    prompts = [
        build_prompt(row["question"], row["options"], template=spec.prompt_template)
        for row in questions_in_order
    ]
    if spec.answer_mode == LOGLIKELIHOOD:
        completions = generate(
            [(p, len(r["options"])) for p, r in zip(prompts, questions_in_order, strict=True)]
        )
    else:
        completions = generate(prompts)
    n = len(shifted[0])
    return [
        prediction_records(
            questions,
            prompts[s * n : (s + 1) * n],
            completions[s * n : (s + 1) * n],
            spec.answer_mode,
            shift=s,
            verifier_mode=spec.verifier_mode,
        )
        for s, questions in enumerate(shifted)
    ]


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


def _mean_over_shifts_difference(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int, seed: int
) -> dict[str, Any]:
    """A minus B in mean-over-shifts accuracy with its 95% paired-bootstrap percentile interval (the
    same question draw as the strict comparison; McNemar needs 0/1 outcomes, so there is no p-value)."""
    import numpy as np

    from medrlvr_trl.stats import bootstrap_means

    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = np.percentile(bootstrap_means(differences, n_resamples=n_resamples, seed=seed), [2.5, 97.5])
    return {
        "diff_mean_over_shifts": float(differences.mean()),
        "ci95_mean_over_shifts": [float(low), float(high)],
    }


def permutation_summary(records_by_shift: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Strict accuracy per shift, its mean and the consistency rate (results.json, when K > 1)."""
    import numpy as np

    per_shift = [float(np.mean([r["correct"] for r in records])) for records in records_by_shift]
    return {
        "accuracy_per_shift": per_shift,
        "accuracy_mean_over_shifts": float(np.mean(per_shift)),
        "consistency_rate": consistency_rate(records_by_shift),
    }


# --- results -------------------------------------------------------------------------------------


def prediction_records(
    rows: Any,
    prompts: Sequence[str],
    completions: Sequence[Completion],
    answer_mode: str,
    *,
    shift: int = 0,
    verifier_mode: str = "paper",
) -> list[dict[str, Any]]:
    """One JSON-ready record per question: inputs, completion, and the letter under each rule.

    `letter`, `format_ok`, `correct` and `reward` are the strict rule's verdict (what training
    rewards); `letter_lenient`, `correct_lenient` and `lenient_source` the lenient rule's. `rows`
    hold the options in the order prompted; `shift` says which cyclic shift that is (`shift_options`).
    In loglikelihood mode both rules take the most likely letter (`lenient_source` "loglikelihood")
    and `loglikelihoods` holds every letter's score. `verifier_mode`: the strict rule's format mode.
    """
    records = []
    for row, prompt, completion in zip(rows, prompts, completions, strict=True):
        num_options = len(row["options"])
        verdict = score_completion(
            completion.text,
            row["answer"],
            num_options,
            answer_mode,
            options=row["options"],
            verifier_mode=verifier_mode,
        )
        if completion.loglikelihoods is None:
            lenient, source = lenient_letter(
                completion.text, num_options, answer_mode, options=row["options"]
            )
        else:
            lenient, source = verdict.letter, LOGLIKELIHOOD
        record = {
            "id": row["id"],
            "shift": shift,
            "prompt": prompt,
            "completion": completion.text,
            "completion_tokens": completion.num_tokens,
            "letter": verdict.letter,
            "answer": row["answer"],
            "num_options": num_options,
            "format_ok": verdict.format_ok,
            "correct": verdict.correct,
            "reward": verdict.reward,
            "letter_lenient": lenient,
            "correct_lenient": lenient == row["answer"],
            "lenient_source": source,
        }
        if completion.loglikelihoods is not None:
            record["loglikelihoods"] = completion.loglikelihoods
        records.append(record)
    return records


def strict_letter(record: Mapping[str, Any]) -> str | None:
    """The letter a prediction record names under the strict rule, or None."""
    return record["letter"] if record["format_ok"] else None


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


UNPARSED = "unparsed"


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


def questions_sha256(rows: Any) -> str:
    """SHA-256 of the loaded questions (id, question, options, gold letter, in order), so two results
    can be checked to be on the same questions when a Hub source changes under the same name."""
    import hashlib

    digest = hashlib.sha256()
    for fields in zip(rows["id"], rows["question"], rows["options"], rows["answer"], strict=True):
        digest.update((json.dumps(list(fields), ensure_ascii=False) + "\n").encode("utf-8"))
    return digest.hexdigest()


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


def paired_comparisons(
    models: Sequence[ModelSpec],
    outcomes: Mapping[str, Mapping[str, Sequence[bool]]],
    datasets: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    shift_outcomes: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> list[dict[str, Any]]:
    """Every pair of models on every dataset both were scored on, from strict per-question outcomes.

    `shift_outcomes[model][dataset]` (`shift_mean_outcomes`, with `option_permutations` > 1) adds the
    difference in mean-over-shifts accuracy and its interval (`diff_mean_over_shifts`,
    `ci95_mean_over_shifts`).

    `outcomes[model][dataset]` lists strict correctness per question in dataset order. A pair reads
    "A minus B" with A the later stage (`ROLE_RANK`: RL, then SFT, then base), else the earlier of
    the two in `models`; see `stats.compare_paired` for the interval and the p-value.
    """
    from medrlvr_trl.stats import compare_paired

    entries = []
    for dataset in datasets:
        scored = [m for m in models if dataset in outcomes.get(m.label, {})]
        for first, second in itertools.combinations(scored, 2):
            a, b = (second, first) if ROLE_RANK[second.role] > ROLE_RANK[first.role] else (first, second)
            result = compare_paired(
                outcomes[a.label][dataset], outcomes[b.label][dataset], n_resamples=n_resamples, seed=seed
            )
            entries.append(
                {
                    "model_a": a.label,
                    "model_b": b.label,
                    "dataset": dataset,
                    "rule": ACCURACY_RULE,
                    "accuracy_a": float(sum(outcomes[a.label][dataset]) / result.n),
                    "accuracy_b": float(sum(outcomes[b.label][dataset]) / result.n),
                    "diff": result.diff,
                    "ci95": list(result.ci95),
                    "mcnemar_p": result.mcnemar_p,
                    "n": result.n,
                    "only_a_correct": result.a_only,
                    "only_b_correct": result.b_only,
                }
            )
            shifted = shift_outcomes or {}
            if dataset in shifted.get(a.label, {}) and dataset in shifted.get(b.label, {}):
                entries[-1].update(
                    _mean_over_shifts_difference(
                        shifted[a.label][dataset],
                        shifted[b.label][dataset],
                        n_resamples=n_resamples,
                        seed=seed,
                    )
                )
    return entries


def headline_pair(models: Sequence[ModelSpec]) -> tuple[str, str] | None:
    """(first RL model, first SFT model): the paper's claim is RLVR matching or beating SFT."""
    rl = next((m.label for m in models if m.role == "rl"), None)
    sft = next((m.label for m in models if m.role == "sft"), None)
    return (rl, sft) if rl and sft else None


def headline_entries(
    paired: Sequence[Mapping[str, Any]], pair: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """The paired entries of the headline pair, one per dataset (none without a pair)."""
    return [dict(e) for e in paired if pair is not None and (e["model_a"], e["model_b"]) == pair]


def prediction_path(out: str | Path, model: str, dataset: str, shift: int = 0) -> Path:
    """`predictions/<model>__<dataset>.jsonl` for the options as given, `predictions/shift<s>/...`
    for shift s, so readers of the first keep reading the unshifted predictions."""
    folder = Path(out) / "predictions"
    if shift:
        folder = folder / f"shift{shift}"
    return folder / f"{model}__{dataset}.jsonl"


def write_predictions(
    out: str | Path, model: str, dataset: str, records_by_shift: Sequence[Sequence[dict[str, Any]]]
) -> list[Path]:
    """One JSON Lines file per shift (`prediction_path`)."""
    return [
        write_jsonl(prediction_path(out, model, dataset, shift), records)
        for shift, records in enumerate(records_by_shift)
    ]


_STRICT_TEXT = (
    "cot: the training verifier (format mode 'paper', or the mode in the model's run_info.json, "
    "models[*].verifier_mode) on the whole completion, generated to EOS (or "
    "max_new_tokens), so only whitespace may follow </answer>; direct: the <answer> section if any, "
    "else the first line, read with the verifier's letter rules; loglikelihood: the option letter "
    "with the largest log-likelihood as the next token after the prompt, as lm-evaluation-harness "
    "scores multiple_choice tasks (the same letter under both rules)"
)
_STOPPED_TEXT = (
    "; stop_at_answer_close was on, so cot generation stopped at the first </answer> and text after "
    "the tags was never generated: strict could not judge it"
)
_LENIENT_TEXT = (
    "anything may follow the first </answer>; the strict reader on the text up to there; in cot mode "
    "the verifier's letter rules on a complete <answer> section whose surrounding format failed ('answer "
    "tag'); else MMLU-Pro's answer patterns ('answer is (X)', the last 'Answer: X'), limited to the "
    "question's letters, only inside <answer> when it holds text, never a hedge ('B or C'), the article "
    "'A', a unit ('37°C') or the start of another option's text ('E. coli'); no last-standalone-letter "
    "rule"
)


def scoring_rules(*, stop_at_answer_close: bool) -> dict[str, str]:
    """What each number means, in words, for `results.json` and the legend of `results.md`."""
    return {
        "accuracy_rule": ACCURACY_RULE,
        "strict": _STRICT_TEXT + (_STOPPED_TEXT if stop_at_answer_close else ""),
        "lenient": _LENIENT_TEXT,
        "unparsed_rate": "share of questions with no letter under the lenient rule; wrong under both "
        "rules, never replaced by a random guess",
        "lenient_sources": "verifier: the strict reader; answer tag: the verifier's letter rules on a "
        "complete <answer> section; answer is / answer: MMLU-Pro's patterns; loglikelihood: the most "
        f"likely letter; {UNPARSED}: no letter",
        "accuracy_std": "std of the accuracy over bootstrap resamples of the questions; random row: std "
        "of a uniform guesser's accuracy, sqrt(sum p(1-p))/n with p = 1/options",
        "constant_letter": "always naming the dataset's most frequent gold letter (in brackets): what a "
        "letter prior scores with no knowledge, the floor to beat (random is lower when gold letters are "
        "uneven); +- sqrt(p(1-p)/n)",
        "majority_letter": f"a model naming one letter in more than {MAJORITY_LETTER_SHARE:.0%} of its "
        "answers: its accuracy may be a letter prior; compare it with the constant-letter row and the "
        "option shifts",
        "interval_vs_p": "When the interval and the McNemar p-value disagree, trust the p-value: the "
        "percentile bootstrap interval is too narrow with few questions or few discordant ones (only A "
        "right + only B right), while the exact McNemar test holds at any n. An interval that leaves 0 out "
        "with p >= 0.05 is a difference not shown; an interval that holds 0 with p < 0.05 is a difference "
        "shown, whose size the interval bounds only roughly; look at the discordant counts",
        "wilson": "at accuracy 0 or 1 the bootstrap std is 0, so the cell shows the 95% Wilson interval "
        "[low, high] instead",
        "paired": "A minus B on the same questions (strict): 95% paired-bootstrap percentile interval, "
        "two-sided exact McNemar p-value",
        "letter_distribution": "Strict letters of each model's answers to the options as given "
        f"('{UNPARSED}': no letter), next to the gold letters",
        "option_permutations": "Shift s moves option i to position (i + s) mod n and the gold letter "
        "follows its text; accuracy per shift (strict); consistency: share of questions whose strict "
        "answer names the same option text under every shift, a question with no option named under "
        "some shift counting as inconsistent",
        "accuracy_dedup": "Strict accuracy with within-set duplicates removed: questions equal after "
        "normalising case, whitespace and punctuation count once, the first one kept",
        "contamination": "Test questions also in the training set: exact, equal after normalising case, "
        f"whitespace and punctuation; near, not exact but at least {NEAR_DUPLICATE_THRESHOLD:.0%} of "
        f"the question's distinct word {NGRAM_WORDS}-grams occur in training questions (questions "
        f"under {NGRAM_WORDS} words count only when exact)",
    }


def chart_title(*, stop_at_answer_close: bool) -> str:
    """The Figure-3 title, naming the one rule every bar uses."""
    generated = "stopped at </answer>" if stop_at_answer_close else "generated to EOS"
    return (
        f"Accuracy, {ACCURACY_RULE} rule (cot: training verifier, {generated}); "
        "error bars: bootstrap std (at 0 or 100%: 95% Wilson interval), random: analytic"
    )


def _percent(value: float, std: float | None = None) -> str:
    return f"{100 * value:.1f}" + ("" if std is None else f" +- {100 * std:.1f}")


def _accuracy_cell(accuracy: float, std: float, wilson: Sequence[float] | None) -> str:
    """ "a +- std", or at accuracy 0 or 1 (where the bootstrap std is 0) "a [low, high]", the Wilson
    interval."""
    if wilson is not None and accuracy in (0.0, 1.0):
        return f"{_percent(accuracy)} [{_percent(wilson[0])}, {_percent(wilson[1])}]"
    return _percent(accuracy, std)


def _constant_letter_row(constant: Mapping[str, Mapping[str, Any]], datasets: Sequence[str]) -> str:
    """The best-constant-letter row of the accuracy table: both rules read the same letter."""
    cells = []
    for d in datasets:
        v = constant.get(d)
        if v is None:
            cells += ["-"] * 3
            continue
        score = f"{_percent(v['accuracy'], v['accuracy_std'])} ({v['letter']})"
        cells += [score, score, _percent(0.0)]
    return f"| {CONSTANT_LETTER_LABEL} | " + " | ".join(cells) + " |"


def _accuracy_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    datasets: Sequence[str],
    constant: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    columns = [f"{d} {rule}" for d in datasets for rule in ("strict", "lenient", "unparsed")]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for model, per_dataset in results.items():
        cells = []
        for d in datasets:
            v = per_dataset.get(d)
            cells += (
                [
                    _accuracy_cell(v["accuracy_strict"], v["accuracy_std"], v.get("accuracy_wilson95")),
                    _accuracy_cell(
                        v["accuracy_lenient"], v["accuracy_lenient_std"], v.get("accuracy_lenient_wilson95")
                    ),
                    _percent(v["unparsed_rate"]),
                ]
                if v
                else ["-"] * 3
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if constant:
        lines.append(_constant_letter_row(constant, datasets))
    return lines


def _lenient_source_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    """Counts of which rule read each lenient letter, per model and dataset (columns seen anywhere)."""
    entries = [
        (model, d, per_dataset[d]["lenient_sources"])
        for model, per_dataset in report.results.items()
        for d in datasets
        if "lenient_sources" in per_dataset.get(d, {})
    ]
    columns = [
        key for key in (*LENIENT_SOURCES, UNPARSED) if any(counts.get(key) for _, _, counts in entries)
    ]
    lines = ["| model | dataset | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 2)]
    for model, d, counts in entries:
        lines.append(f"| {model} | {d} | " + " | ".join(str(counts.get(key, 0)) for key in columns) + " |")
    return lines


def _format_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]], datasets: Sequence[str]
) -> list[str]:
    lines = ["| model | " + " | ".join(datasets) + " |", "|" + " --- |" * (len(datasets) + 1)]
    for model, per_dataset in results.items():
        if model == RANDOM_LABEL:
            continue
        cells = [
            f"{_percent(per_dataset[d]['format_valid_rate'])} / {per_dataset[d]['mean_completion_tokens']:.1f}"
            if d in per_dataset
            else "-"
            for d in datasets
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _rates(results: Mapping[str, Mapping[str, Mapping[str, Any]]], model: str, dataset: str) -> str:
    """ "format-valid / unparsed" (%) of one model on one dataset, "-" when not summarised."""
    v = results.get(model, {}).get(dataset)
    if not v or "format_valid_rate" not in v:
        return "-"
    return f"{_percent(v['format_valid_rate'])} / {_percent(v['unparsed_rate'])}"


def _shift_means(results: Mapping[str, Mapping[str, Mapping[str, Any]]], entry: Mapping[str, Any]) -> str:
    """Both models' strict accuracy averaged over the option shifts, "A / B" (%), "-" without shifts."""
    means = [
        results.get(m, {}).get(entry["dataset"], {}).get("accuracy_mean_over_shifts")
        for m in (entry["model_a"], entry["model_b"])
    ]
    return "-" if None in means else " / ".join(_percent(m) for m in means)


def _shift_difference(entry: Mapping[str, Any]) -> str:
    """ "+d [low, high]" in points for the mean-over-shifts difference, "-" without it."""
    if "diff_mean_over_shifts" not in entry:
        return "-"
    low, high = entry["ci95_mean_over_shifts"]
    return f"{100 * entry['diff_mean_over_shifts']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _paired_table(
    entries: Sequence[Mapping[str, Any]], results: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[str]:
    """One row per pair: both accuracies, n, the difference with its interval and p-value, the
    discordant counts and both models' format-valid / unparsed rates, so a failed run cannot pass for a
    tie; with option shifts, both mean-over-shifts accuracies too."""
    shifts = any(_shift_means(results, e) != "-" for e in entries)
    columns = [
        "dataset",
        "A",
        "B",
        "A (%)",
        "B (%)",
        "n",
        "A - B (points)",
        "95% CI (points)",
        "McNemar p",
        "only A right",
        "only B right",
        "A valid / unparsed (%)",
        "B valid / unparsed (%)",
    ] + (["A / B mean over shifts (%)", "A - B over shifts (points) [95% CI]"] if shifts else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for e in entries:
        low, high = e["ci95"]
        accuracies = [_percent(e[key]) if key in e else "-" for key in ("accuracy_a", "accuracy_b")]
        cells = [
            e["dataset"],
            e["model_a"],
            e["model_b"],
            *accuracies,
            str(e["n"]),
            f"{100 * e['diff']:+.1f}",
            f"[{100 * low:+.1f}, {100 * high:+.1f}]",
            f"{e['mcnemar_p']:.3g}",
            str(e["only_a_correct"]),
            str(e["only_b_correct"]),
            _rates(results, e["model_a"], e["dataset"]),
            _rates(results, e["model_b"], e["dataset"]),
        ] + ([_shift_means(results, e), _shift_difference(e)] if shifts else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def interval_and_p_disagree(entry: Mapping[str, Any], alpha: float = 0.05) -> bool:
    """Whether the bootstrap interval and McNemar's p-value point different ways: the interval leaves 0
    out while p >= alpha, or holds 0 while p < alpha (small n, few discordant questions)."""
    low, high = entry["ci95"]
    excludes_zero = low > 0 or high < 0
    return excludes_zero != (entry["mcnemar_p"] < alpha)


def _dedup_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    sizes = {d["label"]: d for d in report.datasets}
    columns = []
    for d in datasets:
        n, n_dedup = sizes[d].get("n", "?"), sizes[d].get("n_dedup", "?")
        columns += [f"{d} all (n={n})", f"{d} dedup (n={n_dedup})"]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for model, per_dataset in report.results.items():
        cells = []
        for d in datasets:
            v = per_dataset.get(d, {})
            cells += (
                [_percent(v["accuracy_strict"]), _percent(v["accuracy_dedup"])]
                if "accuracy_dedup" in v
                else ["-"] * 2
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _letter_table(report: EvalReport, dataset: Mapping[str, Any]) -> list[str]:
    label = dataset["label"]
    rows = [("gold", dataset.get("gold_letter_distribution", {}))]
    rows += [
        (model, per_dataset[label]["letter_distribution"])
        for model, per_dataset in report.results.items()
        if "letter_distribution" in per_dataset.get(label, {})
    ]
    letters = sorted({key for _, counts in rows for key in counts if key != UNPARSED})
    columns = [*letters, UNPARSED]
    lines = [f"| {label} | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for name, counts in rows:
        cells = ["-" if name == "gold" and key == UNPARSED else str(counts.get(key, 0)) for key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _permutation_table(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    entries = [
        (model, d, per_dataset[d])
        for model, per_dataset in report.results.items()
        for d in datasets
        if "accuracy_per_shift" in per_dataset.get(d, {})
    ]
    shifts = max(len(v["accuracy_per_shift"]) for _, _, v in entries)
    columns = [f"shift {s}" for s in range(shifts)] + ["mean", "consistent"]
    lines = ["| model | dataset | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 2)]
    for model, d, v in entries:
        cells = [_percent(a) for a in v["accuracy_per_shift"]]
        cells += [_percent(v["accuracy_mean_over_shifts"]), _percent(v["consistency_rate"])]
        lines.append(f"| {model} | {d} | " + " | ".join(cells) + " |")
    return lines


def _contamination_table(report: EvalReport) -> list[str]:
    lines = [
        "| dataset | n | exact | near | either (%) | e.g. (test id -> training id) |",
        "|" + " --- |" * 6,
    ]
    for d in report.datasets:
        c = d["contamination"]
        examples = ", ".join(f"{e['id']} -> {e['match_id']} ({e['kind']})" for e in c["examples"][:3])
        lines.append(
            f"| {d['label']} | {c['n']} | {c['exact']} | {c['near']} | {_percent(c['fraction'])} | "
            f"{examples or '-'} |"
        )
    return lines


def _checks_markdown(report: EvalReport, datasets: Sequence[str]) -> list[str]:
    """The sections on what the accuracy may owe to other things than knowledge."""
    rules = report.scoring
    entries = [v for per_dataset in report.results.values() for v in per_dataset.values()]
    lines = []
    if any("letter_distribution" in v for v in entries):
        lines += ["", "## Answer letters (strict rule, options as given)", ""]
        lines.append(f"{rules['letter_distribution']}.")
        for dataset in report.datasets:
            lines += ["", *_letter_table(report, dataset)]
    if any("accuracy_per_shift" in v for v in entries):
        lines += [
            "",
            "## Option order: cyclic shifts (strict rule, %)",
            "",
            f"{rules['option_permutations']}.",
        ]
        lines += ["", *_permutation_table(report, datasets)]
    if any("accuracy_dedup" in v for v in entries):
        lines += ["", "## Within-set duplicates removed (strict rule, %)", "", f"{rules['accuracy_dedup']}."]
        lines += ["", *_dedup_table(report, datasets)]
    if report.train_dataset is not None:
        train = report.train_dataset
        lines += [
            "",
            f"## Overlap with the training set ({train['label']}: {train['source']}@{train['split']}, "
            f"{train.get('n', '?')} questions)",
            "",
            f"{rules['contamination']}.",
            "",
            *_contamination_table(report),
        ]
    return lines


def majority_letter_warnings(report: EvalReport) -> list[str]:
    """One line per model and dataset where one strict letter is more than `MAJORITY_LETTER_SHARE` of
    the answers: such an accuracy is mostly that letter's share of the gold answers."""
    lines = []
    for model, per_dataset in report.results.items():
        for dataset, v in per_dataset.items():
            counts = {k: c for k, c in v.get("letter_distribution", {}).items() if k != UNPARSED}
            total = sum(v.get("letter_distribution", {}).values())
            if not counts or not total:
                continue
            letter = max(counts, key=lambda key: counts[key])
            if counts[letter] > MAJORITY_LETTER_SHARE * total:
                floor = report.constant_letter.get(dataset, {})
                lines.append(
                    f"{model} on {dataset}: answers {letter} to {counts[letter]} of {total} questions "
                    f"({_percent(counts[letter] / total)}%); its accuracy may be a letter prior"
                    + (
                        f" (always {floor['letter']} scores {_percent(floor['accuracy'])}%)"
                        if "letter" in floor
                        else ""
                    )
                )
    return lines


def unparsed_warnings(report: EvalReport) -> list[str]:
    """One line per model and dataset where most answers had no letter: a failed run (empty or cut-off
    completions) whose accuracies and differences are near 0 and look precise, not a real score."""
    return [
        f"{model} on {dataset}: no letter in {_percent(v['unparsed_rate'])}% of its answers (more than "
        f"{UNPARSED_WARNING_RATE:.0%}); its accuracy and every comparison with it say little"
        for model, per_dataset in report.results.items()
        for dataset, v in per_dataset.items()
        if v.get("unparsed_rate", 0.0) > UNPARSED_WARNING_RATE
    ]


def report_warnings(report: EvalReport) -> list[str]:
    """What a reader must see before the numbers (results.md's Warnings; the recipe logs them too)."""
    return unparsed_warnings(report) + majority_letter_warnings(report)


def results_markdown(report: EvalReport) -> str:
    """`results.md`: accuracy under both rules with the unparsed rate, format-valid rate and length,
    the headline (RLVR minus SFT) and every paired comparison, each table saying which rule it uses;
    then the answer letters, the option-order, duplicate and training-overlap checks present."""
    datasets = [d["label"] for d in report.datasets]
    rules = report.scoring
    warnings = report_warnings(report)
    lines = ["## Warnings", "", *[f"- {w}" for w in warnings], ""] if warnings else []
    lines += ["## Accuracy (%)", "", *_accuracy_table(report.results, datasets, report.constant_letter), ""]
    lines += [
        f"- strict (`accuracy` in results.json, the chart, the paired tests): {rules['strict']}.",
        f"- lenient: {rules['lenient']}.",
        f"- unparsed: {rules['unparsed_rate']}.",
        f"- +-: {rules['accuracy_std']}.",
        f"- [low, high]: {rules['wilson']}.",
        f"- {CONSTANT_LETTER_LABEL}: {rules['constant_letter']}.",
        "",
        "## Format-valid rate (%, strict rule) / mean completion length (tokens)",
        "",
        *_format_table(report.results, datasets),
    ]
    if any("lenient_sources" in v for per_dataset in report.results.values() for v in per_dataset.values()):
        lines += [
            "",
            "## Which rule read each lenient letter (questions)",
            "",
            f"{rules['lenient_sources']}.",
        ]
        lines += ["", *_lenient_source_table(report, datasets)]
    headline = headline_entries(report.paired, report.headline)
    if headline:
        rl, sft = report.headline
        lines += [
            "",
            f"## Headline: RLVR minus SFT ({rl} - {sft}, strict rule)",
            "",
            *_paired_table(headline, report.results),
        ]
    if report.paired:
        lines += ["", "## Paired comparisons (strict rule)", "", f"{rules['paired']}.", ""]
        lines += _paired_table(report.paired, report.results)
        lines += ["", f"{rules['interval_vs_p']}."]
        disagree = [e for e in report.paired if interval_and_p_disagree(e)]
        if disagree:
            lines.append(
                "Interval and p-value disagree on: "
                + "; ".join(f"{e['dataset']} {e['model_a']} - {e['model_b']}" for e in disagree)
                + "."
            )
    lines += _checks_markdown(report, datasets)
    return "\n".join(lines) + "\n"


@dataclass
class EvalReport:
    """Everything `results.json` holds.

    `results[model][dataset]` is `summarise_dataset`'s (or `random_summary`'s) dict; `datasets`
    holds `describe_dataset`'s entries; `paired` the `paired_comparisons` entries; `headline` the
    (RL, SFT) labels of the headline difference, or None without both; `scoring` says in words
    what each number means; `train_dataset` the training set checked for overlap (with its `n`),
    or None when none was given.
    """

    models: list[dict[str, str]]
    datasets: list[dict[str, Any]]
    generation: dict[str, Any]
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    paired: list[dict[str, Any]] = field(default_factory=list)
    headline: tuple[str, str] | None = None
    scoring: dict[str, str] = field(default_factory=lambda: scoring_rules(stop_at_answer_close=False))
    train_dataset: dict[str, Any] | None = None
    constant_letter: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per dataset, `constant_letter_baseline`: the best single letter and its accuracy."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


# --- options -------------------------------------------------------------------------------------

DEFAULT_DATASETS = (
    # The paper's set, as every config: 1,273 questions, 5 options.
    "medqa=bigbio/med_qa:med_qa_en_source@test",
    "mmlu_pro_health=TIGER-Lab/MMLU-Pro@test@category=health",
)


@dataclass
class MCQAEvalArguments:
    """Options of `recipes/eval_mcqa.py` (YAML via --config, every field overridable on the CLI)."""

    models: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Models as LABEL=PATH_OR_HUB_ID[:cot|:direct|:loglikelihood[:TEMPLATE]], space- or "
            "comma-separated. Without a mode, the model folder's run_info.json decides, else cot. "
            "loglikelihood (default template lm_eval) reads the most likely option letter, no generation."
        },
    )
    datasets: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={
            "help": "Datasets as LABEL=SOURCE[@SPLIT][@category=NAME][@revision=COMMIT]; SOURCE is any "
            "load_mcqa source; a Hub source may be pinned to a commit."
        },
    )
    output_dir: str = field(
        default="runs/eval", metadata={"help": "Folder for results, predictions, figure."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that already holds results.json."}
    )
    skip_missing_models: bool = field(
        default=False,
        metadata={"help": "Warn about and skip models whose folder does not exist instead of failing."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N questions."})
    skip_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Leave out dataset rows the loader cannot use (their count and first few go to the log "
            "and to results.json's datasets entries) instead of stopping at the first."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call, per process."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget in cot mode."})
    direct_max_new_tokens: int = field(
        default=32, metadata={"help": "Generation budget in direct mode (only the first line is read)."}
    )
    stop_at_answer_close: bool = field(
        default=False,
        metadata={
            "help": "In cot mode, stop generating after '</answer>': faster, but the strict rule then "
            "cannot see text after the tags, which training penalises."
        },
    )
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (with do_sample)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (each process adds its rank)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, bfloat16, float16 or float32."})
    backend: str = field(default="hf", metadata={"help": "'hf' (transformers generate) or 'vllm'."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on CPU even when a GPU is present."})
    n_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples for the error bars."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap draw."})
    option_permutations: int = field(
        default=1,
        metadata={
            "help": "Evaluate every question under K cyclic shifts of its options (shift s moves option i "
            "to (i + s) mod n; 1: as given): accuracy per shift and the consistency rate. K times the "
            "generation."
        },
    )
    train_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Training set as LABEL=SOURCE[@SPLIT][@category=NAME] (split defaults to train): "
            "report how many test questions occur in it, exactly or as near-duplicates. Unset: no report."
        },
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Check models, tokenizers and data, log the plan, load no model."}
    )

    def __post_init__(self) -> None:
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend: got {self.backend!r}; use 'hf' or 'vllm'")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.direct_max_new_tokens < 1:
            raise ValueError("batch_size, max_new_tokens and direct_max_new_tokens must be at least 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples: got {self.max_samples}; need a positive number or none")
        if self.option_permutations < 1:
            raise ValueError(f"option_permutations: got {self.option_permutations}; need at least 1")

    def generation_settings(self, answer_mode: str, *, rank: int = 0) -> GenerationSettings:
        """Decoding settings for one answer mode; the seed differs per process so shards differ."""
        cot = answer_mode == "cot"
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens if cot else self.direct_max_new_tokens,
            batch_size=self.batch_size,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed + rank,
            stop_strings=(ANSWER_CLOSE,) if cot and self.stop_at_answer_close else (),
        )
