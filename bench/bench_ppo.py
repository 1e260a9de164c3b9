"""Seconds per PPO update: MedRLVRPPOTrainer (verifier reward) vs TRL's stock PPOTrainer (a neural
reward model of the policy's size), same model, batch and generation length; plus where the time of
one of our updates goes, phase by phase (rollout generation, scoring forwards, verifier, advantages,
update), timed around the trainer's own methods.

    python bench/bench_ppo.py --updates 8            # CPU, tiny model; prints markdown tables
    python bench/bench_ppo.py --updates 2 --batch 2 --response-length 8   # the smallest run (a smoke test)
    # one GPU, real Qwen2.5 shapes with random weights (no Hub needed), bf16, DeepSpeed ZeRO-2:
    python bench/bench_ppo.py --shape qwen2.5-0.5b --bf16 --batch 32 --response-length 256 \
        --accelerate-config launch/zero2.yaml

Each trainer runs in its own subprocess (so peak RSS is its own); machines here are shared and
noisy, so compare the ratio, not absolute seconds across runs. `--backends` lists the rollout backends
our trainer is measured with, one column each in the phase table (`hf`: transformers' `generate`;
`vllm`: the colocated engine, `make vllm`; on a CPU it needs `--shape tiny-vllm`, head_dim 32):

    python bench/bench_ppo.py --updates 8 --shape tiny-vllm --backends hf vllm
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness import PhaseTimer, print_result, run_child  # noqa: E402
from machine import machine_line  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


# Public Qwen2.5 base configs (config.json on the Hub), rebuilt here with random weights.
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, tie_word_embeddings=True),
}  # fmt: skip
QWEN_VOCAB = 151_936
# Peak HBM bandwidth, bytes/s (vendor data sheets), for the decode-throughput bound.
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}
# Rollout backends of our trainer: name -> (what generates, MedRLVRPPOConfig fields that select it).
BACKENDS: dict[str, tuple[str, dict]] = {
    "hf": ("transformers generate", {}),
    "vllm": ("vLLM, colocated", {"rollout_backend": "vllm"}),
}
TRAINERS = ("ours", "trl", "trl-no-gc")
# Our trainer's phases in table order: (whose method, method, row). The trainer's own methods; the
# policy + critic pair's `forward`, split by the phase that calls it (rollout scoring or the update);
# the accelerator's `backward` and the optimizer's `step`.
PHASES = (
    ("trainer", "_rollout", "rollout"),
    ("trainer", "_sample_hf", "generation"),  # per backend: `_sample_<backend>` (see _phases)
    ("pair", "forward", "policy + critic forward"),
    ("trainer", "_reference_logprobs", "reference forward"),
    ("trainer", "_score", "verifier"),
    ("trainer", "_advantages", "advantages (GAE)"),
    ("trainer", "_update", "update"),
    ("accelerator", "backward", "backward"),
    ("optimizer", "step", "optimizer step"),
)


def _phases(backend: str) -> list[tuple[str, str, str]]:
    """PHASES with the backend's sampling method as "generation" (and, for vLLM, its weight push in it)."""
    phases = [
        (o, f"_sample_{backend}", label) if label == "generation" else (o, n, label) for o, n, label in PHASES
    ]
    if backend == "vllm":
        phases.insert(2, ("trainer", "_push_weights", "weight push to vLLM"))
    return phases


def _common(args: argparse.Namespace, out: Path) -> dict:
    gpu = not args.shape.startswith("tiny")
    return dict(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=args.ppo_epochs, total_episodes=args.batch * args.updates,
        response_length=args.response_length, local_rollout_forward_batch_size=args.batch,
        learning_rate=1e-5, bf16=args.bf16, use_cpu=not gpu, report_to="none", num_sample_generations=0,
        save_strategy="no", seed=0, stop_token="eos", disable_tqdm=True, gradient_checkpointing=gpu,
    )  # fmt: skip


def _model_dir(shape: str) -> Path:
    """The tiny build, or a random-weight model of a real shape saved with the tiny tokenizer."""
    from medrlvr_trl.tiny import TinySpec, build_tiny

    tiny = build_tiny(REPO / "build" / "bench" / "tiny")
    if shape == "tiny":
        return tiny.policy
    if shape == "tiny-vllm":  # head_dim 32: vLLM's CPU attention refuses the tiny model's 16
        return build_tiny(
            REPO / "build" / "bench" / "tiny-vllm", TinySpec(num_heads=2, num_kv_heads=2)
        ).policy
    folder = REPO / "build" / "bench" / shape
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
        config = Qwen2Config(vocab_size=QWEN_VOCAB, max_position_embeddings=4096, **SHAPES[shape],
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def run_one(which: str, args: argparse.Namespace) -> dict:
    """Train `args.updates` updates with one trainer (ours with `args.backend`); return per-update
    seconds, seconds per phase (ours) and peak RSS."""
    import tempfile

    from transformers import TrainerCallback

    from medrlvr_trl.data import load_mcqa
    from medrlvr_trl.modeling import load_policy, load_tokenizer, load_value_model
    from medrlvr_trl.rewards.reward_model import tokenize_prompts

    model_dir = str(_model_dir(args.shape))
    dtype = "bfloat16" if args.bf16 else "float32"
    tokenizer = load_tokenizer(model_dir)
    rows = load_mcqa(str(REPO / "data/demo/medqa"), "train", limit=256)
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    def models():
        return (
            load_policy(model_dir, None, tokenizer, dtype=dtype),
            load_policy(model_dir, None, tokenizer, dtype=dtype),
            load_value_model(model_dir, None, tokenizer, dtype=dtype),
        )

    out = Path(tempfile.mkdtemp(prefix=f"bench-{which}-"))
    timer = PhaseTimer()
    if which == "ours":
        from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer

        policy, ref, value = models()
        backend_fields = BACKENDS[args.backend][1]
        trainer = MedRLVRPPOTrainer(
            args=MedRLVRPPOConfig(**_common(args, out), save_steps=10**6, **backend_fields),
            processing_class=tokenizer, model=policy, ref_model=ref, value_model=value,
            train_dataset=dataset, gold=gold, callbacks=[Stamp()],
        )  # fmt: skip
        _instrument(trainer, timer, args.backend)
    else:
        from trl.experimental.ppo import PPOConfig, PPOTrainer

        if which == "trl-no-gc":  # isolates the cost of the full gc.collect() TRL runs twice per update
            import gc

            gc.collect = lambda *a, **k: 0

        policy, ref, value = models()
        reward_model = load_value_model(model_dir, None, tokenizer, dtype=dtype)  # the policy's size
        trainer = PPOTrainer(
            args=PPOConfig(**_common(args, out)), processing_class=tokenizer, model=policy, ref_model=ref,
            reward_model=reward_model, train_dataset=dataset, value_model=value, callbacks=[Stamp()],
        )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = [b - a for a, b in zip([start, *stamps], stamps, strict=False)]
    import torch

    result = {"which": which, "backend": args.backend, "seconds": seconds}
    if which == "ours":
        timer.check_all_called()
        order = [label for _, _, label in _phases(args.backend)]
        result["phases"] = dict(timer.seconds)
        result["phase_rows"] = timer.rows(sum(seconds), order)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name()
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["policy_params"] = sum(p.numel() for p in policy.parameters())
    lengths = [
        row["verifier/response_length"]
        for row in trainer.state.log_history
        if "verifier/response_length" in row
    ]
    result["mean_response_tokens"] = sum(lengths) / len(lengths) if lengths else None
    return result


def _instrument(trainer, timer: PhaseTimer, backend: str) -> None:
    """Time each phase of our update around methods of this trainer instance and its parts."""
    owners = {
        "trainer": trainer,
        "pair": trainer.accelerator.unwrap_model(trainer.model),
        "accelerator": trainer.accelerator,
        "optimizer": trainer.optimizer,
    }
    for owner, name, label in _phases(backend):
        timer.wrap(owners[owner], name, label)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=8, help="at least 2: the first is left out as warm-up")
    parser.add_argument("--batch", type=int, default=8, help="rollouts per update")
    parser.add_argument("--response-length", type=int, default=32)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--shape", choices=["tiny", "tiny-vllm", *SHAPES], default="tiny")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--accelerate-config", help="run each trainer under `accelerate launch` with this config"
    )
    parser.add_argument(
        "--backends", nargs="+", choices=list(BACKENDS), default=["hf"],
        help="rollout backends to measure our trainer with (one column each)",
    )  # fmt: skip
    parser.add_argument("--which", choices=TRAINERS, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--backend", choices=list(BACKENDS), default="hf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "vllm" in args.backends and args.shape == "tiny":
        parser.error(
            "--backends vllm needs --shape tiny-vllm on a CPU (vLLM's attention needs head_dim >= 32)"
        )
    if args.updates < 2:
        parser.error("--updates must be at least 2 (the first update is warm-up and left out)")
    if args.which:
        print_result(run_one(args.which, args))
        return

    runs = [("ours", backend) for backend in args.backends] + [("trl", "hf"), ("trl-no-gc", "hf")]
    results = {}
    for which, backend in runs:
        cmd = [sys.executable, __file__]
        if args.accelerate_config:
            cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", args.accelerate_config,
                   "--num_processes", "1", __file__]  # fmt: skip
        cmd += ["--which", which, "--backend", backend, "--updates", str(args.updates), "--batch", str(args.batch),
                "--response-length", str(args.response_length), "--ppo-epochs", str(args.ppo_epochs),
                "--shape", args.shape]  # fmt: skip
        cmd += ["--bf16"] if args.bf16 else []
        results[which, backend] = run_child(cmd, f"{which} ({backend})")
    _print_tables(results, args)


def _median_after_first(result: dict) -> float:
    return statistics.median(result["seconds"][1:])  # the first update pays one-off warm-up costs


def _print_tables(results: dict, args: argparse.Namespace) -> None:
    ours = {backend: results["ours", backend] for backend in args.backends}
    trl, trl_no_gc = results["trl", "hf"], results["trl-no-gc", "hf"]
    first = ours[args.backends[0]]
    print(machine_line())
    print(f"{args.shape} policy ({first['policy_params'] / 1e6:.1f}M parameters), {args.batch} rollouts x "
          f"{args.response_length} tokens per update, {args.updates} updates, {args.ppo_epochs} PPO epoch(s)\n")  # fmt: skip
    print(
        "| trainer | rollouts | reward | s/update (median) | peak RSS MB |\n| --- | --- | --- | --- | --- |"
    )
    for backend, result in ours.items():
        print(f"| MedRLVRPPOTrainer | {backend}: {BACKENDS[backend][0]} | verifier "
              f"| {_median_after_first(result):.3f} | {result['peak_rss_mb']:.0f} |")  # fmt: skip
    print(f"| TRL PPOTrainer | TRL batch_generation | reward model | {_median_after_first(trl):.3f} "
          f"| {trl['peak_rss_mb']:.0f} |")  # fmt: skip
    print(f"| TRL PPOTrainer, its gc.collect() calls disabled | TRL batch_generation | reward model "
          f"| {_median_after_first(trl_no_gc):.3f} | {trl_no_gc['peak_rss_mb']:.0f} |")  # fmt: skip
    for backend, result in ours.items():
        mine = _median_after_first(result)
        print(f"\nratio TRL / ours ({backend}): {_median_after_first(trl) / mine:.2f}x "
              f"(without TRL's gc.collect(): {_median_after_first(trl_no_gc) / mine:.2f}x)")  # fmt: skip

    print(
        f"\nwhere our update's time goes (all {args.updates} updates; a row under a phase is part of it):\n"
    )
    header = " | ".join(f"{b}: seconds | {b}: share" for b in args.backends)
    print(f"| phase | {header} |\n| --- |" + " --- | --- |" * len(args.backends))
    rows = {backend: dict(result["phase_rows"]) for backend, result in ours.items()}
    names = list(dict.fromkeys(name for r in ours.values() for name, _ in r["phase_rows"]))
    totals = {backend: sum(result["seconds"]) for backend, result in ours.items()}
    for name in [*names, "whole updates"]:
        cells = []
        for backend in args.backends:
            seconds = totals[backend] if name == "whole updates" else rows[backend].get(name)
            cells.append("- | -" if seconds is None else f"{seconds:.3f} | {seconds / totals[backend]:.0%}")
        print(f"| {name} | {' | '.join(cells)} |")
    for backend, result in ours.items():
        _print_gpu_section(result, args, backend)


def _print_gpu_section(ours: dict, args: argparse.Namespace, backend: str) -> None:
    """Peak GPU memory, rollout tokens/s, and how far decoding is from the memory-bandwidth bound."""
    if "gpu" not in ours:
        return
    tokens = (ours["mean_response_tokens"] or args.response_length) * args.batch * args.updates
    rate = tokens / ours["phases"]["rollout: generation"]
    weight_bytes = ours["policy_params"] * (2 if args.bf16 else 4)
    bandwidth = next((bw for name, bw in BANDWIDTH.items() if name in ours["gpu"]), None)
    print(f"\nGPU: {ours['gpu']}; peak allocated {ours['peak_gpu_mb']:.0f} MB (ours, {backend} rollouts)")
    print(f"rollout generation: {rate:,.0f} tokens/s at batch {args.batch}")
    if bandwidth:
        # Each decode step reads every weight once: at best `batch` tokens per weight_bytes / bandwidth.
        bound = args.batch * bandwidth / weight_bytes
        print(f"memory-bandwidth bound (weights only, {bandwidth / 1e12:.2f} TB/s): {bound:,.0f} tokens/s; "
              f"measured is {rate / bound:.1%} of it")  # fmt: skip


if __name__ == "__main__":
    main()
