"""Run under `accelerate launch --config_file launch/cpu_zero{2,3}.yaml` by tests/test_ppo_distributed.py:
what a backend may change at load time and in the optimizer step, read back on 2 processes.

Writes JSON to --out (rank 0): the fresh critic head's std, whether an added pad row is the mean of the
trained rows, each role's gradient norm as the optimizer stepped it (after clipping), and each role's Adam
step count after a run whose first update was critic warmup.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import set_seed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medrlvr_trl.data import load_mcqa  # noqa: E402
from medrlvr_trl.modeling import gathered, load_policy, load_tokenizer, load_value_model  # noqa: E402
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer  # noqa: E402
from medrlvr_trl.rewards.reward_model import tokenize_prompts  # noqa: E402

HEAD_STD, MAX_NORM = 0.5, 1e-3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    cli = parser.parse_args()
    args = MedRLVRPPOConfig(  # built first: under ZeRO-3 it turns on zero.Init for the loads below
        output_dir=str(Path(cli.out).parent / "run"), per_device_train_batch_size=4, gradient_accumulation_steps=1,
        num_mini_batches=2, num_ppo_epochs=1, total_episodes=32, response_length=8,
        local_rollout_forward_batch_size=8, learning_rate=1e-4, bf16=False, gradient_checkpointing=False,
        report_to="none", save_steps=100, log_completions_steps=0, num_sample_generations=0, seed=0,
        max_grad_norm=MAX_NORM, critic_warmup_updates=1, use_cpu=True,
    )  # fmt: skip
    set_seed(0)
    tokenizer = load_tokenizer(cli.model)
    policy = load_policy(cli.model, None, tokenizer)
    critic = load_value_model(cli.model, None, tokenizer, head_std=HEAD_STD)
    result: dict[str, object] = {}
    embed = policy.get_input_embeddings().weight
    with gathered([critic.score.weight, embed]), torch.no_grad():
        result["head_std"] = critic.score.weight.float().std().item()
        pad = tokenizer.pad_token_id
        result["pad_row_is_mean"] = bool(
            pad >= embed.shape[0] - 1 and torch.allclose(embed[pad], embed[:pad].mean(0), atol=1e-6)
        )

    rows = load_mcqa(str(REPO / "data" / "demo" / "medqa"), "train", limit=64)
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)
    trainer = MedRLVRPPOTrainer(
        args=args, processing_class=tokenizer, model=policy, ref_model=load_policy(cli.model, None, tokenizer),
        value_model=critic, train_dataset=dataset, gold=gold,
    )  # fmt: skip
    base = trainer.model.optimizer.optimizer  # ZeRO optimizer -> the torch AdamW it steps
    squares: list[dict[str, float]] = []

    def record(optimizer, *_):  # ZeRO hands the torch optimizer one group (or sub-group) at a time
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and squares:
                    squares[-1][group["role"]] = (
                        squares[-1].get(group["role"], 0.0) + p.grad.float().pow(2).sum().item()
                    )

    base.register_step_pre_hook(record)
    original_step = trainer.model.step

    def step(*a, **k):  # one dict per engine step, summed over the ranks afterwards
        if trainer.model.is_gradient_accumulation_boundary():
            squares.append({})
        return original_step(*a, **k)

    trainer.model.step = step
    trainer.train()
    totals = []
    for norms in squares:
        tensor = torch.tensor([norms.get("policy", 0.0), norms.get("critic", 0.0)])
        dist.all_reduce(tensor)
        totals.append({"policy": tensor[0].sqrt().item(), "critic": tensor[1].sqrt().item()})
    result["stepped_norms"] = totals
    steps = {}
    for group in base.param_groups:
        for p in group["params"]:
            if "step" in base.state.get(p, {}):
                steps[group["role"]] = float(base.state[p]["step"])
    zero = trainer.model.optimizer
    for name in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):
        for i, flat in enumerate(getattr(zero, name, [])):
            group_id = zero.sub_group_to_group_id[i] if hasattr(zero, "sub_group_to_group_id") else i
            if "step" in base.state.get(flat, {}):
                steps[base.param_groups[group_id]["role"]] = float(base.state[flat]["step"])
    result["adam_steps"] = steps
    result["updates"] = trainer.state.global_step
    if trainer.accelerator.is_main_process:
        Path(cli.out).write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
