"""`make demo`: the whole Med-RLVR experiment in miniature, offline, on a CPU.

Stages (one log line each, a progress bar while it runs):
  1. base      the committed demo base `data/demo/base` (the demo corpus plus option-lookup drills,
               `make demo-base`), or with --pretrain one trained on the corpus alone (`demo.pretrain`,
               cached in build/demo)
  2. sft       the matched answer-only baseline (`recipes/sft_medqa.py`)
  3. ppo       PPO with the verifier as the only reward (`recipes/ppo_medqa.py`)
  4. eval      base (direct and CoT prompts), SFT and PPO on the ID and OOD test sets
               (`recipes/eval_mcqa.py`, which also draws the Figure-3 style chart)
  5. report    comparison table, PPO training curves and `summary.json`

Recipes run as subprocesses with exactly the command lines a user would type (their full output goes
to `<output_dir>/logs/<stage>.log`), so the demo exercises the real entry points, not a shortcut.
Nothing here decides whether RLVR "worked": the learning bar in `summary.json` is computed from the
measured accuracies, and the table is printed whatever it shows.

    python -m demo.run [--seed 0] [--ppo_updates 150] [--output_dir runs/demo] [--pretrain]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from demo.pretrain import PretrainSpec, pretrain_base
from medrlvr_trl.stages import OFFLINE_ENV, run_stage
from medrlvr_trl.tiny import TinySpec
from medrlvr_trl.user_errors import UserError, run_command

logger = logging.getLogger("demo.run")

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "recipes" / "configs" / "demo"
# Measured on the 2-core demo machine: the tiny model trains faster on one intra-op thread than on
# two (0.6 s vs 1.0-1.4 s per pretraining step); set OMP_NUM_THREADS yourself to override.
DEFAULT_THREADS = "1"
ID_SPLIT, OOD_SPLIT = "medqa", "mmlu_pro_health"
MODEL_ORDER = ("random", "base-direct", "base-cot", "sft", "ppo")
# The learning bar of the demo: measured on the ID test, never assumed.
BAR_POINTS_OVER_BASE_COT = 25.0
BAR_TIMES_CHANCE = 2.0
BAR_FORMAT_VALID = 0.90


@dataclass(frozen=True)
class DemoOptions:
    """What one demo run does; the defaults are `make demo`."""

    output_dir: Path = REPO / "runs" / "demo"
    build_dir: Path = REPO / "build" / "demo"
    config_dir: Path = CONFIG_DIR
    seed: int = 0
    pretrain_seed: int = 0
    pretrain_steps: int | None = None
    base_model: Path | None = REPO / "data" / "demo" / "base"  # None: pretrain one on the corpus
    ppo_updates: int | None = None
    eval_max_samples: int | None = None
    skip_sft: bool = False
    verbose: bool = False


# --- configuration ---------------------------------------------------------------------------------


def load_pretrain_spec(path: Path, *, seed: int, steps: int | None = None) -> PretrainSpec:
    """Read the demo's pretraining YAML into a `PretrainSpec`; unknown keys are an error."""
    loaded = _read_yaml(path)
    tiny_keys = {f.name for f in fields(TinySpec)} - {"extra_corpora", "seed", "pad_equals_eos"}
    spec_keys = {f.name for f in fields(PretrainSpec)} - {"tiny"}
    unknown = sorted(set(loaded) - tiny_keys - spec_keys)
    if unknown:
        raise UserError(
            f"{path}: unknown option(s) {', '.join(unknown)}; known: {sorted(tiny_keys | spec_keys)}"
        )
    corpus = str(_repo_path(loaded.get("corpus", PretrainSpec.corpus)))
    tiny = TinySpec(**{k: v for k, v in loaded.items() if k in tiny_keys}, seed=seed, extra_corpora=(corpus,))
    values = {k: v for k, v in loaded.items() if k in spec_keys}
    values.update(corpus=corpus, seed=seed)
    if steps is not None:
        values["steps"] = steps
        values["warmup_steps"] = min(
            values.get("warmup_steps", PretrainSpec.warmup_steps), max(0, steps // 10)
        )
    return PretrainSpec(tiny=tiny, **values)


def rollouts_per_update(ppo_config: Mapping[str, Any]) -> int:
    """PPO rollouts per update on one process: micro-batch x accumulation x mini-batches."""
    return (
        int(ppo_config.get("per_device_train_batch_size", 1))
        * int(ppo_config.get("gradient_accumulation_steps", 1))
        * int(ppo_config.get("num_mini_batches", 1))
    )


DEMO_CONFIGS = ("pretrain.yaml", "sft.yaml", "ppo.yaml", "eval.yaml")  # what --config_dir must hold


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"demo config {path} does not exist; --config_dir must hold the demo's YAML files")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: a config file must be a YAML mapping of option names to values")
    return loaded


def _repo_path(value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO / path


# --- running stages --------------------------------------------------------------------------------


@dataclass
class StageClock:
    """Wall time of each finished stage, in order."""

    seconds: dict[str, float]

    def record(self, stage: str, started: float) -> float:
        self.seconds[stage] = round(time.perf_counter() - started, 1)
        return self.seconds[stage]


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


def tqdm_progress(log_path: Path) -> tuple[int, int | None]:
    """The last "done/total" a tqdm bar wrote into a log (the SFT trainer's bar), or (0, None)."""
    try:
        tail = log_path.read_bytes()[-4000:].decode("utf-8", errors="replace")
    except OSError:
        return 0, None
    matches = re.findall(r"(\d+)/(\d+) \[", tail)
    return (int(matches[-1][0]), int(matches[-1][1])) if matches else (0, None)


# --- the pipeline ----------------------------------------------------------------------------------


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run every stage and write the report; returns the summary that went to `summary.json`."""
    os.environ.update(OFFLINE_ENV)
    use_demo_threads()
    out, configs = options.output_dir, options.config_dir
    python = sys.executable
    clock = StageClock({})
    for name in DEMO_CONFIGS:  # before anything of an earlier demo is removed
        if not (configs / name).is_file() and not (name == "sft.yaml" and options.skip_sft):
            raise UserError(
                f"demo config {configs / name} does not exist; --config_dir must hold {', '.join(DEMO_CONFIGS)}"
            )
    if options.base_model is not None and not (options.base_model / "config.json").is_file():
        raise UserError(
            f"--base_model {options.base_model}: no config.json there; give a Hugging Face model folder"
        )
    spec = load_pretrain_spec(
        configs / "pretrain.yaml", seed=options.pretrain_seed, steps=options.pretrain_steps
    )
    for stale in ("sft", "ppo", "eval", "logs"):
        shutil.rmtree(out / stale, ignore_errors=True)  # the demo owns these; a rerun starts clean
    out.mkdir(parents=True, exist_ok=True)
    total = 4 if options.skip_sft else 5
    step = iter(range(1, total + 1))

    started = time.perf_counter()
    if options.base_model is None:
        pretrained = pretrain_base(options.build_dir, spec)
        base_path, base_loss = pretrained.path, pretrained.final_loss
        how = "cached" if not pretrained.rebuilt else f"{spec.steps} steps, final loss {base_loss:.2f}"
    else:
        base_path, base_loss, how = options.base_model, None, "given"
    logger.info(
        "[%d/%d] base      %s (%s) in %.0f s",
        next(step),
        total,
        _rel(base_path),
        how,
        clock.record("base", started),
    )
    base_dir = str(base_path)

    sft_dir = out / "sft"
    if not options.skip_sft:
        started = time.perf_counter()
        sft_log = out / "logs" / "sft.log"
        run_stage(
            "sft",
            [
                python,
                "recipes/sft_medqa.py",
                "--config",
                str(configs / "sft.yaml"),
                "--model_name_or_path",
                base_dir,
                "--output_dir",
                str(sft_dir),
                "--seed",
                str(options.seed),
            ],
            sft_log,
            progress=lambda: tqdm_progress(sft_log),
            verbose=options.verbose,
        )
        logger.info(
            "[%d/%d] sft       %s (answer-only target) in %.0f s",
            next(step),
            total,
            _rel(sft_dir),
            clock.record("sft", started),
        )

    ppo_config = _read_yaml(configs / "ppo.yaml")
    per_update = rollouts_per_update(ppo_config)
    episodes = (
        int(ppo_config["total_episodes"]) if options.ppo_updates is None else options.ppo_updates * per_update
    )
    updates = episodes // per_update
    ppo_dir = out / "ppo"
    started = time.perf_counter()
    run_stage(
        "ppo",
        [
            python,
            "recipes/ppo_medqa.py",
            "--config",
            str(configs / "ppo.yaml"),
            "--model_name_or_path",
            base_dir,
            "--output_dir",
            str(ppo_dir),
            "--seed",
            str(options.seed),
            "--total_episodes",
            str(episodes),
        ],
        out / "logs" / "ppo.log",
        progress=lambda: (count_lines(ppo_dir / "metrics.jsonl"), updates),
        verbose=options.verbose,
    )
    curve = read_metrics(ppo_dir / "metrics.jsonl")
    logger.info(
        "[%d/%d] ppo       %s: %d updates x %d rollouts, reward %.2f -> %.2f in %.0f s",
        next(step),
        total,
        _rel(ppo_dir),
        len(curve),
        per_update,
        window_mean(curve, "verifier/reward", first=True),
        window_mean(curve, "verifier/reward", first=False),
        clock.record("ppo", started),
    )

    eval_dir = out / "eval"
    models = [f"base-direct={base_dir}:direct", f"base-cot={base_dir}:cot", f"ppo={ppo_dir}"]
    if not options.skip_sft:
        models.insert(2, f"sft={sft_dir}")
    eval_config = _read_yaml(configs / "eval.yaml")
    jobs = len(models) * len(eval_config.get("datasets", []))
    command = [
        python,
        "recipes/eval_mcqa.py",
        "--config",
        str(configs / "eval.yaml"),
        "--output_dir",
        str(eval_dir),
    ]
    command += ["--models", *models]
    if options.eval_max_samples is not None:
        command += ["--max_samples", str(options.eval_max_samples)]
    started = time.perf_counter()
    run_stage(
        "eval",
        command,
        out / "logs" / "eval.log",
        progress=lambda: (len(list((eval_dir / "predictions").glob("*.jsonl"))), jobs),
        verbose=options.verbose,
    )
    logger.info(
        "[%d/%d] eval      %d models x %d test sets in %.0f s",
        next(step),
        total,
        len(models),
        len(eval_config.get("datasets", [])),
        clock.record("eval", started),
    )

    report = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    results = report["results"]
    summary = build_summary(
        results,
        curve,
        options=options,
        base_model=base_path,
        pretrain_final_loss=base_loss,
        seconds=clock.seconds,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(eval_dir / "accuracy.png", out / "accuracy.png")
    plot_ppo_curves(curve, out / "ppo_curves.png")
    table = comparison_table(results, report.get("constant_letter"))
    (out / "results.md").write_text(
        table + "\n" + learning_bar_text(summary["learning_bar"]) + "\n", encoding="utf-8"
    )
    logger.info(
        "[%d/%d] report    %s, %s, %s\n\n%s\n\n%s",
        next(step),
        total,
        _rel(out / "summary.json"),
        _rel(out / "accuracy.png"),
        _rel(out / "ppo_curves.png"),
        table,
        learning_bar_text(summary["learning_bar"]),
    )
    return summary


def use_demo_threads() -> None:
    """`OMP_NUM_THREADS` (default `DEFAULT_THREADS`) intra-op threads, here and in every stage it starts."""
    import torch

    value = os.environ.get("OMP_NUM_THREADS", "").strip() or DEFAULT_THREADS  # set but empty: the default
    if not value.isdigit() or int(value) < 1:
        raise UserError(
            f"OMP_NUM_THREADS={value!r}: need a positive integer (or unset it for {DEFAULT_THREADS})"
        )
    os.environ["OMP_NUM_THREADS"] = value
    torch.set_num_threads(int(value))


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --- report ----------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """PPO's metrics.jsonl rows (one per update), in update order."""
    from medrlvr_trl.run_logs import read_rows

    if not path.is_file():
        raise ValueError(f"{path} does not exist: the PPO stage wrote no metrics")
    return sorted(read_rows(path), key=lambda row: row.get("update", 0))


def window_mean(rows: Sequence[Mapping[str, Any]], key: str, *, first: bool, fraction: float = 0.2) -> float:
    """Mean of `key` over the first (or last) `fraction` of the updates (at least one update)."""
    if not rows:
        raise ValueError("no PPO updates to average")
    size = max(1, int(len(rows) * fraction))
    window = rows[:size] if first else rows[-size:]
    return sum(float(row[key]) for row in window) / len(window)


def learning_bar(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """The demo's learning bar on the ID test, computed from measured accuracies."""
    ppo, base_cot, chance = (
        results["ppo"][ID_SPLIT],
        results["base-cot"][ID_SPLIT],
        results["random"][ID_SPLIT],
    )
    points = 100 * (ppo["accuracy"] - base_cot["accuracy"])
    ratio = ppo["accuracy"] / chance["accuracy"]
    checks = {
        f"ppo_minus_base_cot_at_least_{BAR_POINTS_OVER_BASE_COT:g}_points": points
        >= BAR_POINTS_OVER_BASE_COT,
        f"ppo_at_least_{BAR_TIMES_CHANCE:g}x_chance": ratio >= BAR_TIMES_CHANCE,
        f"ppo_format_valid_at_least_{100 * BAR_FORMAT_VALID:g}%": ppo["format_valid_rate"]
        >= BAR_FORMAT_VALID,
    }
    return {
        "split": ID_SPLIT,
        "ppo_accuracy": ppo["accuracy"],
        "base_cot_accuracy": base_cot["accuracy"],
        "chance_accuracy": chance["accuracy"],
        "ppo_minus_base_cot_points": round(points, 2),
        "ppo_over_chance": round(ratio, 3),
        "ppo_format_valid_rate": ppo["format_valid_rate"],
        "checks": checks,
        "met": all(checks.values()),
    }


def learning_bar_text(bar: Mapping[str, Any]) -> str:
    verdict = "MET" if bar["met"] else "NOT met"
    return (
        f"Learning bar ({bar['split']} test): PPO {100 * bar['ppo_accuracy']:.1f}% vs base CoT "
        f"{100 * bar['base_cot_accuracy']:.1f}% ({bar['ppo_minus_base_cot_points']:+.1f} points, need "
        f"+{BAR_POINTS_OVER_BASE_COT:g}); {bar['ppo_over_chance']:.2f}x chance "
        f"{100 * bar['chance_accuracy']:.1f}% "
        f"(need {BAR_TIMES_CHANCE:g}x); PPO format-valid {100 * bar['ppo_format_valid_rate']:.1f}% (need "
        f"{100 * BAR_FORMAT_VALID:g}%): {verdict}"
    )


def build_summary(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    curve: Sequence[Mapping[str, Any]],
    *,
    options: DemoOptions,
    base_model: Path,
    pretrain_final_loss: float | None,  # None unless --pretrain
    seconds: Mapping[str, float],
) -> dict[str, Any]:
    """Everything `summary.json` holds: per model and split accuracy (+ bootstrap std) and
    format-valid rate, the PPO reward trend, the learning bar and the stage timings."""
    models = {
        label: {
            split: {
                key: values[key]
                for key in ("accuracy", "accuracy_std", "format_valid_rate", "n", "mean_completion_tokens")
                if key in values
            }
            for split, values in per_split.items()
        }
        for label, per_split in results.items()
    }
    trend = {
        key.split("/")[-1]: {
            "first_20pct": round(window_mean(curve, key, first=True), 4),
            "last_20pct": round(window_mean(curve, key, first=False), 4),
        }
        for key in ("verifier/reward", "verifier/accuracy", "verifier/format_ok", "verifier/response_length")
    }
    return {
        "seed": options.seed,
        "pretrain_seed": options.pretrain_seed,
        "base_model": _rel(base_model),
        "pretrain_final_loss": pretrain_final_loss,
        "models": models,
        "ppo_training": {"updates": len(curve), **trend},
        "learning_bar": learning_bar(results),
        "seconds": dict(seconds),
    }


def comparison_table(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    constant_letter: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Markdown: accuracy +- bootstrap std and format-valid rate per model, ID and OOD; then, given
    results.json's `constant_letter`, the best score of always naming one letter (a floor above random
    when gold letters are uneven)."""
    splits = (ID_SPLIT, OOD_SPLIT)
    lines = [
        "| model | " + " | ".join(f"{s} acc (%) | {s} format-valid (%)" for s in splits) + " |",
        "|---|" + "---:|---:|" * len(splits),
    ]
    for label in [m for m in MODEL_ORDER if m in results] + [m for m in results if m not in MODEL_ORDER]:
        cells = []
        for split in splits:
            values = results[label].get(split)
            if values is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{100 * values['accuracy']:.1f} +- {100 * values['accuracy_std']:.1f}")
            rate = values.get("format_valid_rate")
            cells.append("-" if rate is None else f"{100 * rate:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if constant_letter:
        cells = []
        for split in splits:
            floor = constant_letter.get(split)
            cells += (
                ["-", "-"]
                if floor is None
                else [
                    f"{100 * floor['accuracy']:.1f} +- {100 * floor['accuracy_std']:.1f} ({floor['letter']})",
                    "-",
                ]
            )
        lines.append("| constant letter | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_ppo_curves(rows: Sequence[Mapping[str, Any]], path: Path, *, smooth: int = 10) -> Path:
    """Reward (and accuracy), response length and format-valid rate over PPO updates.

    Thin lines are per-update values, thick lines a trailing mean over `smooth` updates.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    updates = np.array([row["update"] for row in rows])
    panels = (
        ("verifier reward / accuracy", ("verifier/reward", "verifier/accuracy")),
        ("response length (tokens)", ("verifier/response_length",)),
        ("format-valid rate", ("verifier/format_ok",)),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for index, key in enumerate(keys):
            values = np.array([float(row[key]) for row in rows])
            color = plt.get_cmap("tab10")(index)
            ax.plot(updates, values, color=color, alpha=0.3, linewidth=0.8)
            kernel = np.ones(min(smooth, len(values))) / min(smooth, len(values))
            trailing = np.convolve(values, kernel, mode="full")[: len(values)]
            trailing[: len(kernel) - 1] = [values[: i + 1].mean() for i in range(len(kernel) - 1)]
            ax.plot(updates, trailing, color=color, linewidth=2, label=key.split("/")[-1])
        ax.set_title(title)
        ax.set_xlabel("PPO update")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- command line ----------------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m demo.run",
        description="Offline Med-RLVR in miniature: base -> SFT -> PPO -> evaluation -> report.",
    )
    parser.add_argument("--output_dir", type=Path, default=DemoOptions.output_dir)
    parser.add_argument(
        "--build_dir", type=Path, default=DemoOptions.build_dir, help="Cache of the base model."
    )
    parser.add_argument("--config_dir", type=Path, default=DemoOptions.config_dir)
    parser.add_argument("--seed", type=int, default=0, help="Seed of SFT and PPO.")
    parser.add_argument(
        "--base_model",
        type=Path,
        default=DemoOptions.base_model,
        help="The base model folder (default: the committed demo base, which `make demo-base` rebuilds).",
    )
    parser.add_argument(
        "--pretrain",
        action="store_true",
        help="Pretrain a base on the demo corpus alone instead (cached in --build_dir; no lookup drills).",
    )
    parser.add_argument(
        "--pretrain_seed", type=int, default=0, help="With --pretrain: its seed (a new one retrains it)."
    )
    parser.add_argument(
        "--pretrain_steps", type=int, default=None, help="With --pretrain: override its steps."
    )
    parser.add_argument("--ppo_updates", type=int, default=None, help="Override the number of PPO updates.")
    parser.add_argument(
        "--eval_max_samples", type=int, default=None, help="Evaluate on the first N questions."
    )
    parser.add_argument("--skip_sft", action="store_true", help="Leave out the SFT baseline.")
    parser.add_argument("--verbose", action="store_true", help="Stream every recipe's output.")
    args = parser.parse_args(argv)
    if not args.pretrain and (args.pretrain_seed != 0 or args.pretrain_steps is not None):
        parser.error("--pretrain_seed and --pretrain_steps apply to --pretrain only")
    if args.pretrain:
        args.base_model = None
    del args.pretrain
    return DemoOptions(**vars(args))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = parse_options(argv)
    # A terminated demo (SIGTERM) unwinds like Ctrl-C, so the running recipe is killed with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    summary = run_demo(options)
    logger.info(
        "demo finished in %.0f s; everything is in %s",
        time.perf_counter() - started,
        _rel(options.output_dir),
    )
    return summary


if __name__ == "__main__":
    run_command(main)
