"""Peak memory of one PPO rollout + scoring (generation, old log-probs, reference log-probs, values):
TRL's own path (BEFORE) vs `MedRLVRPPOTrainer._rollout` (AFTER), at Qwen's real vocabulary.

    python bench/bench_rollout_memory.py                                  # 8 rollouts x 512 tokens, chunks of 4
    python bench/bench_rollout_memory.py --rollouts 8 --chunk 8 --response-length 512
    python bench/bench_rollout_memory.py --rollouts 2 --chunk 2 --response-length 8 --prompt-length 16  # smoke

BEFORE is what TRL 1.12's PPOTrainer (and this project until the rollout rewrite) does:
`trl.experimental.ppo.ppo_trainer.batch_generation` (generate with output_scores=True, the fp32 scores
stacked into (rollouts, response, vocab)), `trl.trainer.utils.selective_log_softmax` on those scores
for the old log-probs, `ppo_trainer.forward` on the reference (logits over every position) for the
reference log-probs and `trl.experimental.utils.get_reward` on the critic for the values. AFTER is
the project's `_rollout`: generation without scores, then policy+critic and reference forwards with
the LM head on response positions only (`response_logprobs`), `local_rollout_forward_batch_size`
rows at a time. Same trainer, same thin random-weight Qwen2 (hidden 64, 2 layers, vocabulary
151,936), same prompts; each mode in a fresh subprocess. Measured: peak RSS (VmHWM, reset just
before the rollout) minus the RSS just before it, with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors
leave RSS (see bench_memory_plan.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from bench_memory_plan import _hwm_bytes, _reset_hwm, _rss_bytes, build_trainer  # noqa: E402
from harness import print_result, run_child  # noqa: E402
from machine import machine_line  # noqa: E402


def trl_rollout(trainer, queries):
    """TRL's rollout path (the BEFORE), on the trainer's own models and generation config."""
    import torch
    from trl.experimental.ppo import ppo_trainer as trl_ppo
    from trl.experimental.utils import get_reward
    from trl.models.utils import unwrap_model_for_generation
    from trl.trainer.utils import selective_log_softmax

    args, pad, accelerator = trainer.args, trainer.processing_class.pad_token_id, trainer.accelerator
    chunk, context = args.local_rollout_forward_batch_size, queries.shape[1]
    with torch.no_grad():
        with unwrap_model_for_generation(
            trainer.model, accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
            generation_kwargs=trainer.generation_kwargs,
        ) as unwrapped:  # fmt: skip
            query_responses, scores = trl_ppo.batch_generation(
                unwrapped.policy, queries, chunk, pad, trainer.generation_config
            )
        responses = query_responses[:, context:]
        critic = accelerator.unwrap_model(trainer.model).value_model
        logprobs, ref_logprobs, values = [], [], []
        for start in range(0, queries.shape[0], chunk):
            qr, resp = query_responses[start : start + chunk], responses[start : start + chunk]
            logprobs.append(selective_log_softmax(scores[start : start + chunk], resp))
            out = trl_ppo.forward(trainer.ref_model, qr, pad)
            logits = out.logits[:, context - 1 : -1] / (args.temperature + 1e-7)
            ref_logprobs.append(selective_log_softmax(logits, resp))
            del out, logits
            full_values, _, _ = get_reward(critic, qr, pad, context)
            values.append(full_values[:, context - 1 : -1].squeeze(-1))
        del scores
    return torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)


def run_mode(mode: str, rollouts: int, chunk: int, response_length: int, prompt_length: int) -> dict:
    case = dict(hidden=64, layers=2, inter=256, heads=4, kv=2, prompt=prompt_length, response=response_length,
                micro=rollouts, chunk=chunk, mini=1, gc=False, bf16=False)  # fmt: skip
    trainer, _, _ = build_trainer(f"rollout-{mode}", case, updates=1)
    queries = trainer._prompt_batch(1)
    gc.collect()
    before = _rss_bytes()
    _reset_hwm()
    tic = time.perf_counter()
    if mode == "before":
        trl_rollout(trainer, queries)
    else:
        trainer._rollout(queries)
    seconds = time.perf_counter() - tic
    return {"mode": mode, "peak": _hwm_bytes() - before, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per device (one batch)")
    parser.add_argument("--chunk", type=int, default=4, help="local_rollout_forward_batch_size")
    parser.add_argument("--response-length", type=int, default=512)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--mode", choices=["before", "after"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    sizes = (args.rollouts, args.chunk, args.response_length, args.prompt_length)
    if args.mode:
        print_result(run_mode(args.mode, *sizes))
        return
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MALLOC_MMAP_THRESHOLD_": "65536",
    }
    results = {}
    for mode in ("before", "after"):
        cmd = [sys.executable, __file__, "--mode", mode, "--rollouts", str(args.rollouts), "--chunk", str(args.chunk),
               "--response-length", str(args.response_length), "--prompt-length", str(args.prompt_length)]  # fmt: skip
        results[mode] = run_child(cmd, f"mode {mode}", env=env)
    gib = 2**30
    before, after = results["before"]["peak"], results["after"]["peak"]
    print(machine_line())
    print(f"rollout + scoring of {args.rollouts} rollouts x {args.response_length} response tokens (prompts of "
          f"{args.prompt_length}), chunks of {args.chunk} rows, vocabulary 151,936, hidden 64 x 2 layers, fp32, CPU\n")  # fmt: skip
    print("| path | peak above pre-rollout RSS, GiB | seconds |\n| --- | --- | --- |")
    print(
        f"| BEFORE: TRL batch_generation + scores, forward, get_reward | {before / gib:.2f} "
        f"| {results['before']['seconds']:.1f} |"
    )
    print(f"| AFTER: MedRLVRPPOTrainer._rollout | {after / gib:.2f} | {results['after']['seconds']:.1f} |")
    print(f"\nratio BEFORE / AFTER: {before / after:.2f}x")


if __name__ == "__main__":
    main()
