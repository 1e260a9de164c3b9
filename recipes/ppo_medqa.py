"""Med-RLVR: PPO on MedQA with the rule-based verifier as the only reward.

`--advantage_estimator reinforce_pp_baseline` (recipes/configs/reinforce_pp_qwen2.5-3b.yaml) trains the same
policy with REINFORCE++-baseline instead: no critic is loaded, and `num_samples_per_prompt` responses per
prompt share their prompt's mean score as the baseline (medrlvr_trl/ppo.py).

    accelerate launch recipes/ppo_medqa.py --config recipes/configs/ppo_qwen2.5-3b.yaml
    accelerate launch --config_file launch/zero3.yaml recipes/ppo_medqa.py --config ... --learning_rate 5e-7
    python recipes/ppo_medqa.py --config recipes/configs/tiny/ppo.yaml        # offline, CPU

The same command continues an interrupted run from its newest checkpoint. SIGTERM or SIGUSR1 (to
every process, or to the `accelerate launch` process, see launch/slurm_ppo.sbatch) ends the run after
the current update with a checkpoint and exit code 0, without the final model. `--dry_run true` prints
the resolved configuration, the batch arithmetic and a per-device memory estimate (weights, gradients,
optimizer states, KV cache, logits, activations; ZeRO stage and world size read from the launch)
without loading data or models.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from transformers import set_seed
from trl import ModelConfig, get_peft_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.checkpoint import checkpoint_path  # noqa: E402
from medrlvr_trl.configs import MCQAScriptArguments, parse_config  # noqa: E402
from medrlvr_trl.memory_plan import Launch, log_memory_plan  # noqa: E402
from medrlvr_trl.modeling import (  # noqa: E402
    load_policy,
    load_value_model,
    precision_record,
    trainable_dtype,
)
from medrlvr_trl.option_order import shuffled_rows  # noqa: E402
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer, checkpoint_to_resume, plan_batches  # noqa: E402
from medrlvr_trl.preemption import PreemptionHandler  # noqa: E402
from medrlvr_trl.progress import TrainerProgress  # noqa: E402
from medrlvr_trl.prompts import get_template  # noqa: E402
from medrlvr_trl.recipe_setup import (  # noqa: E402
    end_distributed,
    last_metrics,
    load_rows_and_tokenizer,
    log_dry_run,
    setup_logging,
    training_data_record,
)
from medrlvr_trl.rewards.reward_model import tokenize_prompts  # noqa: E402
from medrlvr_trl.user_errors import run_command  # noqa: E402

logger = logging.getLogger("ppo_medqa")


def main(argv: list[str] | None = None) -> None:
    script_args, ppo_args, model_args = parse_config(
        [MCQAScriptArguments, MedRLVRPPOConfig, ModelConfig], argv
    )
    setup_logging()
    get_template(script_args.prompt_template)  # unknown template names fail before anything loads

    if script_args.dry_run:
        world_size = (
            Launch.from_accelerate_config(script_args.launch_config).world_size
            if script_args.launch_config
            else int(os.environ.get("WORLD_SIZE", "1"))
        )
        log_dry_run(script_args, model_args, ppo_args, lambda rows: plan_batches(ppo_args, world_size, rows))
        # per-device estimate for --launch_config, else this launch: docs/benchmarks.md#memory-plan
        log_memory_plan(ppo_args, model_args, launch_config=script_args.launch_config)
        return

    checkpoint_to_resume(ppo_args)  # a checkpoint this run cannot continue is refused before loading
    rows, skipped, tokenizer = load_rows_and_tokenizer(script_args, model_args, recipe="ppo")

    def epoch_prompts(epoch: int):
        """One epoch's tokenised prompts and gold table (`shuffle_options`: that epoch's option orders)."""
        epoch_rows = (
            shuffled_rows(rows, seed=ppo_args.seed, epoch=epoch) if ppo_args.shuffle_options else rows
        )
        return tokenize_prompts(
            epoch_rows,
            tokenizer,
            template=script_args.prompt_template,
            max_prompt_length=ppo_args.max_prompt_length,
        )

    train_dataset, gold = epoch_prompts(0)
    set_seed(ppo_args.seed)  # the critic's fresh scalar head is drawn here: same seed, same run
    master = trainable_dtype(model_args.dtype, ppo_args)  # fp32 unless DeepSpeed keeps fp32 masters itself
    policy = load_policy(model_args.model_name_or_path, model_args, tokenizer, dtype=master)
    # An explicit reference copy (not TRL's create_reference_model) so that ZeRO-3 works; LoRA needs none.
    # Same dtype as the policy, so that same weights give the same log-probs: KL exactly 0 at step 0 (a bf16
    # reference beside fp32 master weights gave 6.6e-5 per token on the tiny model).
    ref_policy = (
        None
        if model_args.use_peft
        else load_policy(model_args.model_name_or_path, model_args, tokenizer, dtype=master)
    )
    value_model = (  # reinforce_pp_baseline: no critic at all (nothing loaded, stepped or saved)
        load_value_model(
            ppo_args.value_model_name_or_path or model_args.model_name_or_path,
            model_args,
            tokenizer,
            dtype=master,
            head_std=ppo_args.value_head_init_std,
        )
        if ppo_args.uses_critic
        else None
    )
    trainer = MedRLVRPPOTrainer(
        args=ppo_args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        value_model=value_model,
        train_dataset=train_dataset,
        gold=gold,
        peft_config=get_peft_config(model_args),
        epoch_prompts=epoch_prompts if ppo_args.shuffle_options else None,
    )
    trainer.add_callback(TrainerProgress("PPO", unit="updates"))
    with PreemptionHandler() as preemption:
        trainer.train(preemption)
    if preemption.stopped:  # not finished: no final model, so the same command resumes
        update = trainer.state.global_step
        preemption.report(update, checkpoint_path(ppo_args.output_dir, update), unit="update")
        end_distributed(trainer.accelerator)
        return
    trainer.save_final_model(
        model_card={
            "base_model": model_args.model_name_or_path,
            "dataset": f"{script_args.dataset_name} ({script_args.dataset_train_split}, {len(rows)} rows)",
            "training_data": training_data_record(script_args, rows),
            "skipped_rows": skipped.as_record(),
            "reward": f"verifier mode={ppo_args.verifier_mode} {asdict(ppo_args.reward_values())}",
            "reward_terms": dict(zip(ppo_args.rewards, ppo_args.reward_mix().weights, strict=True)),
            "prompt_template": script_args.prompt_template,
            **precision_record(ppo_args, policy),
            "hyperparameters": {
                key: getattr(ppo_args, key)
                for key in (
                    "advantage_estimator",
                    "num_samples_per_prompt",
                    "use_kl_loss",
                    "kl_estimator",
                    "learning_rate",
                    "critic_learning_rate",
                    "critic_warmup_updates",
                    "max_grad_norm",
                    "kl_coef",
                    "cliprange",
                    "vf_coef",
                    "gamma",
                    "lam",
                    "temperature",
                    "response_length",
                    "num_ppo_epochs",
                    "num_mini_batches",
                    "batch_size",
                    "total_episodes",
                    "seed",
                    "shuffle_options",
                )
            },
            "final_metrics": last_metrics(trainer.state.log_history, kl_key="objective/kl"),
        }
    )
    end_distributed(trainer.accelerator)


if __name__ == "__main__":
    run_command(main)
