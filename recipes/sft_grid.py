"""SFT learning-rate grid (Med-RLVR, "SFT baseline": lr from {1e-5, 5e-6, 1e-6} by MedQA dev accuracy).

    python recipes/sft_grid.py --config recipes/configs/tiny/sft_grid.yaml
    python recipes/sft_grid.py --config recipes/configs/sft_grid_qwen2.5-3b.yaml \
        --launcher "accelerate launch --config_file launch/zero2.yaml"

Each learning rate is one ordinary `recipes/sft_medqa.py` run (into `grid_dir/lr_<value>`), started
with `launcher`; then `recipes/eval_mcqa.py` scores every run on the dev set in one go. Writes
`grid.json` and `grid.md` (all runs) and a `best` link to the winner into `grid_dir`. A run that
already finished (its `run_info.json` exists) is reused, so an interrupted grid continues.
SIGTERM or SIGUSR1 to the process group stops the running SFT run with a checkpoint (see
`recipes/sft_medqa.py`) and then the grid, with exit code 0; the same command continues both. A
signal to the grid's own process alone lets the running SFT run finish, then stops the grid.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.configs import parse_config  # noqa: E402
from medrlvr_trl.data import load_mcqa  # noqa: E402
from medrlvr_trl.evaluation import parse_dataset_specs  # noqa: E402
from medrlvr_trl.preemption import PreemptionHandler  # noqa: E402
from medrlvr_trl.progress import Progress  # noqa: E402
from medrlvr_trl.recipe_setup import setup_logging  # noqa: E402
from medrlvr_trl.run_info import is_finished  # noqa: E402
from medrlvr_trl.sft import grid_markdown, grid_run_name, pick_best  # noqa: E402
from medrlvr_trl.user_errors import UserError, run_command  # noqa: E402

logger = logging.getLogger("sft_grid")
RECIPES = Path(__file__).resolve().parent


@dataclass
class SFTGridArguments:
    """Options of the grid (YAML via --config, every field overridable on the command line)."""

    sft_config: str = field(metadata={"help": "SFT recipe config each grid run starts from."})
    dev_dataset: str = field(
        metadata={
            "help": "Dev set as LABEL=SOURCE[@SPLIT][@category=NAME][@revision=COMMIT], e.g. "
            "medqa_dev=data/medqa@dev."
        }
    )
    learning_rates: list[float] = field(
        default_factory=lambda: [1e-5, 5e-6, 1e-6], metadata={"help": "The grid (paper: 1e-5, 5e-6, 1e-6)."}
    )
    grid_dir: str = field(default="runs/sft_grid", metadata={"help": "Folder for the runs and the table."})
    max_dev_samples: int | None = field(default=None, metadata={"help": "Score only the first N dev rows."})
    launcher: str = field(
        default="accelerate launch",
        metadata={"help": "Command that starts each recipe (SFT and eval); 'python' runs one process."},
    )
    sft_args: str = field(default="", metadata={"help": "Extra command-line options for every SFT run."})
    eval_args: str = field(
        default="", metadata={"help": "Extra command-line options for the dev evaluation."}
    )


def main(argv: Sequence[str] | None = None) -> Path:
    (args,) = parse_config([SFTGridArguments], argv)
    setup_logging()
    grid_dir = Path(args.grid_dir)
    check_inputs(args)

    runs = {grid_run_name(lr): (lr, grid_dir / grid_run_name(lr)) for lr in args.learning_rates}
    finished = sum(is_finished(out) for _, out in runs.values())
    progress = Progress("SFT grid", len(runs), unit="runs", every_s=0, done=finished)  # runs log their steps
    for name, (lr, out) in runs.items():
        if is_finished(out):
            logger.info("%s: finished earlier, reusing %s", name, out)
            continue
        command = [
            *launcher_command(args.launcher),
            str(RECIPES / "sft_medqa.py"),
            "--config",
            args.sft_config,
        ]
        command += ["--learning_rate", repr(lr), "--output_dir", str(out), *resume_options(out)]
        # A stop signal ends the grid after this run: the grid waits for the run's checkpoint.
        with PreemptionHandler() as preemption:
            run(command + shlex.split(args.sft_args), f"SFT run {name}")
        if preemption.received or not is_finished(out):
            logger.info("%s stopped before the grid finished; run the same command to continue", name)
            return grid_dir
        progress.advance()

    dev_label = parse_dataset_specs(args.dev_dataset)[0].label
    eval_dir = grid_dir / "dev_eval"
    command = [*launcher_command(args.launcher), str(RECIPES / "eval_mcqa.py")]
    command += ["--models", ",".join(f"{name}={out}" for name, (_, out) in runs.items())]
    command += [
        "--datasets",
        args.dev_dataset,
        "--output_dir",
        str(eval_dir),
        "--overwrite_output_dir",
        "true",
    ]
    if args.max_dev_samples is not None:
        command += ["--max_samples", str(args.max_dev_samples)]
    run(command + shlex.split(args.eval_args), "dev evaluation")

    results = json.loads((eval_dir / "results.json").read_text())["results"]
    rows = [
        {"learning_rate": lr, "model": str(out), **results[name][dev_label]}
        for name, (lr, out) in runs.items()
    ]
    best = pick_best(rows)
    (grid_dir / "grid.json").write_text(
        json.dumps({"dev": dev_label, "runs": rows, "best": best}, indent=2) + "\n"
    )
    (grid_dir / "grid.md").write_text(grid_markdown(rows, best, dev_label))
    link = grid_dir / "best"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(best["model"]).name)
    logger.info(
        "best learning rate %g (dev accuracy %.1f%%): %s", best["learning_rate"], 100 * best["accuracy"], link
    )
    logger.info("table: %s", grid_dir / "grid.md")
    return grid_dir


def check_inputs(args: SFTGridArguments) -> None:
    """Fail before any training if the config or the dev set cannot be used."""
    if not Path(args.sft_config).is_file():
        raise UserError(f"sft_config {args.sft_config!r} does not exist")
    if not args.learning_rates or len(set(args.learning_rates)) != len(args.learning_rates):
        raise UserError(f"learning_rates must be a non-empty list without repeats, got {args.learning_rates}")
    specs = parse_dataset_specs(args.dev_dataset)
    if len(specs) != 1:
        raise UserError(f"dev_dataset: give exactly one dataset, got {len(specs)}")
    spec = specs[0]
    load_mcqa(
        spec.source,
        split=spec.split,
        category=spec.category,
        limit=args.max_dev_samples,
        revision=spec.revision,
    )


def launcher_command(launcher: str) -> list[str]:
    """Split the launcher; `python` and `accelerate` resolve to this interpreter's environment.

    So `python recipes/sft_grid.py` from an activated or an unactivated virtualenv behaves the same.
    """
    words = shlex.split(launcher) or ["python"]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    sibling = Path(sys.executable).parent / words[0]
    if "/" not in words[0] and sibling.is_file():
        return [str(sibling), *words[1:]]
    return words


def resume_options(out: Path) -> list[str]:
    """Continue an interrupted run from its last checkpoint, or restart one that saved none."""
    if not out.is_dir() or not any(out.iterdir()):
        return []
    if any(p.is_dir() and p.name.startswith("checkpoint-") for p in out.iterdir()):
        return ["--resume_from_checkpoint", "last"]
    return ["--overwrite_output_dir", "true"]


def run(command: list[str], what: str) -> None:
    logger.info("%s: %s", what, shlex.join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {completed.returncode}: {shlex.join(command)}")


if __name__ == "__main__":
    run_command(main)
