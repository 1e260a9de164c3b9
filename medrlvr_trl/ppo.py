"""PPO with the verifiable reward: `MedRLVRPPOTrainer`, a subclass of TRL's (1.12.0) PPO trainer.

TRL's `__init__` builds everything we need (accelerator, policy+value wrapper, optimizer,
scheduler, reference model, DeepSpeed wrapping) and is reused as is. Its `train()` cannot
resume (TRL issue 2657) and scores with a neural reward model, so `train()` is written here, in
four readable steps per update:

    rollout     sample responses; log-probs under policy and reference; critic values
    score       decode and verify every response against its prompt's gold answer
    advantages  per-token KL penalty + verifier score on the last response token, GAE, whitening
    update      clipped policy loss + clipped value loss over mini-batches, `num_ppo_epochs` times

The loss, GAE and KL terms are those of TRL's trainer (so results stay comparable), with one
deliberate change: the verifier score is added on the last response token (the paper's
"r_verifier at the last token"), where TRL adds it one position past it.

Every place that touches TRL internals is in this module; `tests/test_trl_contract.py` fails
loudly if the pinned trl release changes them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo
from trl.experimental.utils import first_true_indices, get_reward
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import selective_log_softmax

from medrlvr_trl import runlog
from medrlvr_trl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from medrlvr_trl.dynamics import CompletionFeatures, completion_features, summarise
from medrlvr_trl.recipe_setup import model_card_text
from medrlvr_trl.rewards import Verdict
from medrlvr_trl.runlog import COMPLETIONS_FILE, METRICS_FILE
from medrlvr_trl.verifier_options import VerifierOptions
from medrlvr_trl.verifier_reward import Gold, GoldTable, VerifierRewardModel

logger = logging.getLogger(__name__)

# Log-prob written into positions past the end of a response (they are masked out of every loss).
_MASKED_LOGPROB = trl_ppo.INVALID_LOGPROB


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


@dataclass(frozen=True)
class BatchPlan:
    """How many rollouts, optimizer steps and updates a run makes; printed by `--dry_run`."""

    world_size: int
    rollouts_per_device: int
    rollouts_per_update: int
    mini_batch_per_device: int
    optimizer_steps_per_update: int
    total_episodes: int
    num_updates: int
    updates_per_epoch: int

    def describe(self) -> str:
        return "\n".join(f"  {k}: {v}" for k, v in asdict(self).items())


def plan_batches(args: MedRLVRPPOConfig, world_size: int, train_size: int) -> BatchPlan:
    """Batch arithmetic for a run, with clear errors for impossible combinations."""
    mini_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
    per_device = mini_batch * args.num_mini_batches
    per_update = per_device * world_size
    if train_size < per_update:
        raise ValueError(
            f"one update samples {per_update} prompts ({per_device} per process x {world_size} processes) but the "
            f"training set has only {train_size}; lower per_device_train_batch_size, gradient_accumulation_steps or "
            "num_mini_batches"
        )
    episodes = (
        args.total_episodes if args.total_episodes is not None else int(args.num_train_epochs * train_size)
    )
    return BatchPlan(
        world_size=world_size,
        rollouts_per_device=per_device,
        rollouts_per_update=per_update,
        mini_batch_per_device=mini_batch,
        optimizer_steps_per_update=args.num_mini_batches * args.num_ppo_epochs,
        total_episodes=episodes,
        num_updates=max(1, math.ceil(episodes / per_update)),
        updates_per_epoch=train_size // per_update,
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
    values: torch.Tensor  # (B, R) critic estimates
    last_index: torch.Tensor  # (B,) index of each response's last token
    padding_mask: torch.Tensor  # (B, R) True past the last token
    hit_length_limit: torch.Tensor  # (B,) no stop token within response_length
    texts: list[str] = field(default_factory=list)
    golds: list[Gold] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    features: list[CompletionFeatures] = field(default_factory=list)  # stage and hacking features
    term_values: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) per reward term, unweighted
    scores: torch.Tensor | None = None  # (B,)


class MedRLVRPPOTrainer(PPOTrainer):
    """PPO whose reward is the rule-based verifier, with atomic checkpoints and resume."""

    def __init__(
        self,
        args: MedRLVRPPOConfig,
        processing_class: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        ref_model: PreTrainedModel | None,
        value_model: PreTrainedModel,
        train_dataset,
        gold: GoldTable,
        *,
        eval_dataset=None,
        peft_config=None,
        callbacks=None,
    ) -> None:
        if processing_class.pad_token_id == processing_class.eos_token_id:
            raise ValueError("pad and eos tokens must differ (response length is read at the first pad)")
        reward = VerifierRewardModel(
            processing_class, gold, mode=args.verifier_mode, values=args.reward_values()
        )
        # TRL's __init__ sizes rollouts as micro-batch x accumulation; with one mini-batch that is
        # exactly our mini-batch, and `create_optimizer_and_scheduler` below sizes the schedule with
        # our own plan. The real value is restored right after.
        self._num_mini_batches = args.num_mini_batches
        args.num_mini_batches = 1
        try:
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
            args.num_mini_batches = self._num_mini_batches
        if self.is_peft_model and self.is_deepspeed_enabled:
            if self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise ValueError(
                    "LoRA with ZeRO-3 is not supported (the adapter is merged at save); use ZeRO-2"
                )
        plan = self.plan
        args.local_batch_size = plan.rollouts_per_device
        args.batch_size = plan.rollouts_per_update
        args.local_mini_batch_size = plan.mini_batch_per_device
        args.mini_batch_size = plan.mini_batch_per_device * plan.world_size
        args.total_episodes = plan.total_episodes
        args.num_total_batches = plan.num_updates
        self.gold = gold
        self.reward_mix = args.reward_mix()
        self.stage_thresholds = args.stage_thresholds()
        self.progress = TrainingProgress()
        self.accelerator.register_for_checkpointing(self.lr_scheduler, self.progress)
        # The policy must never emit the pad token: response length is read at the first pad.
        self.generation_kwargs = {
            "max_new_tokens": args.response_length,
            "temperature": args.temperature + 1e-7,
            "top_k": 0,
            "top_p": 1.0,
            "do_sample": True,
            "suppress_tokens": [processing_class.pad_token_id],
        }
        self.generation_config = GenerationConfig(**self.generation_kwargs)
        self._epoch_order: tuple[int, torch.Tensor] | None = None

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.plan = plan_batches(
            _with(self.args, num_mini_batches=self._num_mini_batches),
            self.accelerator.num_processes,
            self.train_dataset_len,
        )
        super().create_optimizer_and_scheduler(num_training_steps=self.plan.num_updates)

    # ------------------------------------------------------------------ data
    def _prompt_batch(self, update: int) -> torch.Tensor:
        """This process's prompts for `update` (1-based): a fixed shuffle per epoch, so resume is exact."""
        plan, rank = self.plan, self.accelerator.process_index
        epoch, index = divmod(update - 1, plan.updates_per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed(self.args.seed + epoch)
            self._epoch_order = (epoch, torch.randperm(self.train_dataset_len, generator=generator))
        start = index * plan.rollouts_per_update + rank * plan.rollouts_per_device
        rows = self._epoch_order[1][start : start + plan.rollouts_per_device].tolist()
        batch = self.data_collator([self.train_dataset[i] for i in rows])
        return batch["input_ids"].to(self.accelerator.device)

    # --------------------------------------------------------------- rollout
    @torch.no_grad()
    def _rollout(self, queries: torch.Tensor) -> Rollouts:
        args, pad = self.args, self.processing_class.pad_token_id
        context = queries.shape[1]
        chunk = args.local_rollout_forward_batch_size
        with unwrap_model_for_generation(
            self.model,
            self.accelerator,
            gather_deepspeed3_params=args.ds3_gather_for_generation,
            generation_kwargs=self.generation_kwargs,
        ) as unwrapped:
            query_responses, scores = trl_ppo.batch_generation(
                unwrapped.policy, queries, chunk, pad, self.generation_config
            )
        responses = query_responses[:, context:]
        critic = self.accelerator.unwrap_model(self.model).value_model
        logprobs, ref_logprobs, values = [], [], []
        for start in range(0, queries.shape[0], chunk):
            qr = query_responses[start : start + chunk]
            resp = responses[start : start + chunk]
            logprobs.append(selective_log_softmax(scores[start : start + chunk], resp))
            ref_logprobs.append(self._reference_logprobs(qr, resp, context))
            full_values, _, _ = get_reward(critic, qr, pad, context)
            values.append(full_values[:, context - 1 : -1].squeeze(-1))
        del scores

        if self.stop_token_id is not None:
            responses = trl_ppo.truncate_response(self.stop_token_id, pad, responses)
        last_index = first_true_indices(responses == pad) - 1
        positions = torch.arange(responses.shape[1], device=responses.device)
        padding_mask = positions.unsqueeze(0) > last_index.unsqueeze(1)
        has_stop = (
            (responses == self.stop_token_id).any(dim=1)
            if self.stop_token_id is not None
            else torch.zeros_like(last_index, dtype=torch.bool)
        )
        return Rollouts(
            queries=queries,
            responses=responses,
            query_responses=torch.cat([queries, responses], dim=1),
            logprobs=torch.cat(logprobs).masked_fill(padding_mask, _MASKED_LOGPROB),
            ref_logprobs=torch.cat(ref_logprobs).masked_fill(padding_mask, _MASKED_LOGPROB),
            values=torch.cat(values).masked_fill(padding_mask, 0.0),
            last_index=last_index,
            padding_mask=padding_mask,
            hit_length_limit=~has_stop,
        )

    def _reference_logprobs(
        self, query_responses: torch.Tensor, responses: torch.Tensor, context: int
    ) -> torch.Tensor:
        pad = self.processing_class.pad_token_id
        if self.ref_model is None:  # LoRA: the reference is the policy with its adapter disabled
            with self.null_ref_context():
                out = trl_ppo.forward(self.model.policy, query_responses, pad)
        else:
            out = trl_ppo.forward(self.ref_model, query_responses, pad)
        logits = out.logits[:, context - 1 : -1] / (self.args.temperature + 1e-7)
        return selective_log_softmax(logits, responses)

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
        """Per-token rewards (KL penalty + score on the last token), GAE advantages and returns."""
        args = self.args
        log_ratio = rollouts.logprobs - rollouts.ref_logprobs  # zero past the end (both masked alike)
        kl = log_ratio if args.kl_estimator == "k1" else (-log_ratio).exp() - 1 + log_ratio
        rewards = -args.kl_coef * kl
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

    # ---------------------------------------------------------------- update
    def _update(
        self, rollouts: Rollouts, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, float]:
        args, model, accelerator = self.args, self.model, self.accelerator
        pad, context = self.processing_class.pad_token_id, rollouts.queries.shape[1]
        micro, mini = args.per_device_train_batch_size, self.plan.mini_batch_per_device
        stats: dict[str, list[torch.Tensor]] = {}
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(self.plan.rollouts_per_device, device=advantages.device)
            for mini_start in range(0, self.plan.rollouts_per_device, mini):
                for micro_start in range(mini_start, mini_start + mini, micro):
                    idx = order[micro_start : micro_start + micro]
                    with accelerator.accumulate(model):
                        step_stats = self._micro_step(
                            rollouts, idx, advantages[idx], returns[idx], pad, context
                        )
                    for key, value in step_stats.items():
                        stats.setdefault(key, []).append(value)
        return {key: torch.stack(values).mean() for key, values in stats.items()}

    def _micro_step(
        self,
        rollouts: Rollouts,
        idx: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        pad: int,
        context: int,
    ) -> dict[str, torch.Tensor]:
        args = self.args
        mask = rollouts.padding_mask[idx]
        valid = ~mask
        old_logprobs, old_values = rollouts.logprobs[idx], rollouts.values[idx]
        output, value_logits = trl_ppo.forward(self.model, rollouts.query_responses[idx], pad)
        logits = output.logits[:, context - 1 : -1] / (args.temperature + 1e-7)
        new_logprobs = selective_log_softmax(logits, rollouts.responses[idx]).masked_fill(
            mask, _MASKED_LOGPROB
        )
        new_values = value_logits[:, context - 1 : -1].squeeze(-1).masked_fill(mask, 0.0)

        clipped_values = old_values + (new_values - old_values).clamp(
            -args.cliprange_value, args.cliprange_value
        )
        value_losses = torch.maximum((new_values - returns) ** 2, (clipped_values - returns) ** 2)
        value_loss = 0.5 * trl_ppo.masked_mean(value_losses, valid)

        log_ratio = new_logprobs - old_logprobs
        ratio = log_ratio.exp()
        clipped_ratio = ratio.clamp(1.0 - args.cliprange, 1.0 + args.cliprange)
        unclipped_losses, clipped_losses = -advantages * ratio, -advantages * clipped_ratio
        policy_losses = torch.maximum(unclipped_losses, clipped_losses)
        policy_loss = trl_ppo.masked_mean(policy_losses, valid)

        self.accelerator.backward(policy_loss + args.vf_coef * value_loss)
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            token_entropy = torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)
            return {
                "loss/policy_avg": policy_loss.detach(),
                "loss/value_avg": value_loss.detach(),
                "policy/approxkl_avg": 0.5 * trl_ppo.masked_mean(log_ratio**2, valid),
                "policy/clipfrac_avg": trl_ppo.masked_mean(
                    (clipped_losses > unclipped_losses).float(), valid
                ),
                "policy/entropy_avg": trl_ppo.masked_mean(token_entropy, valid),
                "val/clipfrac_avg": trl_ppo.masked_mean(
                    ((clipped_values - returns) ** 2 > (new_values - returns) ** 2).float(), valid
                ),
                "val/ratio": trl_ppo.masked_mean(ratio, valid),
            }

    # ------------------------------------------------------------- main loop
    def train(self) -> None:
        args, accelerator, plan = self.args, self.accelerator, self.plan
        self._resume_if_possible()
        self.state.max_steps = plan.num_updates
        self.state.global_step = self.progress.update
        self.state.episode = self.progress.episode
        self.state.num_train_epochs = plan.total_episodes / self.train_dataset_len
        self.state.logging_steps = 1
        self.state.save_steps = _absolute_steps(args.save_steps, plan.num_updates)
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if self.is_deepspeed_enabled:  # names TRL/transformers helpers expect
            self.deepspeed = self.model_wrapped = self.model
        logger.info(
            "PPO: %d updates of %d rollouts\n%s", plan.num_updates, plan.rollouts_per_update, plan.describe()
        )
        self.model.train()
        start = time.perf_counter()

        for update in range(self.progress.update + 1, plan.num_updates + 1):
            tic = time.perf_counter()
            rollouts = self._rollout(self._prompt_batch(update))
            self._score(rollouts)
            advantages, returns, kl = self._advantages(rollouts)
            update_stats = self._update(rollouts, advantages, returns)
            self.lr_scheduler.step()

            self.progress.update = update
            self.progress.episode += plan.rollouts_per_update
            self.state.global_step, self.state.episode = update, self.progress.episode
            self.state.epoch = self.progress.episode / self.train_dataset_len
            metrics = self._metrics(rollouts, kl, update_stats)
            metrics["time/update_s"] = time.perf_counter() - tic
            metrics["eps"] = self.progress.episode / max(time.perf_counter() - start, 1e-9)
            self._write_logs(update, rollouts, metrics)
            self.log(metrics)
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if update % self.state.save_steps == 0 or update == plan.num_updates:
                save_checkpoint(accelerator, args.output_dir, update, keep=args.save_total_limit)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if args.num_sample_generations > 0 and (update - 1) % self.sample_generations_freq == 0:
                self.generate_completions(sampling=True)
            del rollouts, advantages, returns, kl
            trl_ppo.empty_cache()

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)

    def _resume_if_possible(self) -> None:
        args = self.args
        path = (
            Path(args.resume_from_checkpoint)
            if args.resume_from_checkpoint
            else latest_checkpoint(args.output_dir)
        )
        if path is None:
            return
        if not args.resume:
            raise ValueError(
                f"{args.output_dir} already holds checkpoints ({path.name}); pass a new --output_dir, or drop "
                "--resume false to continue that run"
            )
        load_checkpoint(self.accelerator, path)
        if self.accelerator.is_main_process:
            for name in (METRICS_FILE, COMPLETIONS_FILE):
                runlog.truncate_after(Path(args.output_dir) / name, self.progress.update)
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
            "objective/non_score_reward": (-args.kl_coef * kl).sum(1).mean(),
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
        metrics.update(summarise(gather_object(rollouts.features)))  # stage shares, leak and prefix rates
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
                {"update": update, "id": gold.id, "gold": gold.answer, "completion": text,
                 "response_tokens": int(n) + 1, **asdict(v), "score": score, **features.as_row()}
                for gold, text, n, v, score, features in zip(
                    rollouts.golds, rollouts.texts, rollouts.last_index.tolist(), rollouts.verdicts,
                    rollouts.scores.tolist(), rollouts.features, strict=True,
                )
            ]  # fmt: skip
            rows = gather_object(local)
        if self.accelerator.is_main_process:
            runlog.append_rows(out / METRICS_FILE, [metrics])
            if rows is not None:
                runlog.append_rows(out / COMPLETIONS_FILE, rows)

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
            self.processing_class.save_pretrained(staging)
            info = {"kind": "ppo", "prompt_template": "r1", "answer_mode": "cot", **(model_card or {})}
            (staging / "run_info.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
            (staging / "README.md").write_text(
                model_card_text(
                    "Med-RLVR PPO policy",
                    "Trained with medrlvr-trl: PPO whose reward is a rule-based verifier.",
                    info,
                )
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
