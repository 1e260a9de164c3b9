"""Options shared by the recipes and the parser that reads them.

The SFT and RL recipes must see the same data the same way, so the data and prompt options live in
one dataclass that all parse (`MCQAScriptArguments`); the mixins here add what every training
config shares (`FinalModelOptions`, `OptionOrderOptions`, and for PPO, GRPO and RLOO
`VerifierOptions`). Each trainer's own options live in a subclass of TRL's config next to that
trainer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from trl import ScriptArguments, TrlParser

from medrlvr_trl.data import is_local_source
from medrlvr_trl.dynamics import StageThresholds
from medrlvr_trl.rewards import RewardValues
from medrlvr_trl.rewards.terms import (
    DEFAULT_REWARDS,
    REWARD_TERMS,
    RewardMix,
    warn_if_penalties_outweigh_format,
)
from medrlvr_trl.run_logs import COMPLETIONS_FILE
from medrlvr_trl.user_errors import UserError, one_line

logger = logging.getLogger(__name__)


@dataclass
class MCQAScriptArguments(ScriptArguments):
    """Which multiple-choice data a recipe reads and how each question becomes a prompt.

    `dataset_name` is a Hub dataset id or a local path understood by `medrlvr_trl.data.load_mcqa`.
    """

    dataset_name: str = field(
        default="GBaker/MedQA-USMLE-4-options",
        metadata={
            "help": "Hub dataset id or local path (.jsonl/.json/.parquet file or folder of {split}.*)."
        },
    )
    dataset_revision: str | None = field(
        default=None,
        metadata={
            "help": "Hub commit (or branch, tag) of `dataset_name` to read; empty: the newest. Hub ids only. "
            "Look a commit up with `HfApi().dataset_info(name).sha` (huggingface_hub)."
        },
    )
    dataset_category: str | None = field(
        default=None, metadata={"help": "Keep only rows of this category (MMLU-Pro, e.g. 'health')."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (smoke tests, ablations)."}
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Held-out set for in-training evaluation; defaults to `dataset_name`."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval rows."})
    prompt_template: str = field(
        default="r1", metadata={"help": "Prompt template name from `medrlvr_trl.prompts.TEMPLATES`."}
    )
    skip_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Leave out rows the loader cannot use (count and first few in the log and run_info.json) "
            "instead of stopping at the first."
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "Resolve and print the configuration and batch arithmetic, then exit before loading "
            "(runs on any machine: bf16 is planned for, not checked)."
        },
    )
    launch_config: str | None = field(
        default=None,
        metadata={
            "help": "Dry run only: plan memory for this accelerate config (e.g. launch/zero3.yaml; world size "
            "from WORLD_SIZE, else the file's num_processes) instead of the launch it runs under."
        },
    )

    def __post_init__(self) -> None:
        # A local path with a revision fails here, before any data or model loads (and in a dry run).
        self.dataset_revision = self.dataset_revision or None  # `--dataset_revision ""`: the newest
        if self.dataset_revision is not None and self.dataset_name and is_local_source(self.dataset_name):
            raise UserError(
                f"dataset_revision {self.dataset_revision!r} is set but dataset_name {self.dataset_name!r} is "
                "a local path; a revision pins a Hub dataset's commit: leave dataset_revision empty for local data"
            )

    def eval_dataset_revision(self) -> str | None:
        """The revision of the in-training eval set: `dataset_revision` when it is `dataset_name` itself."""
        return self.dataset_revision if self.eval_dataset_name in (None, self.dataset_name) else None


SAVE_DTYPES = ("float32", "bfloat16", "float16")
ROLLOUT_BACKENDS = ("hf", "vllm")


@dataclass
class FinalModelOptions:
    """How the finished model is written; a mixin of every training config (before the TRL class)."""

    final_model_dtype: str | None = field(
        default=None,
        metadata={
            "help": f"Save the final model in this dtype ({', '.join(SAVE_DTYPES)}); default: as trained."
        },
    )

    def __post_init__(self) -> None:
        if self.final_model_dtype is not None and self.final_model_dtype not in SAVE_DTYPES:
            raise ValueError(
                f"final_model_dtype: got {self.final_model_dtype!r}; choose one of {', '.join(SAVE_DTYPES)}"
            )
        super().__post_init__()


@dataclass
class OptionOrderOptions:
    """Whether training re-draws option orders (`medrlvr_trl.option_order`); a mixin of every training config."""

    shuffle_options: bool = field(
        default=False,
        metadata={
            "help": "Re-draw each training question's option order every epoch (the gold letter follows its "
            "text); off: the order the dataset gives, as in the paper."
        },
    )


# The options every RL recipe shares (PPO, GRPO, RLOO): the verifier, the reward terms and their
# weights, the training-dynamics thresholds, the run logs and resume. A mixin placed before the TRL
# config among the bases, so each trainer's config is TRL's own plus these fields, spelled the same
# everywhere.
@dataclass
class VerifierOptions(FinalModelOptions, OptionOrderOptions):
    """The Med-RLVR reward and logging options; bad values fail when the config is built."""

    verifier_mode: str = field(default="paper", metadata={"help": "'paper' or 'strict' format check."})
    format_error_reward: float = field(default=-1.0, metadata={"help": "Reward for a malformed response."})
    wrong_reward: float = field(default=0.0, metadata={"help": "Reward for a well-formed wrong answer."})
    correct_reward: float = field(default=1.0, metadata={"help": "Reward for the gold letter."})
    rewards: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={
            "help": f"Reward terms summed into the reward (docs/dynamics.md); known: {', '.join(REWARD_TERMS)}."
        },
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per term in `rewards`; empty: all 1.0."}
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "Longer prompts are an error, not truncated."}
    )
    log_completions_steps: int = field(
        default=1, metadata={"help": f"Append completions to {COMPLETIONS_FILE} every N updates (0: never)."}
    )
    rollout_backend: str = field(
        default="hf",
        metadata={
            "help": "What samples the rollouts: 'hf' (transformers generate) or 'vllm' (an engine colocated "
            "with each training process; GRPO / RLOO: TRL's use_vllm with vllm_mode colocate). `make vllm` "
            "installs vLLM."
        },
    )
    resume: bool = field(
        default=True,
        metadata={
            "help": "Continue from the newest checkpoint in output_dir; if False, refuse a used output_dir."
        },
    )
    dynamics_short_think_words: int = field(
        default=StageThresholds.short_think_words,
        metadata={"help": "Think shorter than this is shrunk (stages 4-5, think_length penalty)."},
    )
    dynamics_verbose_think_words: int = field(
        default=StageThresholds.verbose_think_words,
        metadata={"help": "Think this long is verbose (stage 2)."},
    )
    dynamics_prefix_words: int = field(
        default=StageThresholds.prefix_reasoning_words,
        metadata={"help": "Text before <think> this long is the step-by-step exploit (stage 5)."},
    )
    dynamics_enumeration_options: int = field(
        default=StageThresholds.enumeration_min_options,
        metadata={"help": "Options a think must address to count as option-by-option."},
    )

    def __post_init__(self) -> None:
        # Unknown terms, a wrong number of weights or bad thresholds fail here, before any model loads.
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            raise ValueError(
                f"rollout_backend: got {self.rollout_backend!r}; choose one of {', '.join(ROLLOUT_BACKENDS)}"
            )
        if self.rollout_backend == "vllm" and hasattr(self, "use_vllm"):  # TRL's GRPO / RLOO configs
            self.use_vllm, self.vllm_mode = True, "colocate"
        mix = self.reward_mix()
        warn_if_penalties_outweigh_format(mix, self.reward_values())
        self.reward_weights = list(mix.weights)
        super().__post_init__()

    def reward_values(self) -> RewardValues:
        return RewardValues(
            format_error=self.format_error_reward, wrong=self.wrong_reward, correct=self.correct_reward
        )

    def stage_thresholds(self) -> StageThresholds:
        return StageThresholds(
            short_think_words=self.dynamics_short_think_words,
            verbose_think_words=self.dynamics_verbose_think_words,
            prefix_reasoning_words=self.dynamics_prefix_words,
            enumeration_min_options=self.dynamics_enumeration_options,
        )

    def reward_mix(self) -> RewardMix:
        return RewardMix(self.rewards, self.reward_weights or None, thresholds=self.stage_thresholds())


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config file.yaml` plus command-line overrides into the given dataclasses.

    Unknown keys in the YAML are an error naming the file and the keys, raised before any dataclass
    is built, so a typo never silently falls back to a default (unknown command-line flags are
    rejected by the parser itself). Every error of a value is a `UserError`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        _check_config_keys(Path(argv[argv.index("--config") + 1]), dataclass_types)
    try:
        return TrlParser(dataclass_types=list(dataclass_types)).parse_args_and_config(argv)
    except ValueError as err:
        if "doesn't support bf16" in str(err) and (planned := _dry_run_without_gpu(dataclass_types, argv)):
            return planned
        if "doesn't support bf16" in str(err):
            tiny = offline_command()
            raise UserError(
                "bf16 needs a GPU and this machine has none"
                + (
                    ""
                    if "--config" in argv
                    else " (the defaults are the paper's: Qwen2.5-3B from the Hub on GPUs)"
                )
                + "; add `--bf16 false` to run on the CPU"
                + (f", or try the offline tiny config: {tiny}" if tiny else "")
            ) from None
        raise UserError(str(err)) from None


def _dry_run_without_gpu(dataclass_types: Sequence[type], argv: list[str]) -> tuple[Any, ...] | None:
    """A dry run plans a GPU launch on any machine: parse with bf16 off (transformers checks for a GPU),
    then put bf16 back, so the plan uses the config as written. None when this is not a dry run."""
    try:
        parsed = TrlParser(dataclass_types=list(dataclass_types)).parse_args_and_config(
            [*argv, "--bf16", "false"]
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    if not any(getattr(part, "dry_run", False) for part in parsed):
        return None
    for part in parsed:
        if hasattr(part, "bf16"):
            part.bf16 = True
    return parsed


def offline_command(script: str | None = None) -> str | None:
    """The command that runs a recipe (default: the running one) offline on its tiny config, if any."""
    path = Path(script or sys.argv[0])
    tiny = Path(__file__).resolve().parent.parent / "recipes" / "configs" / "tiny"
    for name in (path.stem, path.stem.split("_")[0]):  # sft_grid -> sft_grid.yaml, ppo_medqa -> ppo.yaml
        if path.parent.name == "recipes" and (tiny / f"{name}.yaml").is_file():
            return f"python recipes/{path.name} --config recipes/configs/tiny/{name}.yaml"
    return None


def _check_config_keys(path: Path, dataclass_types: Sequence[type]) -> None:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({one_line(str(err))})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: a config file must be a YAML mapping of option names to values")
    known = {f.name for cls in dataclass_types for f in fields(cls)} | {"env"}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise UserError(f"{path}: unknown option(s) {', '.join(unknown)}; check the spelling (see --help)")
