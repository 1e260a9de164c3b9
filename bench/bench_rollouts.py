"""Rollout sampling speed: transformers `generate` vs the colocated vLLM engine, through the PPO trainer's
own sampling methods (`_sample_hf`, `_sample_vllm`), same prompts, same sampling (temperature 1, no
top-p/top-k, pad banned, stop at eos, `response_length` tokens at most).

    python bench/bench_rollouts.py --model tiny-vllm                       # seconds
    python bench/bench_rollouts.py --model smollm2 --rollouts 32 --response-length 128   # `make smollm2` first
    python bench/bench_rollouts.py --model tiny-vllm --rollouts 4 --response-length 8 --repeats 1   # smoke

Rows: `hf` (one generate call per process, the default), `hf, chunks of K` (one call per scoring chunk
of K rows: what rollouts did before `generation_batch_size`), `vllm` (needs `make vllm`; weights pushed
once before timing, the push timed apart). One untimed warm-up sampling first. Each row runs in its own process; tokens/s counts generated
tokens up to and including eos. On these 2-core CPUs the vLLM path is checked for parity and overhead:
its speed-up is a GPU property (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from harness import print_result, run_child  # noqa: E402
from machine import machine_line  # noqa: E402

MODELS = {"tiny-vllm": "build/bench/tiny-vllm/policy", "smollm2": "build/real/smollm2-135m"}


def _model_dir(name: str) -> Path:
    if name == "tiny-vllm":
        from medrlvr_trl.tiny import TinySpec, build_tiny

        return build_tiny(REPO / "build/bench/tiny-vllm", TinySpec(num_heads=2, num_kv_heads=2)).policy
    folder = REPO / MODELS[name]
    if not (folder / "config.json").is_file():
        raise SystemExit(f"error: {folder} does not exist; run `make smollm2` first")
    return folder


def run_one(args: argparse.Namespace) -> dict:
    """Sample `args.rollouts` responses `args.repeats` times with one backend; seconds and tokens each time."""
    from medrlvr_trl.data import load_mcqa
    from medrlvr_trl.modeling import load_policy, load_tokenizer, load_value_model
    from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer
    from medrlvr_trl.rewards.reward_model import tokenize_prompts

    model_dir = str(_model_dir(args.model))
    tokenizer = load_tokenizer(model_dir)
    rows = load_mcqa(str(REPO / "data/demo/medqa"), "train", limit=max(args.rollouts, 8))
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=1024)
    backend, _, chunk = args.row.partition(":")
    config = MedRLVRPPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-rollouts-"), per_device_train_batch_size=args.rollouts,
        gradient_accumulation_steps=1, num_mini_batches=1, total_episodes=args.rollouts,
        response_length=args.response_length, local_rollout_forward_batch_size=args.chunk,
        generation_batch_size=int(chunk) if chunk else None, rollout_backend=backend, bf16=False,
        gradient_checkpointing=False, use_cpu=True, report_to="none", seed=0, max_prompt_length=1024,
    )  # fmt: skip
    trainer = MedRLVRPPOTrainer(
        args=config, processing_class=tokenizer, model=load_policy(model_dir, None, tokenizer),
        ref_model=load_policy(model_dir, None, tokenizer), value_model=load_value_model(model_dir, None, tokenizer),
        train_dataset=dataset, gold=gold,
    )  # fmt: skip
    queries = trainer._prompt_batch(1)
    result = {"row": args.row, "push_s": None, "seconds": [], "tokens": []}
    if backend == "vllm":
        tic = time.perf_counter()
        trainer._push_weights()
        result["push_s"] = time.perf_counter() - tic
    sample = trainer._sample_vllm if backend == "vllm" else trainer._sample_hf
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    sample(queries)  # warm-up, not timed (first-call allocations, vLLM's first scheduling)
    for _ in range(args.repeats):
        tic = time.perf_counter()
        chunks = sample(queries)[0] if backend == "vllm" else sample(queries)
        result["seconds"].append(time.perf_counter() - tic)
        tokens = 0
        for responses in chunks:
            for row in responses.tolist():
                ends = [i for i, t in enumerate(row) if t in (eos, pad)]
                tokens += (ends[0] + (row[ends[0]] == eos)) if ends else len(row)
        result["tokens"].append(tokens)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=list(MODELS), default="tiny-vllm")
    parser.add_argument("--rollouts", type=int, default=32, help="rollouts per process (one update's)")
    parser.add_argument("--response-length", type=int, default=64)
    parser.add_argument(
        "--chunk", type=int, default=8, help="local_rollout_forward_batch_size (scoring chunk)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed samplings per row (median reported)")
    parser.add_argument("--rows", nargs="+", default=None, help="hf, hf:<K> (chunks of K), vllm")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.row:
        print_result(run_one(args))
        return
    rows = args.rows or ["hf", f"hf:{args.chunk}", "vllm"]
    results = []
    for row in rows:
        cmd = [sys.executable, __file__, "--row", row, "--model", args.model, "--rollouts", str(args.rollouts),
               "--response-length", str(args.response_length), "--chunk", str(args.chunk),
               "--repeats", str(args.repeats)]  # fmt: skip
        results.append(run_child(cmd, row))
    print(machine_line())
    print(f"{args.model}: {args.rollouts} rollouts of at most {args.response_length} tokens, fp32, temperature 1, "
          f"median of {args.repeats}\n")  # fmt: skip
    print("| rollouts sampled by | seconds | generated tokens | tokens/s | vs hf | weight push s |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for result in results:
        seconds = statistics.median(result["seconds"])
        rate = statistics.median(t / s for t, s in zip(result["tokens"], result["seconds"], strict=True))
        base = base or rate
        label = {"hf": "hf (one generate call)", "vllm": "vllm (colocated engine)"}.get(
            result["row"], f"hf, chunks of {result['row'].partition(':')[2]} (before generation_batch_size)"
        )
        push = f"{result['push_s']:.2f}" if result["push_s"] is not None else "-"
        print(f"| {label} | {seconds:.2f} | {statistics.median(result['tokens']):.0f} | {rate:.1f} "
              f"| {rate / base:.2f}x | {push} |")  # fmt: skip


if __name__ == "__main__":
    main()
