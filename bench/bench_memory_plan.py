"""The memory plan (`medrlvr_trl.memory_plan`, printed by `--dry_run`) against measured peaks.

    python bench/bench_memory_plan.py                 # every case; prints a markdown table
    python bench/bench_memory_plan.py --cases logits scoring
    python bench/bench_memory_plan.py --cases smoke   # seconds: checks the script runs, validates nothing

Each case is one PPO update of `MedRLVRPPOTrainer` (rollout: generation, old log-probs, reference
log-probs, values; verifier; GAE; two optimizer steps, so Adam states exist while the second
micro-batch runs) on a thin random-weight Qwen2 model with Qwen's real vocabulary (151,936), on
the CPU, in a fresh subprocess. Measured = the process's peak RSS (VmHWM) minus its RSS just before
the models are built (libraries, tokenizer and prompts already loaded), per phase of the second
update (the mark is read and reset at each phase boundary through /proc/self/clear_refs), so it
counts the three models, the optimizer and everything a phase allocates. The final checkpoint
save is skipped (not part of the plan). The estimate is `memory_plan.estimate_ppo` for the same
config, with the shape read from the case's config.json.

By default each child runs with MALLOC_MMAP_THRESHOLD_=65536: every allocation of 64 KiB or more
(every tensor that matters) gets its own mapping and goes back to the OS when freed, so RSS follows
live tensor memory, the CPU counterpart of `torch.cuda.max_memory_allocated`, which is what the plan
estimates. With glibc's default (dynamic) threshold, freed blocks of up to 32 MiB stay in the heap and
RSS keeps ~1 GiB that no tensor uses at these shapes: `--glibc-default` measures that way.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
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

QWEN_VOCAB = 151_936
# hidden, layers, intermediate, heads, kv heads | prompt, response, micro-batch, rollout chunk,
# mini-batches | gradient checkpointing, bf16 autocast. Each case makes a different term dominate.
CASES = {
    "logits": dict(hidden=64, layers=2, inter=256, heads=4, kv=2, prompt=128, response=256, micro=4, chunk=8,
                   mini=2, gc=False, bf16=False),  # update logits (4 rows x 256 x 151,936)
    "scoring": dict(hidden=128, layers=4, inter=512, heads=4, kv=2, prompt=128, response=128, micro=2, chunk=16,
                    mini=8, gc=False, bf16=False),  # rollout scoring chunk of 16 rows
    "activations": dict(hidden=512, layers=8, inter=1408, heads=8, kv=2, prompt=256, response=256, micro=4,
                        chunk=4, mini=2, gc=False, bf16=False),  # layer activations, Adam states
    "checkpointing": dict(hidden=512, layers=12, inter=1408, heads=8, kv=2, prompt=384, response=256, micro=4,
                          chunk=4, mini=2, gc=True, bf16=False),  # the same with gradient checkpointing
    "bf16-autocast": dict(hidden=512, layers=8, inter=1408, heads=8, kv=2, prompt=256, response=256, micro=4,
                          chunk=4, mini=2, gc=False, bf16=True),  # fp32 masters, bf16 autocast compute
}  # fmt: skip
# Not a validation (a few MB, where framework state dominates): the smallest run, for the test suite.
SMOKE_CASES = {
    "smoke": dict(hidden=32, layers=1, inter=64, heads=2, kv=1, prompt=16, response=8, micro=2, chunk=2, mini=1,
                  gc=False, bf16=False),
}  # fmt: skip


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _case_config(name: str, case: dict, out: Path, updates: int):
    """The trainer config and TRL ModelConfig of a case, and the folder holding its config.json."""
    from transformers import Qwen2Config
    from trl import ModelConfig

    from medrlvr_trl.ppo import MedRLVRPPOConfig

    folder = REPO / "build" / "bench" / "memory_plan" / name
    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(
        vocab_size=QWEN_VOCAB, hidden_size=case["hidden"], num_hidden_layers=case["layers"],
        intermediate_size=case["inter"], num_attention_heads=case["heads"], num_key_value_heads=case["kv"],
        max_position_embeddings=4096, tie_word_embeddings=True,
    )  # fmt: skip
    config.save_pretrained(folder)
    rollouts = case["micro"] * case["mini"]
    args = MedRLVRPPOConfig(
        output_dir=str(out), per_device_train_batch_size=case["micro"], gradient_accumulation_steps=1,
        num_mini_batches=case["mini"], num_ppo_epochs=1, total_episodes=updates * rollouts,
        response_length=case["response"], local_rollout_forward_batch_size=case["chunk"],
        max_prompt_length=case["prompt"], learning_rate=1e-5, bf16=case["bf16"], use_cpu=True,
        gradient_checkpointing=case["gc"], report_to="none", num_sample_generations=0, save_strategy="no",
        save_steps=10**6, seed=0, stop_token="eos", disable_tqdm=True, log_completions_steps=0,
    )  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(folder), dtype="bfloat16" if case["bf16"] else "float32")
    return args, model_args, folder, config


def build_trainer(name: str, case: dict, *, updates: int):
    """A case's trainer (random-weight models, random prompts), its memory estimate, and the RSS just
    before the models were built."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from medrlvr_trl import memory_plan, ppo
    from medrlvr_trl.modeling import trainable_dtype
    from medrlvr_trl.rewards import Gold
    from medrlvr_trl.rewards.reward_model import GoldTable
    from medrlvr_trl.tiny import build_tiny

    out = Path(tempfile.mkdtemp(prefix=f"bench-memory-{name}-"))
    args, model_args, folder, config = _case_config(name, case, out, updates)
    estimate = memory_plan.estimate_ppo(
        memory_plan.resolve_shape(str(folder)),
        memory_plan.PPOWorkload.from_args(args, model_args),
        memory_plan.Launch.from_env({}),
    )

    tokenizer = AutoTokenizer.from_pretrained(build_tiny(REPO / "build" / "bench" / "tiny").policy)
    tokenizer.padding_side = "left"
    rollouts = case["micro"] * case["mini"]
    generator = torch.Generator().manual_seed(0)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids])
    gold, rows = GoldTable(tokenizer.pad_token_id), []
    # Every other prompt 3 tokens short: left padding, as real batches have.
    for i in range(updates * rollouts):
        length = case["prompt"] - (3 if i % 2 else 0)
        ids = ordinary[torch.randint(len(ordinary), (length,), generator=generator)].tolist()
        gold.add(ids, Gold(answer="A", num_options=4, id=str(i)))
        rows.append(ids)
    dataset = Dataset.from_dict({"input_ids": rows})

    gc.collect()
    before = _rss_bytes()
    torch.manual_seed(0)
    master = trainable_dtype(model_args.dtype, args)
    policy = AutoModelForCausalLM.from_config(config, dtype=master)
    ref = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, model_args.dtype))
    critic_config = type(config).from_dict(config.to_dict())
    critic_config.num_labels, critic_config.pad_token_id = 1, tokenizer.pad_token_id
    critic = AutoModelForSequenceClassification.from_config(critic_config, dtype=master)
    for model in (policy, ref):
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id

    trainer = ppo.MedRLVRPPOTrainer(
        args=args, processing_class=tokenizer, model=policy, ref_model=ref, value_model=critic,
        train_dataset=dataset, gold=gold,
    )  # fmt: skip
    return trainer, estimate, before


def run_case(name: str) -> dict:
    """Two PPO updates of the case; the estimate and the measured peaks of the second, in bytes."""
    from medrlvr_trl import ppo

    case = {**CASES, **SMOKE_CASES}[name]
    max_before = _max_rss_bytes()
    trainer, estimate, before = build_trainer(name, case, updates=2)
    peaks = _instrument(trainer, ppo)
    tic = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - tic
    measured = {phase: value - before for phase, value in peaks.items()}
    return {
        "case": name, **case, "estimate": estimate.total, "peak_phase": estimate.peak_phase,
        "estimate_phases": {k: estimate.resident + v for k, v in estimate.phases.items()},
        "measured": max(measured.values()), "measured_phases": measured, "rss_before": before,
        "max_rss_before": max_before, "seconds": seconds, "line": estimate.line(),
        "grads_kept_after_step": sum(p.grad is not None for p in trainer.model.parameters()),
    }  # fmt: skip


def _instrument(trainer, ppo) -> dict[str, int]:
    """Peak RSS of each phase of the second update (Adam states exist by then): the high-water mark
    (VmHWM) is read and reset (/proc/self/clear_refs) at each phase boundary."""
    peaks: dict[str, int] = {}
    state = {"update": 0}
    rollout, update, pad_right = trainer._rollout, trainer._update, ppo._pad_right

    def mark(phase: str) -> None:
        if state["update"] == 2:
            peaks[phase] = _hwm_bytes()
        _reset_hwm()

    def rollout_wrapper(*a, **k):
        state["update"] += 1
        _reset_hwm()
        result = rollout(*a, **k)
        mark("scoring")
        return result

    def pad_right_wrapper(*a, **k):  # called once, right after the last generation chunk
        mark("generation")
        return pad_right(*a, **k)

    def update_wrapper(*a, **k):
        result = update(*a, **k)
        mark("update")
        return result

    trainer._rollout, trainer._update, ppo._pad_right = rollout_wrapper, update_wrapper, pad_right_wrapper
    ppo.save_checkpoint = lambda *a, **k: None  # the checkpoint save is not part of the plan
    return peaks


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# (label, processes, GPU memory GiB, launch); on 8 GPUs gradient_accumulation_steps 4 keeps 1,024
# rollouts per update (4 x 4 x 8 x 8), which changes only the rollout buffers per device.
FIT_TARGETS = [  # label, processes, memory_plan.GPU_GIB key, launch
    ("32 x A100-40GB, DDP", 32, "A100-40GB", dict(deepspeed=False)),
    ("32 x A100-40GB, ZeRO-2", 32, "A100-40GB", dict(deepspeed=True, zero_stage=2)),
    ("32 x A100-40GB, ZeRO-3", 32, "A100-40GB", dict(deepspeed=True, zero_stage=3)),
    ("8 x A100-40GB, ZeRO-3", 8, "A100-40GB", dict(deepspeed=True, zero_stage=3)),
    ("8 x 80GB, DDP", 8, "A100/H100-80GB", dict(deepspeed=False)),
    ("8 x 80GB, ZeRO-2", 8, "A100/H100-80GB", dict(deepspeed=True, zero_stage=2)),
    ("8 x 80GB, ZeRO-3", 8, "A100/H100-80GB", dict(deepspeed=True, zero_stage=3)),
]


def paper_fit(config: str, chunks: list[int]) -> None:
    """The estimate for the paper config on the paper's hardware and on 8 x 80 GB, by rollout chunk."""
    from dataclasses import replace

    from trl import ModelConfig

    from medrlvr_trl import memory_plan
    from medrlvr_trl.configs import MCQAScriptArguments, parse_config
    from medrlvr_trl.ppo import MedRLVRPPOConfig

    _, args, model_args = parse_config(
        [MCQAScriptArguments, MedRLVRPPOConfig, ModelConfig], ["--config", config, "--bf16", "false"]
    )
    args.bf16 = True  # the GPU run's compute dtype (parsing `bf16: true` needs a GPU)
    shape = memory_plan.resolve_shape(model_args.model_name_or_path)
    base = memory_plan.PPOWorkload.from_args(args, model_args)
    print(f"{config}: {model_args.model_name_or_path}, prompt {base.prompt_length} + response "
          f"{base.response_length}, micro-batch {base.micro_batch}, bf16, gradient checkpointing "
          f"{'on' if base.gradient_checkpointing else 'off'}; total GiB per device (peak phase); "
          f"fits = at most {memory_plan.HEADROOM:.0%} of the GPU's memory ({memory_plan.GPU_GIB} GiB)\n")  # fmt: skip
    print("| local_rollout_forward_batch_size | " + " | ".join(t[0] for t in FIT_TARGETS) + " |")
    print("| --- |" + " --- |" * len(FIT_TARGETS))
    for chunk in chunks:
        cells = []
        for _, processes, gpu, launch in FIT_TARGETS:
            per_device = base.micro_batch * args.num_mini_batches * (32 // processes)
            work = replace(base, rollout_chunk=min(chunk, per_device), rollouts_per_device=per_device)
            est = memory_plan.estimate_ppo(shape, work, memory_plan.Launch(world_size=processes, **launch))
            verdict = "fits" if est.fits(gpu) else "no"
            cells.append(f"{est.total / 2**30:.1f} ({est.peak_phase}) {verdict}")
        print(f"| {chunk}{' (config)' if chunk == args.local_rollout_forward_batch_size else ''} | "
              + " | ".join(cells) + " |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", choices=[*CASES, *SMOKE_CASES], default=list(CASES))
    parser.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold")
    parser.add_argument(
        "--paper-fit",
        metavar="CONFIG",
        help="print the estimate of a PPO config on the paper's hardware, by chunk",
    )
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 16, 8, 4, 2])
    parser.add_argument("--case", choices=[*CASES, *SMOKE_CASES], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.case:
        print_result(run_case(args.case))
        return
    if args.paper_fit:
        paper_fit(args.paper_fit, args.chunks)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    results = []
    for name in args.cases:
        results.append(run_child([sys.executable, __file__, "--case", name], f"case {name}", env=env))
        print(f"# {name}: {results[-1]['line']}", file=sys.stderr)
    gib = 2**30
    print(machine_line())
    print(
        "allocator: "
        + ("glibc default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=65536 (live tensors)")
    )
    print("\n| case | shape (hidden x layers, intermediate) | prompt + response, micro / chunk rows | gc | compute "
          "| estimate GiB (peak phase) | measured GiB | estimate / measured |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['case']} | {r['hidden']} x {r['layers']}, {r['inter']} | {r['prompt']} + {r['response']}, "
            f"{r['micro']} / {r['chunk']} | {'on' if r['gc'] else 'off'} | {'bf16 autocast' if r['bf16'] else 'fp32'} "
            f"| {r['estimate'] / gib:.2f} ({r['peak_phase']}) | {r['measured'] / gib:.2f} "
            f"| {r['estimate'] / r['measured']:.2f} |"
        )
    print("\nper phase, estimate / measured GiB (ratio), second update; seconds for both updates:\n")
    print("| case | generation | scoring | update | s |\n| --- | --- | --- | --- | --- |")
    for r in results:
        cells = [
            f"{r['estimate_phases'][p] / gib:.2f} / {r['measured_phases'][p] / gib:.2f} "
            f"({r['estimate_phases'][p] / r['measured_phases'][p]:.2f})"
            for p in ("generation", "scoring", "update")
        ]
        print(f"| {r['case']} | {' | '.join(cells)} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    from medrlvr_trl.user_errors import run_command

    run_command(lambda _argv: main())  # a missing --paper-fit config is one error line
