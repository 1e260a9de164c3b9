"""GRPO and RLOO with the Med-RLVR verifier: the training path `recipes/grpo_medqa.py` and
`recipes/rloo_medqa.py` share.

Both recipes run TRL's own trainers (`GRPOTrainer`, `RLOOTrainer`) unchanged; everything specific to
Med-RLVR reaches them through public seams:

- config: TRL's config plus `VerifierTrainingOptions` (the PPO config's reward, logging and resume
  options, and `total_completions` for compute matched to PPO);
- data: a `prompt` column of plain text (base model, no chat template) and the gold answer in the
  columns `rewards.reward_funcs` reads (`prompt_dataset`);
- reward: one TRL reward function per term of the reward registry (`rewards.reward_funcs.reward_functions`);
- logs: the first reward function hands each generation batch to `run_logs.RolloutLog`, which
  writes PPO-format `metrics.jsonl` / `completions.jsonl` for the dynamics report;
- final save: the policy and `run_info.json` with `answer_mode: cot`, as the PPO recipe saves it;
- stop signals: SIGTERM or SIGUSR1 ends the run at the next generation-batch boundary with a
  checkpoint and no final model (`preemption.PreemptionCallback`); the same command resumes.

    run_recipe("grpo", MedRLVRGRPOConfig, GRPOTrainer, argv)    # what recipes/grpo_medqa.py does
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, ModelConfig, RLOOConfig, get_peft_config

from medrlvr_trl.checkpoint import checkpoint_step, resume_checkpoint
from medrlvr_trl.configs import MCQAScriptArguments, VerifierOptions, parse_config
from medrlvr_trl.modeling import cast_saved_weights, local_model_path, precision_record, trainable_dtype
from medrlvr_trl.option_order import shuffled_rows, use_epoch_views
from medrlvr_trl.preemption import PreemptionCallback, PreemptionHandler
from medrlvr_trl.progress import TrainerProgress
from medrlvr_trl.prompts import build_prompt, get_template
from medrlvr_trl.recipe_setup import (
    end_distributed,
    last_metrics,
    load_rows_and_tokenizer,
    log_dry_run,
    setup_logging,
    training_data_record,
)
from medrlvr_trl.rewards.reward_funcs import reward_functions
from medrlvr_trl.rewards.reward_model import tokenize_prompts
from medrlvr_trl.run_info import write_card_and_run_info
from medrlvr_trl.run_logs import RolloutLog
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)

CARD_KEYS = (
    "learning_rate",
    "beta",
    "loss_type",
    "importance_sampling_level",
    "mask_truncated_completions",
    "scale_rewards",
    "epsilon",
    "num_generations",
    "num_iterations",
    "temperature",
    "max_completion_length",
    "generation_batch_size",
    "max_steps",
    "seed",
    "shuffle_options",
)


# --------------------------------------------------------------------------- configuration


@dataclass
class VerifierTrainingOptions(VerifierOptions):
    """The shared RL options (`VerifierOptions`, named as in the PPO config) plus `total_completions`.

    The reward terms' weights are TRL's own `reward_weights`, which the trainers apply to the reward
    functions. A mixin: it must come before a TRL config class among the bases.
    """

    total_completions: int | None = field(
        default=None,
        metadata={
            "help": "Completions to generate in the whole run (PPO's total_episodes); sets max_steps, "
            "rounded up to whole generation batches, so any num_generations generates the same number."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # TRL derives generation_batch_size and steps_per_generation here
        if (self.steps_per_generation * self.num_iterations) % self.gradient_accumulation_steps:
            raise ValueError(
                f"steps_per_generation ({self.steps_per_generation}) x num_iterations "
                f"({self.num_iterations}) must be a multiple of gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}): each generation batch must cover whole optimizer "
                "steps so that the logs can number updates"
            )
        if self.total_completions is not None:
            if self.max_steps > 0:
                raise ValueError("set total_completions or max_steps, not both")
            if self.total_completions < 1:
                raise ValueError(f"total_completions must be positive, got {self.total_completions}")
            updates = math.ceil(self.total_completions / self.generation_batch_size)
            self.max_steps = updates * self.optimizer_steps_per_update

    @property
    def optimizer_steps_per_update(self) -> int:
        """Optimizer steps taken on one generation batch."""
        return self.steps_per_generation * self.num_iterations // self.gradient_accumulation_steps


# The policy losses TRL 1.12's GRPOTrainer computes (trl/trainer/grpo_trainer.py, `_compute_loss`); its
# config accepts any string and an unknown one failed only at the first loss, after the models loaded.
# TRL's default is "dapo" (token-level sum over the accumulated batch / its token count), not "grpo", the
# original per-sequence mean of DeepSeekMath's GRPO.
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")  # "sequence": GSPO (Zheng et al. 2025, arXiv 2507.18071)


@dataclass
class MedRLVRGRPOConfig(VerifierTrainingOptions, GRPOConfig):
    """TRL's `GRPOConfig` plus the verifier, logging and resume options.

    The GRPO family is TRL's own: `loss_type` (one of `GRPO_LOSS_TYPES`: "grpo" the original, "dr_grpo" Dr.
    GRPO, "dapo" DAPO and TRL's default, "bnpo", "cispo", "sapo", ...), `importance_sampling_level:
    sequence` (GSPO) and `mask_truncated_completions` (DAPO's overlong filtering) pass to `GRPOTrainer`
    unchanged; only their values are checked here, before anything loads.
    """

    def __post_init__(self) -> None:
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(
                f"loss_type: got {self.loss_type!r}; TRL's GRPO takes one of {', '.join(GRPO_LOSS_TYPES)}"
            )
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"importance_sampling_level: got {self.importance_sampling_level!r}; choose token or sequence "
                "(sequence: GSPO)"
            )
        super().__post_init__()


@dataclass
class MedRLVRRLOOConfig(VerifierTrainingOptions, RLOOConfig):
    """TRL's `RLOOConfig` plus the verifier, logging and resume options."""


@dataclass(frozen=True)
class GenerationPlan:
    """How many completions, updates and optimizer steps a run makes; printed by `--dry_run`."""

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


def plan_generations(args: VerifierTrainingOptions, train_size: int) -> GenerationPlan:
    """Batch arithmetic of a run; an error when one generation batch needs more prompts than exist."""
    per_update = args.generation_batch_size
    prompts = per_update // args.num_generations
    if train_size < prompts:
        raise ValueError(
            f"one generation batch samples {prompts} prompts ({per_update} completions / num_generations "
            f"{args.num_generations}) but the training set has only {train_size}; lower "
            "per_device_train_batch_size or steps_per_generation, or raise num_generations"
        )
    steps = args.optimizer_steps_per_update
    if args.max_steps > 0:
        updates = math.ceil(args.max_steps / steps)
    else:  # TRL's epoch: the whole generation batches that fit in the training set
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
    """The trainers' dataset: a plain-text `prompt` plus the gold columns (`rewards.reward_funcs.GOLD_COLUMNS`).

    The prompts first pass the PPO recipe's checks (none longer than `max_prompt_length`, none holding
    the pad token, no two rows with one prompt and different answers), so every method trains on the
    same data or fails on the same row.
    """
    tokenize_prompts(rows, tokenizer, template=template, max_prompt_length=max_prompt_length)
    options = rows["options"]
    return Dataset.from_dict(
        {
            "prompt": [
                build_prompt(q, o, template=template) for q, o in zip(rows["question"], options, strict=True)
            ],
            "id": rows["id"],
            "answer": rows["answer"],
            "num_options": [len(o) for o in options],
            "options": options,
        }
    )


# --------------------------------------------------------------------------- models and checkpoints


def policy_init_kwargs(model_args: ModelConfig, args: Any) -> dict[str, Any]:
    """`from_pretrained` options from a TRL `ModelConfig`, with which TRL loads policy and reference alike.

    The dtype is that of the trainable policy: fp32 unless DeepSpeed keeps fp32 masters itself
    (`modeling.trainable_dtype`); the reference, loaded the same way, is then fp32 too.
    """
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise ValueError(
            "ModelConfig: load_in_4bit / load_in_8bit are not supported by these recipes; set both false"
        )
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "dtype": trainable_dtype(model_args.dtype, args),
    }
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def check_vocabulary_fits(
    name_or_path: str, tokenizer: PreTrainedTokenizerBase, *, revision: str | None
) -> None:
    """Refuse a tokenizer with ids beyond the model's embeddings (a pad token `load_tokenizer` had to add).

    TRL loads the model by name and does not resize its embeddings, so such ids would crash inside the
    first forward pass instead.
    """
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(name_or_path, revision=revision).get_text_config().vocab_size
    if len(tokenizer) > vocab:
        raise UserError(
            f"{name_or_path}: the tokenizer has {len(tokenizer)} tokens (pad token {tokenizer.pad_token!r} "
            f"was added) but the model embeds only {vocab}; save a copy of the model with resized embeddings "
            "(model.resize_token_embeddings) next to this tokenizer and train from that folder"
        )


def save_final_policy(trainer: Any, info: dict[str, Any]) -> Path:
    """Save the trained policy (LoRA merged) and tokenizer into output_dir, then a card and `run_info.json`.

    `run_info.json` comes last and says `answer_mode: cot`, so evaluation prompts the model the way it
    was trained; a folder without it does not claim to hold a finished model.
    """
    out = Path(trainer.args.output_dir)
    accelerator = trainer.accelerator
    if _is_peft(trainer.model):
        merged = accelerator.unwrap_model(trainer.model).merge_and_unload()
        if accelerator.is_main_process:
            merged.save_pretrained(out)
            trainer.processing_class.save_pretrained(out)
    else:
        trainer.save_model(str(out))  # unwraps DDP/DeepSpeed, gathers ZeRO-3 weights, saves the tokenizer
    if accelerator.is_main_process:
        cast_saved_weights(out, trainer.args.final_model_dtype)
        write_card_and_run_info(
            out,
            f"Med-RLVR {str(info.get('kind', '')).upper()} policy",
            "Trained with medrlvr-trl: critic-free policy gradient whose reward is a rule-based verifier.",
            info,
        )
        logger.info("saved final policy to %s", out)
    accelerator.wait_for_everyone()
    return out


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(getattr(model, "module", model), PeftModel)


# --------------------------------------------------------------------------- the recipe


def run_recipe(kind: str, config_class: type, trainer_class: type, argv: Sequence[str] | None = None) -> None:
    """Parse the config, build data, reward functions and trainer, train, and save the final policy."""
    script_args, args, model_args = parse_config([MCQAScriptArguments, config_class, ModelConfig], argv)
    setup_logging()
    get_template(script_args.prompt_template)  # unknown template names fail before anything loads
    if script_args.dry_run:
        log_dry_run(script_args, model_args, args, lambda rows: plan_generations(args, rows))
        return

    # TRL loads policy and reference by name and cannot grow their embeddings: no added pad token.
    rows, skipped, tokenizer = load_rows_and_tokenizer(
        script_args, model_args, recipe=kind, may_add_pad=False
    )

    def epoch_dataset(epoch: int) -> Dataset:
        """One epoch's prompts (`shuffle_options`: that epoch's option orders)."""
        epoch_rows = shuffled_rows(rows, seed=args.seed, epoch=epoch) if args.shuffle_options else rows
        return prompt_dataset(
            epoch_rows,
            tokenizer,
            template=script_args.prompt_template,
            max_prompt_length=args.max_prompt_length,
        )

    dataset = epoch_dataset(0)
    plan = plan_generations(args, len(dataset))
    logger.info(
        "%s: %d updates of %d completions\n%s",
        kind.upper(),
        plan.updates,
        plan.completions_per_update,
        plan.describe(),
    )
    model_path = local_model_path(model_args.model_name_or_path)  # a .gguf file: its converted folder
    check_vocabulary_fits(model_path, tokenizer, revision=model_args.model_revision)

    checkpoint = resume_checkpoint(args)
    rollout_log = RolloutLog(
        args.output_dir,
        eos_token_id=tokenizer.eos_token_id,
        optimizer_steps_per_update=args.optimizer_steps_per_update,
        thresholds=args.stage_thresholds(),
        log_completions_steps=args.log_completions_steps,
    )
    rollout_log.drop_rows_after(checkpoint_step(checkpoint))
    args.model_init_kwargs = {**policy_init_kwargs(model_args, args), **(args.model_init_kwargs or {})}
    trainer = trainer_class(
        model=model_path,
        reward_funcs=reward_functions(
            args.reward_mix(), mode=args.verifier_mode, values=args.reward_values(), on_batch=rollout_log
        ),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if args.shuffle_options:
        use_epoch_views(trainer, epoch_dataset)
    with PreemptionHandler() as preemption:
        # Stops only between generation batches: a run resumed inside one would not get it back.
        every = args.optimizer_steps_per_update
        trainer.add_callback(PreemptionCallback(preemption, trainer.accelerator, every=every))
        trainer.add_callback(TrainerProgress(kind.upper()))
        trainer.train(resume_from_checkpoint=checkpoint)
    if preemption.stopped:  # not finished: no final model, so the same command resumes
        step = trainer.state.global_step
        preemption.report(step, Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}")
        end_distributed(trainer.accelerator)
        return
    save_final_policy(
        trainer,
        {
            "kind": kind,
            "prompt_template": script_args.prompt_template,
            "answer_mode": "cot",
            **precision_record(args, trainer.model),
            "base_model": model_args.model_name_or_path,
            "dataset": f"{script_args.dataset_name} ({script_args.dataset_train_split}, {len(rows)} rows)",
            "training_data": training_data_record(script_args, rows),
            "skipped_rows": skipped.as_record(),
            "reward": f"verifier mode={args.verifier_mode} {asdict(args.reward_values())}; "
            f"terms {dict(zip(args.rewards, args.reward_weights, strict=True))}",
            "hyperparameters": {key: getattr(args, key) for key in CARD_KEYS if hasattr(args, key)},
            "final_metrics": last_metrics(trainer.state.log_history, kl_key="kl"),
        },
    )
    end_distributed(trainer.accelerator)
