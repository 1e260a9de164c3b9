"""`make sanity`: PPO, GRPO and RLOO each train the sanity base (`demo.sanity.sanity_base`: the demo's
base after a format warm-up) on the sanity task (`demo.sanity`), where the gold letter follows from a
cue in the question; a control run trains PPO on shuffled gold letters. Held-out accuracy before and
after comes from the evaluation recipe; nothing here decides that a trainer "worked": the bar in
`summary.json` is computed from the measured numbers.

Every stage is a recipe run as a subprocess with the command line a user would type (logs in
`<output_dir>/logs/`). Outputs: `summary.json`, `curves.png` (training accuracy, letter entropy and
letter shares per update, one row per run), `results.md` (the table).

    python -m demo.sanity_run [--runs ppo grpo rloo control] [--seed 0] [--output_dir runs/sanity]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.pretrain import pretrain_base
from demo.run import REPO, count_lines, load_pretrain_spec, use_demo_threads
from demo.sanity import sanity_base
from medrlvr_trl.evaluation import prediction_path
from medrlvr_trl.prompts import LETTERS
from medrlvr_trl.run_logs import COMPLETIONS_FILE, METRICS_FILE, read_rows
from medrlvr_trl.stages import run_stage
from medrlvr_trl.user_errors import UserError, run_command

logger = logging.getLogger("demo.sanity_run")

CONFIG_DIR = REPO / "recipes" / "configs" / "sanity"
DATA_DIR = REPO / "data" / "sanity"
TEST_SET = "sanity"


@dataclass(frozen=True)
class Run:
    """One training run of the sanity check: which recipe, which config, which training data."""

    recipe: str
    config: str
    dataset: Path


RUNS: dict[str, Run] = {
    "ppo": Run("recipes/ppo_medqa.py", "ppo.yaml", DATA_DIR),
    "grpo": Run("recipes/grpo_medqa.py", "grpo.yaml", DATA_DIR),
    "rloo": Run("recipes/rloo_medqa.py", "rloo.yaml", DATA_DIR),
    # The control: PPO exactly as above, on training rows whose gold letters were shuffled.
    "control": Run("recipes/ppo_medqa.py", "ppo.yaml", DATA_DIR / "control"),
}
# The bar: every trainer reaches 0.80 held-out accuracy, 0.40 above the base, with 0.95 format-valid,
# and answers every cue's questions right at least half the time (greedy answers are all or nothing
# per cue, so 0.80 alone passes a policy that never learned one cue); the control rises by less than
# 0.15. Met only when every run of RUNS was made.
BAR_AFTER, BAR_LIFT, BAR_FORMAT, BAR_PER_CUE, CONTROL_MAX_LIFT = 0.80, 0.40, 0.95, 0.5, 0.15


def train(name: str, run: Run, base: Path, out: Path, seed: int, verbose: bool) -> float:
    """Run one recipe on the sanity data; returns its wall time in seconds."""
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)  # the sanity check owns its run folders
    command = [
        sys.executable,
        run.recipe,
        "--config",
        str(CONFIG_DIR / run.config),
        "--model_name_or_path",
        str(base),
        "--dataset_name",
        str(run.dataset),
        "--output_dir",
        str(run_dir),
        "--seed",
        str(seed),
    ]
    started = time.perf_counter()
    run_stage(
        name,
        command,
        out / "logs" / f"{name}.log",
        progress=lambda: (count_lines(run_dir / METRICS_FILE), None),
        verbose=verbose,
    )
    return time.perf_counter() - started


def evaluate(models: Mapping[str, str], out: Path, verbose: bool) -> dict[str, Any]:
    """Greedy held-out accuracy of every model (label -> path[:mode]) through the evaluation recipe,
    with `per_cue`: the accuracy on each gold letter's (so each cue's) questions."""
    eval_dir = out / "eval"
    command = [sys.executable, "recipes/eval_mcqa.py", "--config", str(CONFIG_DIR / "eval.yaml")]
    command += ["--output_dir", str(eval_dir), "--models", *(f"{k}={v}" for k, v in models.items())]
    run_stage("eval", command, out / "logs" / "eval.log", verbose=verbose)
    report = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    results = {}
    for label in models:
        per_cue: dict[str, list[bool]] = defaultdict(list)
        for record in read_rows(prediction_path(eval_dir, label, TEST_SET)):
            per_cue[record["answer"]].append(bool(record["correct"]))
        cues = {gold: sum(hits) / len(hits) for gold, hits in sorted(per_cue.items())}
        results[label] = {**report["results"][label][TEST_SET], "per_cue": cues}
    return results


# --- what each run's logs show, per update --------------------------------------------------------


def letter_curves(run_dir: Path, n_options: int) -> dict[str, list[float]]:
    """Per update: training accuracy, entropy of the answered letters (bits; unanswered counts as one
    more outcome) and each letter's share, read from the run's completions.jsonl."""
    by_update: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for row in read_rows(run_dir / COMPLETIONS_FILE):
        by_update[int(row["update"])].append(row)
    letters = LETTERS[:n_options]
    curves: dict[str, list[float]] = {"update": [], "accuracy": [], "letter_entropy": []}
    curves.update({letter: [] for letter in letters})
    for update in sorted(by_update):
        rows = by_update[update]
        counts = Counter(row["letter"] if row["letter"] in letters else None for row in rows)
        shares = [count / len(rows) for count in counts.values()]
        curves["update"].append(update)
        curves["accuracy"].append(sum(bool(row["correct"]) for row in rows) / len(rows))
        curves["letter_entropy"].append(-sum(p * math.log2(p) for p in shares if p > 0))
        for letter in letters:
            curves[letter].append(counts[letter] / len(rows))
    return curves


def plot_curves(curves: Mapping[str, Mapping[str, list[float]]], path: Path, *, smooth: int = 5) -> Path:
    """One row per run: training accuracy, letter entropy, letter shares (trailing means over `smooth`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def trailing(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return np.array([values[max(0, i + 1 - smooth) : i + 1].mean() for i in range(len(values))])

    fig, axes = plt.subplots(len(curves), 3, figsize=(13, 2.6 * len(curves)), squeeze=False)
    for row, (name, curve) in zip(axes, curves.items(), strict=True):
        updates = curve["update"]
        row[0].plot(updates, trailing(curve["accuracy"]), color="tab:green")
        row[0].set_ylim(0, 1)
        row[0].set_ylabel(name)
        row[1].plot(updates, trailing(curve["letter_entropy"]), color="tab:purple")
        row[1].set_ylim(0, None)
        letters = [key for key in curve if key in LETTERS]
        n_letters = len(letters)
        row[2].stackplot(updates, *[trailing(curve[letter]) for letter in letters], labels=letters)
        row[2].set_ylim(0, 1)
        for ax in row:
            ax.grid(alpha=0.3)
    axes[0][0].set_title("training accuracy")
    axes[0][1].set_title("entropy of the answered letter (bits)")
    axes[0][2].set_title("letter shares")
    axes[0][2].legend(loc="upper right", fontsize=7, ncol=n_letters)
    for ax in axes[-1]:
        ax.set_xlabel("update")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- summary -----------------------------------------------------------------------------------------


def run_summary(before: Mapping[str, Any], after: Mapping[str, Any], run_dir: Path, seconds: float) -> dict:
    return {
        "before": before["accuracy"],
        "after": after["accuracy"],
        "format_valid_after": after["format_valid_rate"],
        "per_cue_after": after["per_cue"],
        "updates": count_lines(run_dir / METRICS_FILE),
        "seconds": round(seconds, 1),
    }


def bar(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The bar, one named check per run, computed from the measured numbers; met only when every run
    of RUNS is in `summary` and every check passes."""
    checks = {}
    for name, result in summary.items():
        lift = result["after"] - result["before"]
        if name == "control":
            checks[f"control_lift_below_{CONTROL_MAX_LIFT:g}"] = lift < CONTROL_MAX_LIFT
            continue
        checks[f"{name}_after_at_least_{BAR_AFTER:g}"] = result["after"] >= BAR_AFTER
        checks[f"{name}_lift_at_least_{BAR_LIFT:g}"] = lift >= BAR_LIFT
        checks[f"{name}_format_valid_at_least_{BAR_FORMAT:g}"] = result["format_valid_after"] >= BAR_FORMAT
        checks[f"{name}_every_cue_at_least_{BAR_PER_CUE:g}"] = (
            min(result["per_cue_after"].values()) >= BAR_PER_CUE
        )
    missing = [name for name in RUNS if name not in summary]
    return {"checks": checks, "missing_runs": missing, "met": not missing and all(checks.values())}


def verdict(result: Mapping[str, Any]) -> str:
    failed = [name for name, passed in result["checks"].items() if not passed]
    if result["missing_runs"]:
        failed.append("runs not made: " + ", ".join(result["missing_runs"]))
    return "MET" if result["met"] else "NOT met: " + "; ".join(failed)


def results_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "| run | held-out before | after | lift | format-valid after | after, per cue (gold letter) | updates | seconds |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, r in summary.items():
        cues = " ".join(f"{letter} {value:.2f}" for letter, value in r["per_cue_after"].items())
        lines.append(
            f"| {name} | {r['before']:.3f} | {r['after']:.3f} | {r['after'] - r['before']:+.3f} | "
            f"{r['format_valid_after']:.3f} | {cues} | {r['updates']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


# --- the pipeline ----------------------------------------------------------------------------------


def run_sanity(runs: Sequence[str], *, seed: int, output_dir: Path, build_dir: Path, verbose: bool) -> dict:
    unknown = [name for name in runs if name not in RUNS]
    if unknown:
        raise UserError(f"unknown sanity run(s) {unknown}; choose from {list(RUNS)}")
    for name in runs:
        if not (RUNS[name].dataset / "train.jsonl").is_file():
            raise UserError(f"{RUNS[name].dataset / 'train.jsonl'} is missing: run `python -m demo.sanity`")
    output_dir.mkdir(parents=True, exist_ok=True)
    use_demo_threads()
    spec = load_pretrain_spec(REPO / "recipes" / "configs" / "demo" / "pretrain.yaml", seed=0)
    base = sanity_base(build_dir, pretrain_base(build_dir, spec).path, DATA_DIR / "train.jsonl")
    seconds = {name: train(name, RUNS[name], base, output_dir, seed, verbose) for name in runs}
    for name in runs:
        logger.info("%-8s trained in %.0f s (%s)", name, seconds[name], output_dir / name)

    accuracies = evaluate(
        {"base": f"{base}:cot", **{name: str(output_dir / name) for name in runs}}, output_dir, verbose
    )
    n_options = len(json.loads((DATA_DIR / "test.jsonl").read_text().splitlines()[0])["options"])
    results = {
        name: run_summary(accuracies["base"], accuracies[name], output_dir / name, seconds[name])
        for name in runs
    }
    summary = {**results, "bar": bar(results), "seed": seed}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot_curves(
        {name: letter_curves(output_dir / name, n_options) for name in runs}, output_dir / "curves.png"
    )
    table = results_table(results)
    (output_dir / "results.md").write_text(f"{table}\n\nBar: {verdict(summary['bar'])}\n", encoding="utf-8")
    logger.info("\n%s\n\nBar: %s", table, verdict(summary["bar"]))
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m demo.sanity_run", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help=f"Any of {', '.join(RUNS)}.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=Path, default=REPO / "runs" / "sanity")
    parser.add_argument("--build_dir", type=Path, default=REPO / "build" / "demo", help="Cache of the base.")
    parser.add_argument("--verbose", action="store_true", help="Stream every recipe's output.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_sanity(
        args.runs, seed=args.seed, output_dir=args.output_dir, build_dir=args.build_dir, verbose=args.verbose
    )


if __name__ == "__main__":
    run_command(main)
