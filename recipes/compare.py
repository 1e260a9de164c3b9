"""Every RL method on one task under one verifier, data set, seed and rollout budget (`make compare`).

    python recipes/compare.py                        # the tiny task, every method (runs/compare/tiny)
    python recipes/compare.py --task sanity          # the learnable sanity task (needs data/sanity)
    python recipes/compare.py --methods ppo grpo --updates 2
    python recipes/compare.py --task tiny --write_configs   # after editing its base.yaml

Methods: PPO (GAE critic), REINFORCE++-baseline, GRPO (TRL's default loss, dapo), Dr. GRPO, DAPO, GSPO
and RLOO. Each trains with its ordinary recipe and its config rendered from the task's one base
(`recipes/configs/compare/<task>/base.yaml`), one at a time, as a subprocess (log in
`<output_dir>/logs/`); before any training the configs are read back through the trainers' own batch
plans and must all give the same budget. Then `recipes/eval_mcqa.py` evaluates every trained model and
the untrained base on the held-out questions (greedy, one option order). Writes `compare.md` and
`compare.json` (method, final training reward, held-out accuracy, format-valid, mean response length,
wall time) and `compare.png` (reward, training accuracy, format-valid, response length per update).
What the numbers can be compared on: docs/compare.md. Runs in the output folder are replaced.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from medrlvr_trl.compare import (  # noqa: E402
    EVAL_FILE,
    REPO,
    budget_record,
    config_budget,
    load_base,
    plot_curves,
    rendered_files,
    stale_files,
    summary_rows,
    table_markdown,
    total_option,
    training_curves,
)
from medrlvr_trl.configs import parse_config  # noqa: E402
from medrlvr_trl.recipe_setup import setup_logging  # noqa: E402
from medrlvr_trl.stages import run_stage  # noqa: E402
from medrlvr_trl.user_errors import UserError, run_command  # noqa: E402

logger = logging.getLogger("compare")


@dataclass
class CompareArguments:
    task: str = field(default="tiny", metadata={"help": "tiny or sanity (recipes/configs/compare/<task>/)."})
    methods: list[str] = field(default_factory=list, metadata={"help": "Methods to run; default: all."})
    seed: int | None = field(default=None, metadata={"help": "Seed of every run; default: the base's."})
    updates: int | None = field(
        default=None, metadata={"help": "Updates of every run instead of the base's (a quick look)."}
    )
    eval_samples: int | None = field(
        default=None, metadata={"help": "Held-out questions instead of the base's."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Default: runs/compare/<task>."})
    write_configs: bool = field(
        default=False, metadata={"help": "Render the per-method configs from the task's base.yaml and stop."}
    )


def main(argv: Sequence[str] | None = None) -> Path:
    (args,) = parse_config([CompareArguments], argv)
    setup_logging()
    base = load_base(args.task)
    if args.write_configs:
        for path, text in rendered_files(base).items():
            path.write_text(text, encoding="utf-8")
            logger.info("wrote %s", path.relative_to(REPO))
        return base.folder
    check_inputs(base, args)
    methods = args.methods or list(base.methods)
    out = Path(args.output_dir or f"runs/compare/{base.task}")
    extra = {name: run_options(base, name, args) for name in methods}
    budget = check_budgets(base, methods, extra)
    logger.info(
        "compare %s: %s; each %d updates of %d prompts x %d samples x <= %d tokens",
        base.task,
        ", ".join(methods),
        budget.updates,
        budget.prompts_per_update,
        budget.samples_per_prompt,
        budget.max_tokens,
    )

    wall_s: dict[str, float] = {}
    for index, name in enumerate(methods, 1):
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)  # the comparison owns its run folders
        command = [sys.executable, base.methods[name].recipe, "--config", str(base.config_path(name))]
        command += ["--output_dir", str(run_dir), *extra[name]]
        started = time.perf_counter()
        run_stage(f"{name} ({index}/{len(methods)})", command, out / "logs" / f"{name}.log")
        wall_s[name] = time.perf_counter() - started
        logger.info("%s trained in %.1f s", name, wall_s[name])

    label = base.eval["datasets"][0].split("=", 1)[0]
    models = [f"base={base.shared['model_name_or_path']}:cot", *(f"{name}={out / name}" for name in methods)]
    command = [sys.executable, "recipes/eval_mcqa.py", "--config", str(base.folder / EVAL_FILE)]
    command += ["--output_dir", str(out / "eval"), "--models", *models]
    if args.eval_samples is not None:
        command += ["--max_samples", str(args.eval_samples)]
    started = time.perf_counter()
    run_stage("held-out evaluation", command, out / "logs" / "eval.log")
    eval_s = time.perf_counter() - started
    results = json.loads((out / "eval" / "results.json").read_text(encoding="utf-8"))["results"]
    heldout = {model: results[model][label] for model in ["base", *methods]}

    curves = {name: training_curves(out / name) for name in methods}
    rows = summary_rows(methods, curves, heldout, wall_s, budget)
    table = table_markdown(rows, budget, base.task)
    (out / "compare.md").write_text(table, encoding="utf-8")
    record = {
        "task": base.task,
        "budget": budget_record(budget),
        "seed": args.seed if args.seed is not None else base.shared.get("seed"),
        "heldout": base.eval["datasets"][0],
        "rows": rows,
        "eval_wall_time_s": round(eval_s, 1),
        "arguments": asdict(args),
    }
    (out / "compare.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    title = (
        f"{base.task}: {budget.prompts_per_update} prompts x {budget.samples_per_prompt} samples x "
        f"<= {budget.max_tokens} tokens per update, same verifier and seed"
    )
    plot_curves(curves, out / "compare.png", title=title)
    logger.info("held-out evaluation in %.1f s\n%s", eval_s, table)
    logger.info("table %s, %s; figure %s", out / "compare.md", out / "compare.json", out / "compare.png")
    return out


def check_inputs(base, args: CompareArguments) -> None:
    """Everything a run needs, before anything trains; each gap is one line (exit code 2). The command
    line first: a misspelt method is reported as such on a fresh clone too, where inputs are missing."""
    unknown = sorted(set(args.methods) - set(base.methods))
    if unknown:
        raise UserError(
            f"--methods: unknown {', '.join(unknown)}; the {base.task} task has {', '.join(base.methods)}"
        )
    for path, hint in base.requires.items():
        if not (REPO / path).exists():
            raise UserError(f"{path} does not exist: {hint}")
    stale = stale_files(base)
    if stale:
        raise UserError(
            f"{', '.join(str(p.relative_to(REPO)) for p in stale)} out of date with {base.task}/base.yaml; "
            f"run python recipes/compare.py --task {base.task} --write_configs"
        )
    for name, value in (("--updates", args.updates), ("--eval_samples", args.eval_samples)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")


def run_options(base, name: str, args: CompareArguments) -> list[str]:
    """Command-line options every run gets alike: the seed, and the number of updates if changed."""
    options = []
    if args.seed is not None:
        options += ["--seed", str(args.seed)]
    if args.updates is not None:
        family = base.methods[name].family
        options += [f"--{total_option(family)}", str(args.updates * base.budget.completions_per_update)]
    return options


def check_budgets(base, methods: Sequence[str], extra: dict[str, list[str]]):
    """Each run's budget as its trainer plans it (the rendered config plus its options): all equal."""
    budgets = {
        name: config_budget(base.methods[name].family, base.config_path(name), *extra[name])
        for name in methods
    }
    if len(set(budgets.values())) != 1:
        raise UserError(f"the runs' budgets differ: {budgets}")
    return next(iter(budgets.values()))


if __name__ == "__main__":
    run_command(main)
