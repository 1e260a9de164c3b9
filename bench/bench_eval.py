"""Evaluation throughput: batched generation (left padding, KV cache) vs one question at a time,
on the same questions, with the offline tiny model.

    python bench/bench_eval.py --questions 128 --batch-size 64 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from machine import machine_line  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    from medrlvr_trl.data import load_mcqa
    from medrlvr_trl.generation import GenerationSettings, generate_hf
    from medrlvr_trl.modeling import load_policy, load_tokenizer
    from medrlvr_trl.prompts import build_prompt
    from medrlvr_trl.tiny import build_tiny

    paths = build_tiny(REPO / "build" / "bench" / "tiny")
    tokenizer = load_tokenizer(str(paths.policy))
    model = load_policy(str(paths.policy), None, tokenizer)
    rows = load_mcqa(str(REPO / "data/demo/medqa"), "test", limit=args.questions)
    prompts = [build_prompt(r["question"], r["options"], template="r1") for r in rows]
    batched = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    generate_hf(model, tokenizer, prompts[:2], batched)  # warm-up
    timings = {}
    for name, settings in (("batched", batched), ("one at a time", replace(batched, batch_size=1))):
        tic = time.perf_counter()
        completions = generate_hf(model, tokenizer, prompts, settings)
        seconds = time.perf_counter() - tic
        tokens = sum(c.num_tokens for c in completions)
        timings[name] = (len(prompts) / seconds, tokens / seconds)

    print(machine_line())
    print(
        f"tiny Qwen2, {len(prompts)} MedQA-shaped demo questions, greedy, {args.max_new_tokens} new tokens max\n"
    )
    print("| generation | questions/s | new tokens/s |\n| --- | --- | --- |")
    for name, (qps, tps) in timings.items():
        label = f"{name} (batch {args.batch_size})" if name == "batched" else name
        print(f"| {label} | {qps:.1f} | {tps:.0f} |")
    print(f"\nratio batched / one at a time: {timings['batched'][0] / timings['one at a time'][0]:.1f}x")


if __name__ == "__main__":
    main()
