"""PPO with the verifiable reward: `MedRLVRPPOTrainer`, a subclass of TRL's (1.12.0) PPO trainer.

TRL's `__init__` builds everything we need (accelerator, policy+value wrapper, optimizer,
scheduler, reference model, DeepSpeed wrapping) and is reused as is. Its `train()` cannot
resume (TRL issue 2657) and scores with a neural reward model, so `train()` is written here, in
four readable steps per update:

    rollout     sample responses; log-probs under policy and reference; critic values
    score       decode and verify every response against its prompt's gold answer
    advantages  per-token KL penalty + verifier score on the last response token, GAE, whitening
    update      clipped policy loss + clipped value loss over mini-batches, `num_ppo_epochs` times

`advantage_estimator: reinforce_pp_baseline` swaps the critic for REINFORCE++-baseline (OpenRLHF's
`reinforce_baseline`): `num_samples_per_prompt` responses per prompt, each score minus its prompt's mean
score, returns-to-go with gamma 1, then whitening over every process's tokens. No critic exists in that
mode (not loaded, stepped or saved); the clipped policy loss is the same.

The loss, GAE and KL terms are those of TRL's trainer (so results stay comparable), with
deliberate changes for correctness at scale:

- the verifier score is added on the last response token (the paper's "r_verifier at the last
  token"), where TRL adds it one position past it;
- "old", reference and training log-probs come from one kind of forward (`response_logprobs`: LM
  head on response positions only, fp32 log-softmax, the pad logit masked as in sampling), never
  from generation scores, which at Qwen's 151,936-token vocabulary are the largest tensor of a step;
- the critic has its own learning rate (`critic_learning_rate`) and a small fresh head, gradient
  checkpointing is really enabled on policy and critic, gradients are clipped at `max_grad_norm`
  on every backend, and `bf16: true` means bf16 autocast over fp32 master weights.

Every place that touches TRL internals is in this module; `tests/test_trl_contract.py` fails
loudly if the pinned trl release changes them.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo
from trl.experimental.utils import first_true_indices
from trl.models.utils import add_hooks, remove_hooks
from trl.trainer.utils import selective_log_softmax

from medrlvr_trl import run_logs
from medrlvr_trl.checkpoint import (
    check_checkpoint_shape,
    latest_checkpoint,
    load_checkpoint,
    refuse_unless_resuming,
    save_checkpoint,
)
from medrlvr_trl.configs import VerifierOptions
from medrlvr_trl.dynamics import CompletionFeatures, completion_features, stage_metrics
from medrlvr_trl.modeling import cast_saved_weights, gathered
from medrlvr_trl.optimizer_roles import RoleClippedZero, clip_by_role, restart_adam_state
from medrlvr_trl.preemption import PreemptionHandler
from medrlvr_trl.rewards import Gold, Verdict
from medrlvr_trl.rewards.reward_model import GoldTable, VerifierRewardModel
from medrlvr_trl.run_info import write_card_and_run_info
from medrlvr_trl.run_logs import COMPLETIONS_FILE, METRICS_FILE, completion_row

logger = logging.getLogger(__name__)

# Log-prob written into positions past the end of a response (they are masked out of every loss).
_MASKED_LOGPROB = trl_ppo.INVALID_LOGPROB
# How advantages are made: "gae" (PPO with a critic, TRL's) or "reinforce_pp_baseline" (no critic).
ADVANTAGE_ESTIMATORS = ("gae", "reinforce_pp_baseline")
# OpenRLHF clamps every per-token KL estimate to [-10, 10] (models/utils.py, compute_approx_kl); the
# reinforce_pp_baseline path follows it, the gae path keeps TRL's unclamped KL.
_KL_CLAMP = 10.0


@dataclass
class MedRLVRPPOConfig(VerifierOptions, PPOConfig):
    """TRL's `PPOConfig` plus the verifier, reward-term, logging and resume options (`VerifierOptions`).

    Batch sizes keep the usual Hugging Face meaning: `per_device_train_batch_size` is a micro-batch,
    `gradient_accumulation_steps` micro-batches make one optimizer step, and `num_mini_batches`
    optimizer steps make one pass over an update's rollouts. So each process samples
    `per_device_train_batch_size * gradient_accumulation_steps * num_mini_batches` responses per
    update. (TRL's own trainer counts rollouts as micro-batch x accumulation and then steps the
    optimizer only once per pass over the rollouts when `num_mini_batches > 1`.)
    """

    value_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Critic initialisation; defaults to the policy's base model."}
    )
    stop_token: str | None = field(default="eos", metadata={"help": "Stop generation at eos (TRL option)."})
    critic_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Critic's learning rate (its own parameter group); default: learning_rate."},
    )
    critic_warmup_updates: int = field(
        default=0, metadata={"help": "First N updates train the critic only (policy frozen)."}
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Rollouts each process decodes per generate call; default: all of them in one call. The "
            "scoring forwards still go in chunks of local_rollout_forward_batch_size."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={
            "help": "rollout_backend vllm on GPUs: the engine's share of each GPU (TRL's colocate default)."
        },
    )
    vllm_importance_sampling_cap: float | None = field(
        default=2.0,
        metadata={
            "help": "rollout_backend vllm: weight each token's policy loss by min(pi_old / pi_vllm, cap), the "
            "truncated importance sampling of Yao et al. 2025 ('Your efficient RL framework secretly brings you "
            "off-policy RL training'); cap 2 as veRL's documented setup (docs/advance/rollout_is.md: token "
            "level, truncate, rollout_is_threshold 2.0). None: off."
        },
    )
    value_head_init_std: float | None = field(
        default=None,
        metadata={
            "help": "Std of the critic's fresh score head; default 1/(hidden_size+1) (OpenRLHF), 0: zero."
        },
    )
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": "'gae': PPO with a critic (TRL's GAE). 'reinforce_pp_baseline': REINFORCE++-baseline as "
            "OpenRLHF's reinforce_baseline, no critic: each score minus the mean score of its prompt's "
            "num_samples_per_prompt responses, returns-to-go (gamma 1), whitened over all processes' tokens."
        },
    )
    num_samples_per_prompt: int = field(
        default=1,
        metadata={
            "help": "Responses sampled per prompt (OpenRLHF n_samples_per_prompt); counted in the batch sizes: "
            "each process samples per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches "
            "responses, that number / num_samples_per_prompt prompts. reinforce_pp_baseline needs at least 2."
        },
    )
    use_kl_loss: bool = field(
        default=False,
        metadata={
            "help": "KL to the reference as a loss term, kl_coef x the token mean of the kl_estimator estimate "
            "under the current policy (OpenRLHF --algo.kl.use_loss), instead of a per-token penalty in the "
            "reward (default, the paper's and OpenRLHF's default)."
        },
    )

    def __post_init__(self) -> None:
        # Every mistake here fails while the command line is parsed, before data or models load.
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"advantage_estimator: got {self.advantage_estimator!r}; choose one of "
                f"{', '.join(ADVANTAGE_ESTIMATORS)}"
            )
        n = self.num_samples_per_prompt
        if n < 1:
            raise ValueError(f"num_samples_per_prompt must be at least 1, got {n}")
        per_device = (
            self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches
        )
        if per_device % n:
            raise ValueError(
                f"each process samples {per_device} responses per update (per_device_train_batch_size x "
                f"gradient_accumulation_steps x num_mini_batches), not a multiple of num_samples_per_prompt {n}: "
                "every prompt's samples must sit on one process"
            )
        if not self.uses_critic:
            self._check_critic_free()
        super().__post_init__()

    @property
    def uses_critic(self) -> bool:
        return self.advantage_estimator == "gae"

    def _check_critic_free(self) -> None:
        name = self.advantage_estimator
        if self.num_samples_per_prompt < 2:
            raise ValueError(
                f"advantage_estimator {name} subtracts the mean score of each prompt's samples, so it needs "
                f"num_samples_per_prompt >= 2 (got {self.num_samples_per_prompt}: every advantage would be 0)"
            )
        critic_options = {
            "value_model_name_or_path": self.value_model_name_or_path is not None,
            "critic_learning_rate": self.critic_learning_rate is not None,
            "critic_warmup_updates": self.critic_warmup_updates > 0,
            "value_head_init_std": self.value_head_init_std is not None,
        }
        given = [option for option, set_ in critic_options.items() if set_]
        if given:
            raise ValueError(
                f"advantage_estimator {name} trains no critic; remove {', '.join(given)} (critic options)"
            )
        if self.gamma != 1.0:  # OpenRLHF forces gamma 1 for reinforce_baseline (experience_maker.py)
            raise ValueError(
                f"advantage_estimator {name} uses gamma 1 (undiscounted returns); got {self.gamma}"
            )
        if self.whiten_rewards:
            raise ValueError(
                f"advantage_estimator {name} whitens the advantages over the whole batch itself; set "
                "whiten_rewards false"
            )


@dataclass(frozen=True)
class BatchPlan:
    """How many rollouts, optimizer steps and updates a run makes; printed by `--dry_run`."""

    world_size: int
    samples_per_prompt: int
    prompts_per_device: int
    prompts_per_update: int
    rollouts_per_device: int
    rollouts_per_update: int
    mini_batch_per_device: int
    optimizer_steps_per_update: int
    total_episodes: int
    num_updates: int
    updates_per_epoch: float
    epochs: float  # prompts drawn in the run / training questions

    def describe(self) -> str:
        lines = [
            f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}" for k, v in asdict(self).items()
        ]
        lines.append(
            "  prompt order: one shuffle per epoch, read as one stream: every question once per epoch, an "
            "update that crosses an epoch's end takes its last questions and the next epoch's first"
        )
        return "\n".join(lines)


def plan_batches(args: MedRLVRPPOConfig, world_size: int, train_size: int) -> BatchPlan:
    """Batch arithmetic for a run, with clear errors for impossible combinations.

    A rollout (an episode) is one sampled response: each process samples `rollouts_per_device` of them,
    `num_samples_per_prompt` per prompt. `total_episodes` counts responses; without it the run draws
    `num_train_epochs` passes over the questions, so `num_train_epochs x questions x samples` responses.
    """
    samples = args.num_samples_per_prompt
    mini_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    per_device = mini_batch * args.num_mini_batches
    per_update = per_device * world_size
    prompts_per_device = per_device // samples  # the config checks that it divides
    prompts_per_update = prompts_per_device * world_size
    if train_size < prompts_per_update:
        raise ValueError(
            f"one update samples {prompts_per_update} prompts ({prompts_per_device} per process x {world_size} "
            f"processes) but the training set has only {train_size}; lower per_device_train_batch_size, "
            "gradient_accumulation_steps or num_mini_batches"
            + (", or raise num_samples_per_prompt" if samples > 1 else "")
        )
    episodes = (
        args.total_episodes
        if args.total_episodes is not None
        else int(args.num_train_epochs * train_size * samples)
    )
    num_updates = max(1, math.ceil(episodes / per_update))
    return BatchPlan(
        world_size=world_size,
        samples_per_prompt=samples,
        prompts_per_device=prompts_per_device,
        prompts_per_update=prompts_per_update,
        rollouts_per_device=per_device,
        rollouts_per_update=per_update,
        mini_batch_per_device=mini_batch,
        optimizer_steps_per_update=args.num_mini_batches * args.num_ppo_epochs,
        total_episodes=episodes,
        num_updates=num_updates,
        updates_per_epoch=train_size / prompts_per_update,
        epochs=num_updates * prompts_per_update / train_size,
    )


@dataclass
class TrainingProgress:
    """Counters restored on resume (registered with accelerate's checkpointing)."""

    update: int = 0
    episode: int = 0

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.update, self.episode = int(state["update"]), int(state["episode"])


@dataclass
class Rollouts:
    """One update's sampled data on this process; positions past a response's end are masked."""

    queries: torch.Tensor  # (B, Q) left-padded prompts
    responses: torch.Tensor  # (B, R) raw sampled tokens
    query_responses: torch.Tensor  # (B, Q + R)
    logprobs: torch.Tensor  # (B, R) under the sampling policy
    ref_logprobs: torch.Tensor  # (B, R) under the reference policy
    values: torch.Tensor | None  # (B, R) critic estimates; None without a critic (reinforce_pp_baseline)
    last_index: torch.Tensor  # (B,) index of each response's last token
    padding_mask: torch.Tensor  # (B, R) True past the last token
    hit_length_limit: torch.Tensor  # (B,) no stop token within response_length
    sampler_logprobs: torch.Tensor | None = None  # (B, R) vLLM's log-probs of what it sampled (vllm backend)
    is_weights: torch.Tensor | None = None  # (B, R) truncated importance weights pi_old / pi_vllm, or None
    texts: list[str] = field(default_factory=list)
    golds: list[Gold] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    features: list[CompletionFeatures] = field(default_factory=list)  # stage and hacking features
    term_values: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) per reward term, unweighted
    scores: torch.Tensor | None = None  # (B,)


def checkpoint_shape(args: MedRLVRPPOConfig) -> dict[str, Any]:
    """The settings that decide which models a checkpoint holds (with or without the critic)."""
    return {"advantage_estimator": args.advantage_estimator}


def checkpoint_to_resume(args: MedRLVRPPOConfig) -> Path | None:
    """The checkpoint this run continues from (`resume_from_checkpoint`, else the newest in output_dir),
    refused in one line if `resume` is off or it was saved with or without a critic unlike this run.
    Cheap, so the recipe calls it before anything loads and the trainer again before it loads state."""
    path = (
        Path(args.resume_from_checkpoint)
        if args.resume_from_checkpoint
        else latest_checkpoint(args.output_dir)
    )
    if path is None:
        return None
    refuse_unless_resuming(args.output_dir, path, resume=args.resume)
    check_checkpoint_shape(path, checkpoint_shape(args))
    return path


class MedRLVRPPOTrainer(PPOTrainer):
    """PPO whose reward is the rule-based verifier, with atomic checkpoints and resume."""

    def __init__(
        self,
        args: MedRLVRPPOConfig,
        processing_class: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        ref_model: PreTrainedModel | None,
        value_model: PreTrainedModel | None,
        train_dataset,
        gold: GoldTable,
        *,
        eval_dataset=None,
        peft_config=None,
        callbacks=None,
        epoch_prompts: Callable[[int], tuple[Dataset, GoldTable]] | None = None,
    ) -> None:
        """`epoch_prompts(epoch)`, when given, is each epoch's (prompts, gold): `shuffle_options` draws a
        new option order per epoch (`train_dataset` and `gold` are epoch 0's). `value_model` is the critic
        with `advantage_estimator: gae` and must be None otherwise."""
        if processing_class.pad_token_id == processing_class.eos_token_id:
            raise ValueError("pad and eos tokens must differ (response length is read at the first pad)")
        if args.uses_critic != (value_model is not None):
            raise ValueError(
                f"advantage_estimator {args.advantage_estimator}: "
                + (
                    "pass the critic as value_model"
                    if args.uses_critic
                    else "it has no critic: pass value_model=None"
                )
            )
        reward = VerifierRewardModel(
            processing_class, gold, mode=args.verifier_mode, values=args.reward_values()
        )
        if args.gradient_checkpointing:  # TRL's __init__ never turns it on
            kwargs = {"use_reentrant": False, **(args.gradient_checkpointing_kwargs or {})}
            for trainable in (model, value_model):
                if trainable is not None:
                    trainable.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        # TRL's __init__ sizes rollouts as micro-batch x accumulation; with one mini-batch that is
        # exactly our mini-batch, and `create_optimizer_and_scheduler` below sizes the schedule with
        # our own plan. Its whitening check is on that mini-batch, but we whiten over all of this
        # process's rollouts (checked below). The real values are restored right after.
        self._num_mini_batches = args.num_mini_batches
        whiten_rewards = args.whiten_rewards
        args.num_mini_batches, args.whiten_rewards = 1, False
        try:
            with _trl_construction_seams(args):
                super().__init__(
                    args=args,
                    processing_class=processing_class,
                    model=model,
                    ref_model=ref_model,
                    reward_model=reward,
                    train_dataset=train_dataset,
                    value_model=value_model,
                    eval_dataset=eval_dataset,
                    peft_config=peft_config,
                    callbacks=callbacks,
                )
        finally:
            args.num_mini_batches, args.whiten_rewards = self._num_mini_batches, whiten_rewards
        if self.is_peft_model and self.is_deepspeed_enabled:
            if _is_zero3(self.accelerator):
                raise ValueError(
                    "LoRA with ZeRO-3 is not supported (the adapter is merged at save); use ZeRO-2"
                )
        # Policy and critic are clipped apart, each at max_grad_norm (`optimizer_roles`).
        self._zero_clipping = (
            RoleClippedZero(self.model.optimizer, args.max_grad_norm) if self.is_deepspeed_enabled else None
        )
        logger.info(
            "clips gradients at %s, %s (%s)",
            args.max_grad_norm,
            "policy and critic each by its own norm" if args.uses_critic else "the policy's (no critic)",
            "DeepSpeed ZeRO optimizer" if self.is_deepspeed_enabled else "accelerate",
        )
        plan = self.plan
        args.local_batch_size = plan.rollouts_per_device
        args.batch_size = plan.rollouts_per_update
        args.local_mini_batch_size = plan.mini_batch_per_device
        args.mini_batch_size = plan.mini_batch_per_device * plan.world_size
        args.total_episodes = plan.total_episodes
        args.num_total_batches = plan.num_updates
        if args.whiten_rewards and plan.rollouts_per_device < 8:
            raise ValueError(
                f"whiten_rewards needs at least 8 rollouts per process to whiten over; one update samples "
                f"{plan.rollouts_per_device}: raise per_device_train_batch_size, gradient_accumulation_steps or "
                "num_mini_batches, or set whiten_rewards false"
            )
        if args.num_sample_generations > 0:  # TRL computed it from its one-mini-batch count
            self.sample_generations_freq = max(1, plan.num_updates // args.num_sample_generations)
        self.gold = gold
        self.reward_mix = args.reward_mix()
        self.stage_thresholds = args.stage_thresholds()
        self.progress = TrainingProgress()
        self.accelerator.register_for_checkpointing(self.lr_scheduler, self.progress)
        # The policy must never emit the pad token: response length is read at the first pad. Every
        # forward that scores responses masks the pad logit the same way (`response_logprobs`).
        self.generation_kwargs = {
            "max_new_tokens": args.response_length,
            "temperature": args.temperature + 1e-7,
            "top_k": 0,
            "top_p": 1.0,
            "do_sample": True,
            "suppress_tokens": [processing_class.pad_token_id],
        }
        self.generation_config = GenerationConfig(**self.generation_kwargs)
        self._epoch_cache: dict[int, tuple[Dataset, GoldTable | None, torch.Tensor]] = {}
        self._epoch_prompts = epoch_prompts
        self.sampler = self._vllm_sampler(model) if args.rollout_backend == "vllm" else None
        self._sampler_stale = (
            True  # weights are pushed before the first rollout, after each update and resume
        )

    def _vllm_sampler(self, policy: PreTrainedModel) -> Any:
        """The colocated vLLM engine, sized to the policy's vocabulary, seeded per process."""
        from medrlvr_trl.generation import VLLMSampler

        args, accelerator = self.args, self.accelerator
        sampler = VLLMSampler(
            policy.config._name_or_path,
            vocab_rows=policy.get_input_embeddings().num_embeddings,
            dtype="bfloat16" if args.bf16 else "float32",
            seed=args.seed + accelerator.process_index,
            max_model_len=min(
                args.max_prompt_length + args.response_length,
                getattr(policy.config, "max_position_embeddings", None) or 10**9,
            ),
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            world_size=accelerator.num_processes,
        )
        accelerator.wait_for_everyone()
        return sampler

    def _push_weights(self) -> None:
        """Push the policy's current weights to the vLLM engine: one parameter at a time (gathered under
        ZeRO-3), cast to the engine's dtype, LoRA merged for the push and unmerged after, names as in the
        Hugging Face checkpoint."""
        policy = self.accelerator.unwrap_model(self.model).policy
        tic = time.perf_counter()
        if self.is_peft_model:
            policy.merge_adapter()
        try:
            count = self.sampler.push_weights(_checkpoint_named_weights(policy))
        finally:
            if self.is_peft_model:
                policy.unmerge_adapter()
        self._sampler_stale = False
        logger.debug("pushed %d tensors to vLLM in %.2f s", count, time.perf_counter() - tic)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """One AdamW over policy and critic, the critic in its own parameter groups at `critic_learning_rate`.

        TRL trains both at the actor's rate (1e-6 in the paper config); OpenRLHF's critic default is
        9e-6. The scheduler scales every group by the same factor.
        """
        if self.optimizer is not None:
            return self.optimizer
        args, wrapper = self.args, self.model if model is None else model
        decay = set(self.get_decay_parameter_names(wrapper))
        critic_lr = args.critic_learning_rate if args.critic_learning_rate is not None else args.learning_rate
        groups = []
        for role, lr in (("policy", args.learning_rate), ("critic", critic_lr)):
            prefix = "policy." if role == "policy" else "value_model."
            named = [
                (n, p) for n, p in wrapper.named_parameters() if n.startswith(prefix) and p.requires_grad
            ]
            for decayed in (True, False):
                params = [p for n, p in named if (n in decay) == decayed]
                if params:
                    weight_decay = args.weight_decay if decayed else 0.0
                    groups.append({"params": params, "weight_decay": weight_decay, "lr": lr, "role": role})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(args, wrapper)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.plan = plan_batches(
            _with(self.args, num_mini_batches=self._num_mini_batches),
            self.accelerator.num_processes,
            self.train_dataset_len,
        )
        super().create_optimizer_and_scheduler(num_training_steps=self.plan.num_updates)

    # ------------------------------------------------------------------ data
    def _prompt_batch(self, update: int) -> torch.Tensor:
        """This process's prompts for `update` (1-based). Each epoch is one fixed shuffle of the training set
        (seed + epoch, so resume is exact), and the epochs are read as one stream: every question is seen
        once per epoch, and an update that crosses an epoch's end carries over into the next epoch. Each prompt
        appears `samples_per_prompt` times in a row (a prompt's samples stay together on one process)."""
        plan, size = self.plan, self.train_dataset_len
        rank = self.accelerator.process_index
        first = (update - 1) * plan.prompts_per_update + rank * plan.prompts_per_device
        positions = range(first, first + plan.prompts_per_device)
        epochs = sorted({positions[0] // size, positions[-1] // size})
        self._epoch_cache = {e: self._epoch_cache.get(e) or self._epoch_data(e) for e in epochs}
        if self._epoch_prompts is not None:  # the reward model reads this same table
            self.gold.replace_with(*(gold for _, gold, _ in self._epoch_cache.values()))
        rows = []
        for position in positions:
            epoch, index = divmod(position, size)
            dataset, _, order = self._epoch_cache[epoch]
            rows.append(dataset[int(order[index])])
        queries = self.data_collator(rows)["input_ids"].to(self.accelerator.device)
        return queries.repeat_interleave(plan.samples_per_prompt, dim=0)

    def _epoch_data(self, epoch: int) -> tuple[Dataset, GoldTable | None, torch.Tensor]:
        """One epoch's prompts, gold table (`shuffle_options`: that epoch's option orders) and row order."""
        dataset, gold = self.train_dataset, None
        if self._epoch_prompts is not None:
            dataset, gold = self._epoch_prompts(epoch)
        generator = torch.Generator().manual_seed(self.args.seed + epoch)
        return dataset, gold, torch.randperm(self.train_dataset_len, generator=generator)

    # --------------------------------------------------------------- rollout
    @torch.no_grad()
    def _rollout(self, queries: torch.Tensor) -> Rollouts:
        """Sample responses (`generation_batch_size` rows per generate call), then score them with the forwards
        training uses, `local_rollout_forward_batch_size` rows at a time: old log-probs and values from the
        policy/critic pair (no values without a critic), log-probs of the reference. Responses are padded to
        the longest on this process, not to `response_length`, so short answers cost short forwards."""
        args, pad, accelerator = self.args, self.processing_class.pad_token_id, self.accelerator
        chunk = args.local_rollout_forward_batch_size
        # Eval mode: checkpointed layers run plainly and generation keeps its KV cache, so checkpointing
        # never has to be switched off and back on (which would drop `gradient_checkpointing_kwargs`).
        self.model.eval()
        sampler_logprobs = None
        try:
            if self.sampler is not None:
                sampled, sampler_logprobs = self._sample_vllm(queries)
            else:
                sampled = self._sample_hf(queries)
            responses = _pad_right(sampled, pad, max(r.shape[1] for r in sampled))
            if self.stop_token_id is not None:
                responses = trl_ppo.truncate_response(self.stop_token_id, pad, responses)
            responses = responses[:, : max(1, int((responses != pad).sum(1).max()))]  # drop all-pad columns
            query_responses = torch.cat([queries, responses], dim=1)

            pair = accelerator.unwrap_model(self.model)
            logprobs, ref_logprobs, values = [], [], []
            for start in range(0, queries.shape[0], chunk):
                qr, resp = query_responses[start : start + chunk], responses[start : start + chunk]
                logits, chunk_values = pair(**_forward_inputs(qr, pad, resp.shape[1]))
                logprobs.append(response_logprobs(logits, resp, pad, args.temperature)[0])
                values.append(chunk_values)
                del logits
                ref_logprobs.append(self._reference_logprobs(qr, resp))
        finally:
            self.model.train()

        last_index = first_true_indices(responses == pad) - 1
        positions = torch.arange(responses.shape[1], device=responses.device)
        padding_mask = positions.unsqueeze(0) > last_index.unsqueeze(1)
        has_stop = (
            (responses == self.stop_token_id).any(dim=1)
            if self.stop_token_id is not None
            else torch.zeros_like(last_index, dtype=torch.bool)
        )
        old_logprobs = torch.cat(logprobs).masked_fill(padding_mask, _MASKED_LOGPROB)
        is_weights = None
        if sampler_logprobs is not None:
            sampler_logprobs = sampler_logprobs[:, : responses.shape[1]].masked_fill(
                padding_mask, _MASKED_LOGPROB
            )
            if args.vllm_importance_sampling_cap:
                ratio = (old_logprobs - sampler_logprobs).masked_fill(padding_mask, 0.0).exp()
                is_weights = ratio.clamp(max=args.vllm_importance_sampling_cap)
        return Rollouts(
            queries=queries,
            responses=responses,
            query_responses=query_responses,
            sampler_logprobs=sampler_logprobs,
            is_weights=is_weights,
            logprobs=old_logprobs,
            ref_logprobs=torch.cat(ref_logprobs).masked_fill(padding_mask, _MASKED_LOGPROB),
            values=torch.cat(values).float().masked_fill(padding_mask, 0.0)
            if self.args.uses_critic
            else None,
            last_index=last_index,
            padding_mask=padding_mask,
            hit_length_limit=~has_stop,
        )

    def _sample_hf(self, queries: torch.Tensor) -> list[torch.Tensor]:
        """Responses from transformers `generate` on the training policy, `generation_batch_size` rows a call."""
        args, accelerator = self.args, self.accelerator
        decode = args.generation_batch_size or queries.shape[0]
        with (
            _policy_for_generation(self.model, accelerator, gather=args.ds3_gather_for_generation) as policy,
            accelerator.autocast(),
            _without_model_generation_defaults(policy),
        ):
            return [
                self._generate(policy, queries[start : start + decode])
                for start in range(0, queries.shape[0], decode)
            ]

    def _sample_vllm(self, queries: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Responses sampled by the vLLM engine (fresh weights first), with the log-probs it sampled them at."""
        args, pad = self.args, self.processing_class.pad_token_id
        if self._sampler_stale:
            self._push_weights()
        tokens, logprobs = self.sampler.sample(
            [row[row != pad].tolist() for row in queries],
            max_tokens=args.response_length,
            temperature=args.temperature,
            stop_token_ids=[self.stop_token_id] if self.stop_token_id is not None else [],
            banned_token_ids=[pad],
        )
        self.sampler.sleep()
        width = max(1, max(len(t) for t in tokens))
        device = queries.device
        responses = torch.full((len(tokens), width), pad, dtype=torch.long, device=device)
        sampled_logprobs = torch.full(
            (len(tokens), width), _MASKED_LOGPROB, dtype=torch.float32, device=device
        )
        for row, (ids, lps) in enumerate(zip(tokens, logprobs, strict=True)):
            responses[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            sampled_logprobs[row, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
        return [responses], sampled_logprobs

    def _generate(self, policy: PreTrainedModel, queries: torch.Tensor) -> torch.Tensor:
        """Sampled response tokens for left-padded `queries` (no generation scores: they are never used)."""
        attention_mask = queries != self.processing_class.pad_token_id
        sequences = policy.generate(
            input_ids=queries.masked_fill(~attention_mask, 0),
            attention_mask=attention_mask,
            generation_config=self.generation_config,
        )
        return sequences[:, queries.shape[1] :]

    def _reference_logprobs(self, query_responses: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        pad = self.processing_class.pad_token_id
        inputs = _forward_inputs(query_responses, pad, responses.shape[1])
        with self.accelerator.autocast():  # the frozen reference computes in the policy's compute dtype
            if self.ref_model is None:  # LoRA: the reference is the policy with its adapter disabled
                with self.null_ref_context():
                    logits = self.accelerator.unwrap_model(self.model).policy(**inputs).logits
            else:
                logits = self.ref_model(**inputs).logits
        return response_logprobs(logits[:, :-1], responses, pad, self.args.temperature)[0]

    @contextmanager
    def null_ref_context(self):
        """The LoRA reference: the policy with its adapter off, reached through any DDP/DeepSpeed wrapper.

        TRL's version reads `self.model.policy`, which a DDP wrapper does not have.
        """
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.ref_adapter_name:
            policy.set_adapter(self.ref_adapter_name)
            try:
                yield
            finally:
                policy.set_adapter(self.model_adapter_name or "default")
        else:
            with policy.disable_adapter():
                yield

    # ----------------------------------------------------------------- score
    def _score(self, rollouts: Rollouts) -> None:
        reward_model: VerifierRewardModel = getattr(self.reward_model, "module", self.reward_model)
        rollouts.texts, rollouts.verdicts = reward_model.judge(rollouts.queries, rollouts.responses)
        rollouts.golds = [self.gold.lookup(query) for query in rollouts.queries]
        mix, device = self.reward_mix, rollouts.queries.device
        judged = list(zip(rollouts.texts, rollouts.golds, rollouts.verdicts, strict=True))
        values = [mix.term_values(text, gold, verdict) for text, gold, verdict in judged]
        rollouts.term_values = {
            name: torch.tensor([v[name] for v in values], device=device) for name in mix.names
        }
        rollouts.features = [
            completion_features(text, verdict, options=gold.options, thresholds=self.stage_thresholds)
            for text, gold, verdict in judged
        ]
        scores = torch.tensor([mix.total(row) for row in values], dtype=torch.float32, device=device)
        if self.args.missing_eos_penalty is not None:
            scores = scores - self.args.missing_eos_penalty * rollouts.hit_length_limit.float()
        rollouts.scores = scores

    # ------------------------------------------------------------ advantages
    def _advantages(self, rollouts: Rollouts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token rewards (KL penalty + score on the last token), GAE advantages and returns, and the
        per-token KL estimate; REINFORCE++-baseline's instead with `advantage_estimator: reinforce_pp_baseline`."""
        args = self.args
        if not args.uses_critic:
            return self._reinforce_pp_baseline_advantages(rollouts)
        log_ratio = rollouts.logprobs - rollouts.ref_logprobs  # zero past the end (both masked alike)
        kl = kl_estimate(log_ratio, args.kl_estimator)
        rewards = torch.zeros_like(kl) if args.use_kl_loss else -args.kl_coef * kl
        rows = torch.arange(rewards.shape[0], device=rewards.device)
        rewards[rows, rollouts.last_index.clamp(min=0)] += rollouts.scores
        valid = ~rollouts.padding_mask
        if args.whiten_rewards:
            rewards = trl_ppo.masked_whiten(rewards, valid, shift_mean=False).masked_fill(
                rollouts.padding_mask, 0
            )

        advantages = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[:, 0])
        values = rollouts.values
        length = rewards.shape[1]
        for t in reversed(range(length)):
            next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
            delta = rewards[:, t] + args.gamma * next_value - values[:, t]
            running = delta + args.gamma * args.lam * running
            advantages[:, t] = running
        returns = advantages + values
        advantages = trl_ppo.masked_whiten(advantages, valid).masked_fill(rollouts.padding_mask, 0)
        return advantages, returns, kl

    def _reinforce_pp_baseline_advantages(
        self, rollouts: Rollouts
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """REINFORCE++-baseline: `reinforce_pp_baseline_advantages` on this process's rollouts, whitened with
        the mean and variance of every process's tokens."""
        return reinforce_pp_baseline_advantages(
            rollouts.scores,
            rollouts.logprobs,
            rollouts.ref_logprobs,
            rollouts.last_index,
            rollouts.padding_mask,
            samples_per_prompt=self.args.num_samples_per_prompt,
            kl_coef=0.0 if self.args.use_kl_loss else self.args.kl_coef,
            kl_estimator=self.args.kl_estimator,
            gather=self.accelerator.gather,
        )

    # ---------------------------------------------------------------- update
    def _update(
        self, rollouts: Rollouts, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, float]:
        args, model, accelerator = self.args, self.model, self.accelerator
        pad = self.processing_class.pad_token_id
        micro, mini = args.per_device_train_batch_size, self.plan.mini_batch_per_device
        stats: dict[str, list[torch.Tensor]] = {}
        if (
            self._critic_warmup()
        ):  # lr 0 too, so weight decay cannot move it (the scheduler's step restores lr)
            for group in self.optimizer.param_groups:
                if group.get("role") == "policy":
                    group["lr"] = 0.0
        elif args.critic_warmup_updates > 0 and self.progress.update == args.critic_warmup_updates:
            # The policy's first real step: Adam must not carry the step count of its zero-gradient steps.
            restart_adam_state(self.optimizer, "policy")
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(self.plan.rollouts_per_device, device=advantages.device)
            for mini_start in range(0, self.plan.rollouts_per_device, mini):
                for micro_start in range(mini_start, mini_start + mini, micro):
                    idx = order[micro_start : micro_start + micro]
                    with accelerator.accumulate(model):
                        step_stats = self._micro_step(rollouts, idx, advantages[idx], returns[idx], pad)
                    for key, value in step_stats.items():
                        stats.setdefault(key, []).append(value)
        return {key: torch.stack(values).float().mean() for key, values in stats.items()}

    def _micro_step(
        self,
        rollouts: Rollouts,
        idx: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        pad: int,
    ) -> dict[str, torch.Tensor]:
        args = self.args
        mask = rollouts.padding_mask[idx]
        valid = ~mask
        old_logprobs = rollouts.logprobs[idx]
        responses = rollouts.responses[idx]
        logits, new_values = self.model(
            **_forward_inputs(rollouts.query_responses[idx], pad, responses.shape[1])
        )
        new_logprobs, logits = response_logprobs(logits, responses, pad, args.temperature)
        new_logprobs = new_logprobs.masked_fill(mask, _MASKED_LOGPROB)
        critic_stats: dict[str, torch.Tensor] = {}
        loss = torch.zeros((), device=new_logprobs.device)
        if new_values is not None:
            old_values = rollouts.values[idx]
            new_values = new_values.float().masked_fill(mask, 0.0)
            clipped_values = old_values + (new_values - old_values).clamp(
                -args.cliprange_value, args.cliprange_value
            )
            value_losses = torch.maximum((new_values - returns) ** 2, (clipped_values - returns) ** 2)
            value_loss = 0.5 * trl_ppo.masked_mean(value_losses, valid)
            loss = args.vf_coef * value_loss
            with torch.no_grad():
                critic_stats = {
                    "loss/value_avg": value_loss.detach(),
                    "val/clipfrac_avg": trl_ppo.masked_mean(
                        ((clipped_values - returns) ** 2 > (new_values - returns) ** 2).float(), valid
                    ),
                }
        # zero gradients, not none, during critic warmup: DDP needs them all
        policy_weight = 0.0 if self._critic_warmup() else 1.0
        if args.use_kl_loss:
            # OpenRLHF --algo.kl.use_loss: kl_coef x token mean of the estimate, under pi_theta
            kl = kl_estimate(new_logprobs - rollouts.ref_logprobs[idx], args.kl_estimator)
            kl_loss = trl_ppo.masked_mean(kl.clamp(-_KL_CLAMP, _KL_CLAMP), valid)
            loss = loss + policy_weight * args.kl_coef * kl_loss
            critic_stats["loss/kl_avg"] = kl_loss.detach()

        log_ratio = new_logprobs - old_logprobs
        ratio = log_ratio.exp()
        clipped_ratio = ratio.clamp(1.0 - args.cliprange, 1.0 + args.cliprange)
        unclipped_losses, clipped_losses = -advantages * ratio, -advantages * clipped_ratio
        policy_losses = torch.maximum(unclipped_losses, clipped_losses)
        if rollouts.is_weights is not None:  # truncated importance sampling: vLLM sampled, not pi_old
            policy_losses = policy_losses * rollouts.is_weights[idx]
        policy_loss = trl_ppo.masked_mean(policy_losses, valid)

        self.accelerator.backward(policy_weight * policy_loss + loss)
        grad_norms: dict[str, float] = {}
        if self.accelerator.sync_gradients:  # DeepSpeed clipped (and stepped) inside backward
            if self._zero_clipping is not None:
                grad_norms = self._zero_clipping.last_norms
            else:
                self.accelerator.unscale_gradients()
                grad_norms = clip_by_role(self.optimizer.param_groups, args.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            token_entropy = torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)
            return {
                "loss/policy_avg": policy_loss.detach(),
                "policy/approxkl_avg": 0.5 * trl_ppo.masked_mean(log_ratio**2, valid),
                "policy/clipfrac_avg": trl_ppo.masked_mean(
                    (clipped_losses > unclipped_losses).float(), valid
                ),
                "policy/entropy_avg": trl_ppo.masked_mean(token_entropy, valid),
                **critic_stats,
                "val/ratio": trl_ppo.masked_mean(ratio, valid),  # TRL's name for the policy's mean ratio
                **{f"{role}/grad_norm": torch.as_tensor(norm) for role, norm in grad_norms.items()},
            }

    def _critic_warmup(self) -> bool:
        """True during the first `critic_warmup_updates` updates, when only the critic trains."""
        return self.progress.update < self.args.critic_warmup_updates

    # ------------------------------------------------------------- main loop
    def train(self, preemption: PreemptionHandler | None = None) -> None:
        """Run the remaining updates; after a stop signal (`preemption`) end with the current one, saved."""
        args, accelerator, plan = self.args, self.accelerator, self.plan
        self._resume_if_possible()
        self.state.max_steps = plan.num_updates
        self.state.global_step = self.progress.update
        self.state.episode = self.progress.episode
        self.state.num_train_epochs = plan.total_episodes / plan.samples_per_prompt / self.train_dataset_len
        self.state.logging_steps = 1
        self.state.save_steps = _absolute_steps(args.save_steps, plan.num_updates)
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if self.is_deepspeed_enabled:  # names TRL/transformers helpers expect
            self.deepspeed = self.model_wrapped = self.model
        logger.info(
            "PPO (%s): %d updates of %d rollouts\n%s",
            "GAE, critic" if args.uses_critic else f"{args.advantage_estimator}, no critic",
            plan.num_updates,
            plan.rollouts_per_update,
            plan.describe(),
        )
        self.model.train()
        start = time.perf_counter()

        for update in range(self.progress.update + 1, plan.num_updates + 1):
            tic = time.perf_counter()
            rollouts = self._rollout(self._prompt_batch(update))
            self._score(rollouts)
            advantages, returns, kl = self._advantages(rollouts)
            update_stats = self._update(rollouts, advantages, returns)
            self._sampler_stale = True
            self.lr_scheduler.step()

            self.progress.update = update
            self.progress.episode += plan.rollouts_per_update
            self.state.global_step, self.state.episode = update, self.progress.episode
            self.state.epoch = self.progress.episode / plan.samples_per_prompt / self.train_dataset_len
            metrics = self._metrics(rollouts, kl, update_stats)
            metrics["time/update_s"] = time.perf_counter() - tic
            metrics["eps"] = self.progress.episode / max(time.perf_counter() - start, 1e-9)
            self._write_logs(update, rollouts, metrics)
            self.log(metrics)
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            stop = preemption is not None and preemption.should_stop(accelerator)  # same on every rank
            if stop or update % self.state.save_steps == 0 or update == plan.num_updates:
                save_checkpoint(
                    accelerator,
                    args.output_dir,
                    update,
                    keep=args.save_total_limit,
                    shape=checkpoint_shape(args),
                )
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if stop:
                break
            if args.num_sample_generations > 0 and (update - 1) % self.sample_generations_freq == 0:
                self.generate_completions(sampling=True)
            del rollouts, advantages, returns, kl
            trl_ppo.empty_cache()

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)

    def _resume_if_possible(self) -> None:
        args = self.args
        path = checkpoint_to_resume(args)
        if path is None:
            return
        load_checkpoint(self.accelerator, path)
        if self.accelerator.is_main_process:
            for name in (METRICS_FILE, COMPLETIONS_FILE):
                run_logs.truncate_after(Path(args.output_dir) / name, self.progress.update)
        logger.info("resuming at update %d of %d", self.progress.update, self.plan.num_updates)

    def _metrics(
        self, rollouts: Rollouts, kl: torch.Tensor, update_stats: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """TRL's PPO metrics plus the verifier's, averaged over all processes."""
        args, gather = self.args, self.accelerator.gather_for_metrics
        verdicts = rollouts.verdicts
        device = kl.device
        response_tokens = (rollouts.last_index + 1).float()
        local = {
            "objective/kl": kl.sum(1).mean(),
            "objective/entropy": (-rollouts.logprobs).masked_fill(rollouts.padding_mask, 0).sum(1).mean(),
            # the KL part of the reward; none when the KL is a loss term (use_kl_loss)
            "objective/non_score_reward": (torch.zeros_like(kl) if args.use_kl_loss else -args.kl_coef * kl)
            .sum(1)
            .mean(),
            "objective/scores": rollouts.scores.mean(),
            "verifier/reward": torch.tensor([v.reward for v in verdicts], device=device).mean(),
            "verifier/format_ok": torch.tensor([v.format_ok for v in verdicts], device=device).float().mean(),
            "verifier/accuracy": torch.tensor([v.correct for v in verdicts], device=device).float().mean(),
            "verifier/response_length": response_tokens.mean(),
            "verifier/hit_length_limit": rollouts.hit_length_limit.float().mean(),
            **{f"reward/{name}": values.float().mean() for name, values in rollouts.term_values.items()},
            **update_stats,
        }
        metrics = {key: gather(value.float().reshape(1)).mean().item() for key, value in local.items()}
        # The rollout's values before the update: a zero head shows exactly 0 at update 1 on every backend.
        valid = ~rollouts.padding_mask
        if rollouts.values is not None:
            values = rollouts.values[valid]
            metrics["critic/values_mean"] = _token_mean_and_max(values, gather)[0]
            metrics["critic/values_abs_max"] = _token_mean_and_max(values.abs(), gather)[1]
        if rollouts.sampler_logprobs is not None:  # sampler vs trainer on the tokens vLLM sampled
            gap = (rollouts.logprobs - rollouts.sampler_logprobs).abs()[valid]
            metrics["rollout/logprob_gap_mean"], metrics["rollout/logprob_gap_max"] = _token_mean_and_max(
                gap, gather
            )
        metrics.update(stage_metrics(gather_object(rollouts.features)))  # stage shares, leak and prefix rates
        metrics["objective/rlhf_reward"] = metrics["objective/scores"] + metrics["objective/non_score_reward"]
        metrics["lr"] = self.lr_scheduler.get_last_lr()[0]
        metrics["episode"] = self.progress.episode
        metrics["update"] = self.progress.update
        return metrics

    def _write_logs(self, update: int, rollouts: Rollouts, metrics: dict[str, Any]) -> None:
        """Metrics every update; sampled completions with their verdicts every `log_completions_steps`."""
        out = Path(self.args.output_dir)
        every = self.args.log_completions_steps
        rows = None
        if every > 0 and update % every == 0:
            local = [
                completion_row(update, gold, text, int(n) + 1, verdict, score, features)
                for gold, text, n, verdict, score, features in zip(
                    rollouts.golds, rollouts.texts, rollouts.last_index.tolist(), rollouts.verdicts,
                    rollouts.scores.tolist(), rollouts.features, strict=True,
                )
            ]  # fmt: skip
            rows = gather_object(local)
        if self.accelerator.is_main_process:
            run_logs.append_rows(out / METRICS_FILE, [metrics])
            if rows is not None:
                run_logs.append_rows(out / COMPLETIONS_FILE, rows)

    # ----------------------------------------------------------- final save
    def save_final_model(
        self, output_dir: str | None = None, *, model_card: dict[str, Any] | None = None
    ) -> Path:
        """Save the trained policy unwrapped (DDP, ZeRO-2/3, LoRA merged) with tokenizer and model card.

        Files are written to a staging folder and moved into `output_dir` one by one, config last, so
        a reader never sees a config that points at half-written weights.
        """
        accelerator = self.accelerator
        out = Path(output_dir or self.args.output_dir)
        state = accelerator.get_state_dict(self.model)  # every rank must take part under ZeRO-3
        if accelerator.is_main_process:
            staging = out / ".final-model.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            policy = accelerator.unwrap_model(self.model).policy
            if self.is_peft_model:
                policy.merge_and_unload().save_pretrained(staging)
            else:
                prefix = "policy."
                policy_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                policy.save_pretrained(staging, state_dict=policy_state)
            cast_saved_weights(staging, self.args.final_model_dtype)
            self.processing_class.save_pretrained(staging)
            estimator = self.args.advantage_estimator
            info = {"kind": "ppo", "prompt_template": "r1", "answer_mode": "cot",
                    "advantage_estimator": estimator, **(model_card or {})}  # fmt: skip
            write_card_and_run_info(
                staging,
                "Med-RLVR PPO policy"
                if self.args.uses_critic
                else f"Med-RLVR PPO policy ({estimator}, no critic)",
                "Trained with medrlvr-trl: PPO whose reward is a rule-based verifier.",
                info,
            )
            names = sorted(p.name for p in staging.iterdir())
            for name in sorted(names, key=lambda n: n == "config.json"):
                os.replace(staging / name, out / name)
            staging.rmdir()
            logger.info("saved final policy to %s", out)
        accelerator.wait_for_everyone()
        return out

    # ------------------------------------------------- TRL's sample printing
    def generate_completions(self, sampling: bool = False) -> None:
        """TRL's sample table, scored by the verifier through the reward seam."""
        with _verifier_reward_seam():
            super().generate_completions(sampling=sampling)


def response_logprobs(
    logits: torch.Tensor, responses: torch.Tensor, pad_token_id: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `responses` under `logits` (B, R, V), and the fp32 logits they came from.

    The same transform for sampling-time ("old"), reference and training log-probs: divide by the
    sampling temperature, give pad the lowest logit (sampling suppresses it, so the distribution
    it was drawn from excludes it), fp32 log-softmax. Scaled in place: from bf16 logits that is 6 bytes per
    element (the fp32 copy) instead of 10, from fp32 ones no copy at all (nothing else reads `logits`, and
    the LM head's backward does not need its output).
    """
    scaled = logits.float().div_(temperature + 1e-7)
    scaled[..., pad_token_id] = torch.finfo(scaled.dtype).min
    return selective_log_softmax(scaled, responses), scaled


def kl_estimate(log_ratio: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log(pi / pi_ref): Schulman's k1 (the log ratio itself) or k3
    (exp(-r) - 1 + r, never negative), as TRL's PPO and OpenRLHF compute them."""
    return log_ratio if estimator == "k1" else (-log_ratio).exp() - 1 + log_ratio


def reinforce_pp_baseline_advantages(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    last_index: torch.Tensor,
    padding_mask: torch.Tensor,
    *,
    samples_per_prompt: int,
    kl_coef: float,
    kl_estimator: str,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline's advantages, made as OpenRLHF makes its `reinforce_baseline` ones.

    Rows come in groups of `samples_per_prompt`, one prompt's samples each. Our words for OpenRLHF's steps
    (openrlhf/trainer/ppo_utils/experience_maker.py, `compute_advantages_and_returns`, at commit 3c3be623;
    the estimator came in with e37ff6ea, "reinforce++_baseline (#730)", Feb 2025):

    1. baseline: a sample's score minus the mean score of its prompt's samples (no division by the group's
       std: that is GRPO's `group_norm`; e37ff6ea's comment: "/ std is not needed in RL variance reduction
       theory");
    2. per-token reward: that shaped score on the last response token, and -kl_coef x the per-token KL
       estimate on every token, the estimate clamped to [-10, 10] (openrlhf/models/utils.py,
       `compute_reward`, `compute_approx_kl`); `kl_coef` 0 when the KL is a loss term instead;
    3. advantages = returns-to-go, undiscounted (`get_cumulative_returns`; gamma is forced to 1);
    4. whitening over the whole batch: (A - mean) / sqrt(max(var, 1e-8)), the mean and the (population)
       variance taken over the response tokens of every process (`gather`, e.g. `accelerator.gather`;
       None: this process alone), as OpenRLHF normalises over all its experiences.

    Returns (advantages, returns, kl), each (B, R), zero past each response's end.
    """
    kl = kl_estimate(logprobs - ref_logprobs, kl_estimator).clamp(-_KL_CLAMP, _KL_CLAMP)
    kl = kl.masked_fill(padding_mask, 0.0)
    groups = scores.float().reshape(-1, samples_per_prompt)
    shaped = (groups - groups.mean(dim=1, keepdim=True)).reshape(-1)
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_index.clamp(min=0)] += shaped
    returns = rewards.flip(1).cumsum(1).flip(1).masked_fill(padding_mask, 0.0)
    return whiten_over_processes(returns, ~padding_mask, gather), returns, kl


def whiten_over_processes(
    values: torch.Tensor, mask: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """(values - mean) / std over the positions where `mask` is True on every process (one gather of sum,
    sum of squares and count, in float64), the variance floored at 1e-8; zero where `mask` is False."""
    weight = mask.to(torch.float64)
    masked = values.to(torch.float64) * weight
    local = torch.stack([masked.sum(), (masked * masked).sum(), weight.sum()])
    total = gather(local.reshape(1, 3)).sum(0) if gather is not None else local
    count = total[2].clamp(min=1.0)
    mean = total[0] / count
    variance = total[1] / count - mean * mean
    whitened = (values.to(torch.float64) - mean) * variance.clamp(min=1e-8).rsqrt()
    return whitened.masked_fill(~mask, 0.0).to(values.dtype)


def _forward_inputs(query_responses: torch.Tensor, pad_token_id: int, response_length: int) -> dict[str, Any]:
    """Model inputs for left-padded prompt + response rows: pad masked, positions counted from the first
    real token, logits for the positions that predict response tokens only."""
    attention_mask = query_responses != pad_token_id
    return {
        "input_ids": query_responses.masked_fill(~attention_mask, 0),
        "attention_mask": attention_mask,
        "position_ids": attention_mask.cumsum(1) - attention_mask.long(),
        "logits_to_keep": response_length + 1,
        "use_cache": False,
    }


def _pad_right(rows: list[torch.Tensor], pad_token_id: int, width: int) -> torch.Tensor:
    """Stack response chunks of different lengths into one (B, width) tensor, padded on the right."""
    out = rows[0].new_full((sum(r.shape[0] for r in rows), width), pad_token_id)
    start = 0
    for row in rows:
        out[start : start + row.shape[0], : row.shape[1]] = row
        start += row.shape[0]
    return out


class PolicyAndCritic(trl_ppo.PolicyAndValueWrapper):
    """TRL's policy + critic pair, whose forward returns logits and values at response positions only.

    TRL's forward builds logits and critic hidden states for every prompt position too; at a 151,936
    vocabulary the prompt's logits alone are as large as the response's. Without a critic
    (`value_model` None: reinforce_pp_baseline) it holds the policy alone and returns no values.
    """

    def __init__(self, policy: PreTrainedModel, value_model: PreTrainedModel | None) -> None:
        if value_model is not None:
            super().__init__(policy, value_model)
            return
        # TRL's __init__ reads the critic's backbone: the same fields, no critic
        torch.nn.Module.__init__(self)
        self.policy = policy
        self.value_model = self.critic_backbone = None
        self.is_gradient_checkpointing = policy.is_gradient_checkpointing

    def forward(self, *, logits_to_keep: int, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.policy(**inputs, logits_to_keep=logits_to_keep).logits[:, :-1]
        if self.value_model is None:
            return logits, None
        hidden = self.critic_backbone(**inputs).last_hidden_state[:, -logits_to_keep:-1]
        return logits, self.value_model.score(hidden).squeeze(-1)


@contextmanager
def _trl_construction_seams(args: MedRLVRPPOConfig):
    """While TRL's `__init__` runs: our policy/critic pair, and an Accelerator that follows the config.

    TRL builds `Accelerator()` from the launcher's environment only, so `bf16: true` without a bf16
    launch config trained in fp32 and `max_grad_norm` was ignored; DeepSpeed clipped at accelerate's 1.0.
    """

    def make_accelerator(**kwargs: Any) -> Accelerator:
        accelerator = Accelerator(mixed_precision=args.mixed_precision, **kwargs)
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if plugin is not None:
            plugin.deepspeed_config["gradient_clipping"] = args.max_grad_norm
        return accelerator

    originals = trl_ppo.Accelerator, trl_ppo.PolicyAndValueWrapper
    trl_ppo.Accelerator, trl_ppo.PolicyAndValueWrapper = make_accelerator, PolicyAndCritic
    try:
        yield
    finally:
        trl_ppo.Accelerator, trl_ppo.PolicyAndValueWrapper = originals


@contextmanager
def _policy_for_generation(model: Any, accelerator: Accelerator, *, gather: bool):
    """The policy to sample from. Under ZeRO-3 with `gather` (`ds3_gather_for_generation`) only the
    policy's parameters are gathered, not the critic's (TRL's `unwrap_model_for_generation` gathers the
    whole policy + critic engine), and DeepSpeed's fetch hooks are off while it decodes."""
    policy = accelerator.unwrap_model(model).policy
    if not (gather and _is_zero3(accelerator)):
        yield policy
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(policy.parameters())):
        remove_hooks(model)
        try:
            yield policy
        finally:
            add_hooks(model)


def _token_mean_and_max(values: torch.Tensor, gather: Callable) -> tuple[float, float]:
    """Mean over every process's tokens (not a mean of per-process means) and the largest value."""
    count = torch.tensor(float(values.numel()), device=values.device)
    total, tokens = gather(torch.stack([values.sum(), count]).reshape(1, 2)).sum(0)
    local_max = values.max() if values.numel() else torch.zeros((), device=values.device)
    return (total / tokens.clamp(min=1)).item(), gather(local_max.reshape(1)).max().item()


def _checkpoint_named_weights(policy: PreTrainedModel):
    """(name, tensor) for every policy parameter, named as in its Hugging Face checkpoint, one at a time: under
    ZeRO-3 each is gathered while it is copied out. A PEFT model gives its (merged) base weights, no adapters."""
    peft = hasattr(policy, "get_base_model")
    for name, param in policy.named_parameters():
        if peft:
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        with gathered([param]):
            yield name, param.detach()


def _is_zero3(accelerator: Accelerator) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


@contextmanager
def _without_model_generation_defaults(model: PreTrainedModel):
    """Sample with our generation config alone: transformers 5 fills every unset field from the model's
    own `generation_config` (a checkpoint's `repetition_penalty`, say), which would make the sampling
    distribution differ from the one the old log-probs describe."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = target.generation_config
    target.generation_config = GenerationConfig(
        bos_token_id=original.bos_token_id,
        eos_token_id=original.eos_token_id,
        pad_token_id=original.pad_token_id,
    )
    try:
        yield
    finally:
        target.generation_config = original


def _absolute_steps(value: float, total: int) -> int:
    steps = math.ceil(total * value) if value < 1 else int(value)
    return max(1, steps)


def _with(args: MedRLVRPPOConfig, **changes: Any) -> MedRLVRPPOConfig:
    """A shallow copy of a config with some fields changed (dataclasses.replace re-runs __post_init__)."""
    copy = object.__new__(type(args))
    copy.__dict__.update(args.__dict__, **changes)
    return copy


@contextmanager
def _verifier_reward_seam():
    """Route TRL's module-level `get_reward` to the verifier for our reward module, unchanged otherwise."""
    original = trl_ppo.get_reward

    def dispatch(model, query_responses, pad_token_id, context_length):
        target = getattr(model, "module", model)
        if not isinstance(target, VerifierRewardModel):
            return original(model, query_responses, pad_token_id, context_length)
        queries, responses = query_responses[:, :context_length], query_responses[:, context_length:]
        last = first_true_indices(responses == pad_token_id) - 1 + context_length
        return None, target.scores(queries, responses), last

    trl_ppo.get_reward = dispatch
    try:
        yield
    finally:
        trl_ppo.get_reward = original
