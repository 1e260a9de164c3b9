"""The matched SFT baseline: same MedQA rows, same prompt as PPO, the answer alone as the target.

Med-RLVR ("SFT baseline") fine-tunes on the question/answer pairs with no reasoning in the target,
so the SFT model answers directly. Here each row becomes a TRL prompt-completion example; TRL's
`SFTTrainer` then computes the loss on the completion tokens only (the prompt is masked with -100).
The run records its target style and how it must be evaluated in `run_info.json`, which
`recipes/eval_mcqa.py` reads to pick the answer mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import datasets
from trl import SFTConfig

from medrlvr_trl.configs import FinalModelOptions, OptionOrderOptions
from medrlvr_trl.prompts import TARGET_STYLES, answer_target, build_prompt, get_template

logger = logging.getLogger(__name__)

# Every SFT target is read back by the direct-answer scorer: "letter" and "letter_text" start with
# the letter; "tagged" (" <answer>B</answer>") has no <think> section, so the verifier would call
# it malformed, and the direct scorer reads its <answer> section instead.
SFT_ANSWER_MODE = "direct"


@dataclass
class MedSFTConfig(FinalModelOptions, OptionOrderOptions, SFTConfig):
    """TRL's `SFTConfig` plus the options of the matched baseline."""

    sft_target: str = field(
        default="letter",
        metadata={
            "help": "What the model learns to write after 'Assistant:': 'letter' (' B', the paper's "
            "answer-only target), 'letter_text' (' B. <option text>') or 'tagged' (' <answer>B</answer>')."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Allow training into a non-empty output_dir, replacing a finished run there (an "
            "unfinished one is continued)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft_target not in TARGET_STYLES:
            raise ValueError(f"sft_target: got {self.sft_target!r}; choose one of {list(TARGET_STYLES)}")
        if self.shuffle_options and self.packing:
            raise ValueError("shuffle_options cannot be combined with packing: set one of them to false")


def build_sft_dataset(rows: datasets.Dataset, *, template: str, target: str) -> datasets.Dataset:
    """Turn loaded MCQA rows into TRL prompt-completion examples (`prompt`, `completion`).

    The prompt is rendered by the same `build_prompt` the PPO recipe uses; the completion is
    `answer_target(answer, options, style=target)`. TRL appends the EOS token to each completion, so
    the model also learns to stop right after the answer.
    """
    get_template(template)  # unknown names fail here, before any row is rendered
    if target not in TARGET_STYLES:
        raise ValueError(f"sft_target: got {target!r}; choose one of {list(TARGET_STYLES)}")
    if len(rows) == 0:
        raise ValueError("the SFT training set has no rows; check dataset_name, split and filters")

    def render(row: dict[str, Any]) -> dict[str, str]:
        return {
            "prompt": build_prompt(row["question"], row["options"], template=template),
            "completion": answer_target(row["answer"], row["options"], style=target),
        }

    return rows.map(render, remove_columns=rows.column_names, desc="rendering SFT examples")


def sft_run_info(*, model_name_or_path: str, dataset: str, split: str, template: str, target: str) -> dict:
    """What an evaluator needs to know about an SFT run: its target, prompt and answer mode.

    The model is prompted at evaluation exactly as in training (`eval_prompt_template` is the
    training template) and scored as a direct answer (`answer_mode`).
    """
    return {
        "kind": "sft",
        "base_model": model_name_or_path,
        "dataset": dataset,
        "split": split,
        "sft_target": target,
        "prompt_template": template,
        "eval_prompt_template": template,
        "answer_mode": SFT_ANSWER_MODE,
    }


# --- learning-rate grid --------------------------------------------------------------------------


def grid_run_name(learning_rate: float) -> str:
    """Folder / label of one grid run, e.g. `lr_5e-06`."""
    return f"lr_{learning_rate:g}"


def pick_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The grid row with the highest dev accuracy; on a tie, the earliest row in grid order."""
    if not rows:
        raise ValueError("the learning-rate grid has no results to choose from")
    return max(rows, key=lambda row: (row["accuracy"], -rows.index(row)))


def grid_markdown(rows: list[dict[str, Any]], best: dict[str, Any], dev_label: str) -> str:
    """One line per learning rate: dev accuracy (+- bootstrap std), format-valid rate, chosen run."""
    lines = [
        f"## SFT learning-rate grid (dev set: {dev_label})",
        "",
        "| learning rate | dev accuracy (%) | format-valid (%) | model | chosen |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['learning_rate']:g} | {100 * row['accuracy']:.1f} +- {100 * row['accuracy_std']:.1f} "
            f"| {100 * row['format_valid_rate']:.1f} | {row['model']} | {'yes' if row is best else ''} |"
        )
    return "\n".join(lines) + "\n"
