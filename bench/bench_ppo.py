"""Seconds per PPO update: MedRLVRPPOTrainer (verifier reward) vs TRL's stock PPOTrainer (a neural
reward model of the policy's size), same tiny model, batch and generation length; plus where the
time of one of our updates goes.

    python bench/bench_ppo.py --updates 8            # prints markdown tables

Each trainer runs in its own subprocess (so peak RSS is its own); machines here are shared and
noisy, so compare the ratio, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import machine_line  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _common(args: argparse.Namespace, out: Path) -> dict:
    return dict(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=args.ppo_epochs, total_episodes=args.batch * args.updates,
        response_length=args.response_length, local_rollout_forward_batch_size=args.batch,
        learning_rate=1e-5, bf16=False, use_cpu=True, report_to="none", num_sample_generations=0,
        save_strategy="no", seed=0, stop_token="eos", disable_tqdm=True,
    )  # fmt: skip


def run_one(which: str, args: argparse.Namespace) -> dict:
    """Train `args.updates` updates with one trainer; return per-update seconds and peak RSS."""
    import tempfile

    from transformers import TrainerCallback

    from medrlvr_trl.data import load_mcqa
    from medrlvr_trl.modeling import load_policy, load_tokenizer, load_value_model
    from medrlvr_trl.tiny import build_tiny
    from medrlvr_trl.verifier_reward import tokenize_prompts

    paths = build_tiny(REPO / "build" / "bench" / "tiny")
    tokenizer = load_tokenizer(str(paths.policy))
    rows = load_mcqa(str(REPO / "data/demo/medqa"), "train", limit=256)
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    def models():
        return (
            load_policy(str(paths.policy), None, tokenizer),
            load_policy(str(paths.policy), None, tokenizer),
            load_value_model(str(paths.policy), None, tokenizer),
        )

    out = Path(tempfile.mkdtemp(prefix=f"bench-{which}-"))
    phases: dict[str, float] = defaultdict(float)
    if which == "ours":
        from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer

        policy, ref, value = models()
        trainer = MedRLVRPPOTrainer(
            args=MedRLVRPPOConfig(**_common(args, out), save_steps=10**6),
            processing_class=tokenizer, model=policy, ref_model=ref, value_model=value,
            train_dataset=dataset, gold=gold, callbacks=[Stamp()],
        )  # fmt: skip
        _instrument(trainer, phases)
    else:
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        policy, ref, value = models()
        reward_model = load_value_model(str(paths.policy), None, tokenizer)  # same size as the policy
        trainer = PPOTrainer(
            args=PPOConfig(**_common(args, out)), processing_class=tokenizer, model=policy, ref_model=ref,
            reward_model=reward_model, train_dataset=dataset, value_model=value, callbacks=[Stamp()],
        )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = [b - a for a, b in zip([start, *stamps], stamps, strict=False)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"which": which, "seconds": seconds, "peak_rss_mb": peak_mb, "phases": dict(phases)}


def _instrument(trainer, phases: dict[str, float]) -> None:
    """Wrap the pieces of an update with timers (generation, reference/value forward, reward, backward, step)."""
    from medrlvr_trl import ppo

    def timed(name, fn):
        def wrapper(*a, **k):
            tic = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - tic

        return wrapper

    ppo.trl_ppo.batch_generation = timed("generation", ppo.trl_ppo.batch_generation)
    ppo.get_reward = timed("value forward (rollout)", ppo.get_reward)
    trainer._reference_logprobs = timed("reference forward", trainer._reference_logprobs)
    trainer._score = timed("reward (verifier)", trainer._score)
    trainer._advantages = timed("advantages (GAE)", trainer._advantages)
    trainer._update = timed("update total", trainer._update)
    trainer.accelerator.backward = timed("backward", trainer.accelerator.backward)
    trainer.optimizer.step = timed("optimizer step", trainer.optimizer.step)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--which", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.which:
        print("RESULT " + json.dumps(run_one(args.which, args)))
        return

    results = {}
    for which in ("ours", "trl"):
        cmd = [sys.executable, __file__, "--which", which, "--updates", str(args.updates), "--batch",
               str(args.batch), "--response-length", str(args.response_length), "--ppo-epochs", str(args.ppo_epochs)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        results[which] = json.loads(line[len("RESULT ") :])

    def median_after_first(r):  # the first update pays one-off warm-up costs
        return statistics.median(r["seconds"][1:])

    ours, trl = median_after_first(results["ours"]), median_after_first(results["trl"])
    print(machine_line())
    print(f"tiny Qwen2 policy, {args.batch} rollouts x {args.response_length} tokens per update, "
          f"{args.updates} updates, {args.ppo_epochs} PPO epoch(s)\n")  # fmt: skip
    print("| trainer | reward | s/update (median) | peak RSS MB |\n| --- | --- | --- | --- |")
    print(f"| MedRLVRPPOTrainer | verifier | {ours:.3f} | {results['ours']['peak_rss_mb']:.0f} |")
    print(f"| TRL PPOTrainer | reward model | {trl:.3f} | {results['trl']['peak_rss_mb']:.0f} |")
    print(f"\nratio TRL / ours: {trl / ours:.2f}x\n")
    phases = results["ours"]["phases"]
    total = sum(results["ours"]["seconds"])
    print("| phase (ours, all updates) | seconds | share |\n| --- | --- | --- |")
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| whole updates | {total:.2f} | 100% |")


if __name__ == "__main__":
    main()
