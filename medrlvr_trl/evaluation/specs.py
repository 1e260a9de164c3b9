"""What to evaluate: `--models` and `--datasets` entries parsed into `ModelSpec` and `DatasetSpec`.

A model is checked to exist (a local folder with its tokenizer, a GGUF file, or a Hub id in the cache
when offline) before anything loads, and gets its answer mode, prompt template, role (base, SFT, RL)
and the verifier mode it was trained with, from the `--models` entry, else its run_info.json.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrlvr_trl.gguf_models import is_gguf_file
from medrlvr_trl.rewards.verifier import FORMAT_MODES
from medrlvr_trl.run_info import RUN_INFO_FILE, read_run_info
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

LOGLIKELIHOOD = "loglikelihood"
ANSWER_MODES = ("cot", "direct", LOGLIKELIHOOD)
DEFAULT_TEMPLATE = {"cot": "r1", "direct": "direct", LOGLIKELIHOOD: "lm_eval"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
RANDOM_LABEL = "random"
RL_WORDS = frozenset({"ppo", "grpo", "rloo", "rl", "rlvr"})


class MissingModelError(UserError):
    """A model that is neither a local folder nor (offline) in the Hub cache."""


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


TINY_CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "tiny"


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
