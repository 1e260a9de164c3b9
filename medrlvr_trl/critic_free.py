"""GRPO and RLOO with the Med-RLVR verifier: what `recipes/grpo_medqa.py` and `recipes/rloo_medqa.py` share.

Both recipes run TRL's own trainers unchanged (`GRPOTrainer`, `RLOOTrainer`); everything specific
to Med-RLVR reaches them through public seams:

- data: a dataset whose `prompt` column is plain text (base model, no chat template) and whose gold
  answer travels in the columns `trl_rewards` reads;
- reward: one TRL reward function per term of the reward registry (`trl_rewards.reward_functions`);
- logs: the first reward function also writes `metrics.jsonl` and `completions.jsonl` in the PPO
  recipe's row format (`RolloutLog`), so `recipes/dynamics_report.py` reads these runs too;
- final save: the policy with `run_info.json` (`answer_mode: cot`), as the PPO recipe saves it.

One "update" in the logs is one generation batch, the counterpart of one PPO rollout batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from medrlvr_trl import runlog
from medrlvr_trl.configs import MCQAScriptArguments
from medrlvr_trl.dynamics import StageThresholds, completion_features, summarise
from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.reward_terms import DEFAULT_REWARDS, REWARD_TERMS, RewardMix, warn_if_penalties_outweigh_format
from medrlvr_trl.rewards import RewardValues
from medrlvr_trl.trl_rewards import ScoredCompletion
from medrlvr_trl.verifier_reward import tokenize_prompts

logger = logging.getLogger(__name__)

# The same file names as the PPO recipe's logs (medrlvr_trl.ppo), which the dynamics report reads.
METRICS_FILE, COMPLETIONS_FILE = "metrics.jsonl", "completions.jsonl"
RUN_INFO_FILE = "run_info.json"


# --------------------------------------------------------------------------- configuration


@dataclass
class VerifierTrainingOptions:
    """Med-RLVR options added to TRL's `GRPOConfig` / `RLOOConfig` (same names as in the PPO config).

    The reward terms are `rewards` here and their weights TRL's own `reward_weights`, which the
    trainers apply to the reward functions; left empty, every term weighs 1.0.
    """

    verifier_mode: str = field(default="paper", metadata={"help": "'paper' or 'strict' format check."})
    format_error_reward: float = field(default=-1.0, metadata={"help": "Reward for a malformed response."})
    wrong_reward: float = field(default=0.0, metadata={"help": "Reward for a well-formed wrong answer."})
    correct_reward: float = field(default=1.0, metadata={"help": "Reward for the gold letter."})
    rewards: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={"help": f"Reward terms, one TRL reward function each; known: {', '.join(REWARD_TERMS)}."},
    )
    max_prompt_length: int = field(
        default=1024, metadata={"help": "Longer prompts are an error, not truncated."}
    )
    total_completions: int | None = field(
        default=None,
        metadata={
            "help": "Completions to generate over the run (PPO's total_episodes); sets max_steps so that "
            "runs with different num_generations generate the same number. Rounded up to whole generation batches."
        },
    )
    log_completions_steps: int = field(
        default=1, metadata={"help": f"Append completions to {COMPLETIONS_FILE} every N updates (0: never)."}
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
        mix = self.reward_mix()
        warn_if_penalties_outweigh_format(mix, self.reward_values())
        self.reward_weights = list(mix.weights)  # TRL's field: one weight per reward function
        super().__post_init__()  # TRL derives generation_batch_size / steps_per_generation here
        if (self.steps_per_generation * self.num_iterations) % self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation ({self.steps_per_generation}) x num_iterations ({self.num_iterations}) must "
                f"be a multiple of gradient_accumulation_steps ({self.gradient_accumulation_steps}), so that each "
                "generation batch covers whole optimizer steps and the logs can number updates"
            )
        if self.total_completions is not None:
            if self.max_steps > 0:
                raise ValueError("set either total_completions or max_steps, not both")
            if self.total_completions < 1:
                raise ValueError(f"total_completions must be positive, got {self.total_completions}")
            generations = math.ceil(self.total_completions / self.generation_batch_size)
            self.max_steps = generations * self.optimizer_steps_per_generation

    @property
    def optimizer_steps_per_generation(self) -> int:
        return self.steps_per_generation * self.num_iterations // self.gradient_accumulation_steps

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


@dataclass(frozen=True)
class GenerationPlan:
    """How many completions, optimizer steps and updates a run makes; printed by `--dry_run`."""

    world_size: int
    num_generations: int
    completions_per_update: int
    prompts_per_update: int
    optimizer_steps_per_update: int
    updates: int
    max_steps: int
    total_completions: int
    prompt_epochs: float

    def describe(self) -> str:
        return "\n".join(f"  {k}: {v}" for k, v in asdict(self).items())


def plan_generations(args: Any, train_size: int) -> GenerationPlan:
    """Batch arithmetic of a GRPO/RLOO run (`args` a config with `VerifierTrainingOptions`)."""
    per_update = args.generation_batch_size
    prompts = per_update // args.num_generations
    if train_size < prompts:
        raise ValueError(
            f"one generation batch samples {prompts} prompts ({per_update} completions / num_generations "
            f"{args.num_generations}) but the training set has only {train_size}; lower per_device_train_batch_size "
            "or steps_per_generation, or raise num_generations"
        )
    steps = args.optimizer_steps_per_generation
    if args.max_steps > 0:
        updates = math.ceil(args.max_steps / steps)
    else:  # TRL's epoch: every prompt once per generation, in whole generation batches
        updates = math.ceil(args.num_train_epochs * (train_size // prompts))
    return GenerationPlan(
        world_size=args.world_size,
        num_generations=args.num_generations,
        completions_per_update=per_update,
        prompts_per_update=prompts,
        optimizer_steps_per_update=steps,
        updates=updates,
        max_steps=updates * steps,
        total_completions=updates * per_update,
        prompt_epochs=round(updates * prompts / train_size, 3),
    )


# --------------------------------------------------------------------------- data


def prompt_dataset(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, *, template: str, max_prompt_length: int
) -> Dataset:
    """The trainers' dataset: a plain-text `prompt` and the gold columns the reward functions read.

    Prompts go through the PPO recipe's checks first (pad distinct from eos, no prompt longer than
    `max_prompt_length`, no two rows with one prompt and different answers), so every method trains on
    exactly the same data or fails on the same row.
    """
    tokenize_prompts(rows, tokenizer, template=template, max_prompt_length=max_prompt_length)
    return Dataset.from_dict(
        {
            "prompt": [build_prompt(q, o, template=template) for q, o in zip(rows["question"], rows["options"])],
            "id": rows["id"],
            "answer": rows["answer"],
            "num_options": [len(options) for options in rows["options"]],
            "options": rows["options"],
        }
    )


# --------------------------------------------------------------------------- logs


class RolloutLog:
    """The `on_batch` hook of the first reward function: logs each generation batch like a PPO update.

    Every process scores its share of the batch; the rows are gathered so that the main process writes
    one `metrics.jsonl` row per update and the completions every `log_completions_steps` updates.
    The verifier and dynamics metrics also go to TRL's own logs (`log_metric`), next to its loss and KL.
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        eos_token_id: int,
        optimizer_steps_per_update: int,
        thresholds: StageThresholds,
        log_completions_steps: int = 1,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.eos_token_id = eos_token_id
        self.steps_per_update = optimizer_steps_per_update
        self.thresholds = thresholds
        self.every = log_completions_steps

    def update_at(self, global_step: int) -> int:
        """The update (1-based generation batch) that starts at optimizer step `global_step`."""
        return global_step // self.steps_per_update + 1

    def drop_rows_after(self, global_step: int) -> None:
        """Forget logged updates a resumed run is about to redo (all of them when starting afresh)."""
        if _is_main_process():
            completed = global_step // self.steps_per_update
            for name in (METRICS_FILE, COMPLETIONS_FILE):
                runlog.truncate_after(self.output_dir / name, completed)

    def __call__(self, scored: list[ScoredCompletion], kwargs: dict[str, Any]) -> None:
        from accelerate.utils import gather_object

        try:
            state, completion_ids = kwargs["trainer_state"], kwargs["completion_ids"]
        except KeyError as err:
            raise ValueError(f"RolloutLog runs inside a TRL trainer, which passes {err}; it was missing") from None
        update = self.update_at(state.global_step)
        local = [self._row(update, item, ids) for item, ids in zip(scored, completion_ids, strict=True)]
        gathered = gather_object(local)  # every process calls the reward functions together
        rows = [row for row, _ in gathered]
        metrics = self._metrics(gathered)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in metrics.items():
                log_metric(name, value)
        if _is_main_process():
            summary = {**metrics, "update": update, "episode": update * len(rows), "step": state.global_step}
            runlog.append_rows(self.output_dir / METRICS_FILE, [summary])
            if self.every > 0 and update % self.every == 0:
                runlog.append_rows(self.output_dir / COMPLETIONS_FILE, rows)

    def _row(self, update: int, item: ScoredCompletion, ids: Sequence[int]) -> tuple[dict[str, Any], Any]:
        features = completion_features(
            item.completion, item.verdict, options=item.gold.options, thresholds=self.thresholds
        )
        row = {
            "update": update,
            "id": item.gold.id,
            "gold": item.gold.answer,
            "completion": item.completion,
            "response_tokens": len(ids),
            **asdict(item.verdict),
            "score": item.score,
            **features.as_row(),
            "hit_length_limit": bool(ids) and ids[-1] != self.eos_token_id,
            "terms": item.terms,
        }
        return row, features

    @staticmethod
    def _metrics(gathered: list[tuple[dict[str, Any], Any]]) -> dict[str, float]:
        rows = [row for row, _ in gathered]

        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else 0.0

        metrics = {
            "verifier/reward": mean([row["reward"] for row in rows]),
            "verifier/format_ok": mean([float(row["format_ok"]) for row in rows]),
            "verifier/accuracy": mean([float(row["correct"]) for row in rows]),
            "verifier/response_length": mean([row["response_tokens"] for row in rows]),
            "verifier/hit_length_limit": mean([float(row["hit_length_limit"]) for row in rows]),
            "objective/scores": mean([row["score"] for row in rows]),
        }
        for name in rows[0]["terms"] if rows else ():
            metrics[f"reward/{name}"] = mean([row["terms"][name] for row in rows])
        metrics.update(summarise([features for _, features in gathered]))
        return metrics


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


# --------------------------------------------------------------------------- model loading and saving


def policy_init_kwargs(model_args: Any) -> dict[str, Any]:
    """`from_pretrained` options from a TRL `ModelConfig`; the trainer loads policy and reference with them."""
    kwargs: dict[str, Any] = {"revision": model_args.model_revision, "dtype": model_args.dtype or "float32"}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def check_vocabulary_fits(name_or_path: str, tokenizer: PreTrainedTokenizerBase, revision: str | None) -> None:
    """Refuse a tokenizer with ids beyond the model's embeddings (a pad token added by `load_tokenizer`).

    TRL loads the model from its name and does not resize embeddings, so such ids would crash deep
    inside the first forward pass.
    """
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(name_or_path, revision=revision).get_text_config().vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(
            f"{name_or_path}: the tokenizer has {len(tokenizer)} tokens (pad token {tokenizer.pad_token!r} was added) "
            f"but the model embeds only {vocab}; save a copy of the model with resized embeddings "
            "(model.resize_token_embeddings) and its tokenizer, and train from that folder"
        )


def last_checkpoint(args: Any) -> str | None:
    """The checkpoint to continue from (`resume_from_checkpoint`, else the newest in output_dir)."""
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    folder = Path(args.output_dir)
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if found is not None and not args.resume:
        raise ValueError(
            f"{args.output_dir} already holds checkpoints ({Path(found).name}); pass a new --output_dir, or drop "
            "--resume false to continue that run"
        )
    return found


def checkpoint_step(checkpoint: str | None) -> int:
    """The optimizer step a TRL checkpoint was saved at (0 for none)."""
    if checkpoint is None:
        return 0
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])


def save_final_model(trainer: Any, info: dict[str, Any]) -> Path:
    """Save the trained policy (LoRA merged) and tokenizer to output_dir, then `run_info.json` and a card.

    `run_info.json` is written last, with `answer_mode: cot`, so evaluation prompts the model the way
    it was trained; until it exists, the folder does not claim to hold a finished model.
    """
    out = Path(trainer.args.output_dir)
    if trainer.is_peft_model if hasattr(trainer, "is_peft_model") else _is_peft(trainer.model):
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(out)
            trainer.processing_class.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # unwraps DDP / DeepSpeed, gathers ZeRO-3 weights, saves the tokenizer
    if trainer.accelerator.is_main_process:
        (out / "README.md").write_text(_model_card_text(info))
        (out / RUN_INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        logger.info("saved final policy to %s", out)
    trainer.accelerator.wait_for_everyone()
    return out


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(getattr(model, "module", model), PeftModel)


def _model_card_text(info: dict[str, Any]) -> str:
    lines = [
        f"# Med-RLVR {str(info.get('kind', '')).upper()} policy",
        "",
        "Trained with medrlvr-trl: a critic-free policy-gradient method whose reward is a rule-based verifier.",
        "",
    ]
    lines += [f"- **{key}**: {value}" for key, value in info.items() if not isinstance(value, dict)]
    for key, value in info.items():
        if isinstance(value, dict):
            lines += ["", f"## {key}", ""] + [f"- {k}: {v}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


__all__ = [
    "COMPLETIONS_FILE",
    "METRICS_FILE",
    "GenerationPlan",
    "MCQAScriptArguments",
    "RolloutLog",
    "VerifierTrainingOptions",
    "plan_generations",
    "prompt_dataset",
    "save_final_model",
]
