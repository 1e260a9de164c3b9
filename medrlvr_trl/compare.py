"""One comparison of the RL methods under one verifier, data set, seed and rollout budget (`make compare`).

A task's `recipes/configs/compare/<task>/base.yaml` names the budget (prompts x samples x max tokens per
update, updates, optimizer steps per update), the options every recipe shares, and per method the options
that make it that method. `method_config` renders one ordinary recipe config per method from it, so the
budget is the same by construction; `config_budget` reads a rendered config back through the trainer's
own batch plan (`ppo.plan_batches`, `critic_free.plan_generations`), which is what the check and the tests
compare. `summary_rows`, `table_markdown` and `plot_curves` turn the runs' `metrics.jsonl` and the
evaluation's `results.json` into the table and the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from medrlvr_trl.run_logs import METRICS_FILE, read_rows
from medrlvr_trl.user_errors import UserError

REPO = Path(__file__).resolve().parent.parent
CONFIG_ROOT = REPO / "recipes" / "configs" / "compare"
BASE_FILE = "base.yaml"
EVAL_FILE = "eval.yaml"
RECIPES = {"ppo": "recipes/ppo_medqa.py", "grpo": "recipes/grpo_medqa.py", "rloo": "recipes/rloo_medqa.py"}
BASE_KEYS = ("requires", "budget", "shared", "families", "methods", "eval")
BUDGET_KEYS = (
    "prompts_per_update",
    "samples_per_prompt",
    "max_tokens",
    "updates",
    "optimizer_steps_per_update",
)
# The per-update curves of the figure: metrics.jsonl key -> panel title (every RL recipe writes these).
CURVES = {
    "verifier/reward": "training reward",
    "verifier/accuracy": "training accuracy",
    "verifier/format_ok": "format-valid (training)",
    "verifier/response_length": "response length (tokens)",
}


@dataclass(frozen=True)
class Budget:
    """What one method spends: completions per update (prompts x samples), their token cap, updates."""

    prompts_per_update: int
    samples_per_prompt: int
    max_tokens: int
    updates: int
    optimizer_steps_per_update: int

    @property
    def completions_per_update(self) -> int:
        return self.prompts_per_update * self.samples_per_prompt


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # ppo, grpo or rloo: which recipe trains it
    options: dict[str, Any]

    @property
    def recipe(self) -> str:
        return RECIPES[self.family]


@dataclass(frozen=True)
class CompareBase:
    """A task's base.yaml, checked."""

    task: str
    folder: Path
    requires: dict[str, str]
    budget: Budget
    shared: dict[str, Any]
    families: dict[str, dict[str, Any]]
    methods: dict[str, Method]
    eval: dict[str, Any]

    def config_path(self, method: str) -> Path:
        return self.folder / f"{method}.yaml"


def tasks() -> list[str]:
    return sorted(p.parent.name for p in CONFIG_ROOT.glob(f"*/{BASE_FILE}"))


def load_base(task: str, root: Path = CONFIG_ROOT) -> CompareBase:
    path = root / task / BASE_FILE
    if not path.is_file():
        raise UserError(f"--task {task}: {path} does not exist; tasks: {', '.join(tasks())}")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(loaded) - set(BASE_KEYS))
    missing = sorted(set(BASE_KEYS) - {"requires"} - set(loaded))
    if unknown or missing:
        raise UserError(
            f"{path}: unknown sections {unknown}, missing sections {missing}; it holds {BASE_KEYS}"
        )
    budget = loaded["budget"]
    if sorted(budget) != sorted(BUDGET_KEYS) or not all(
        isinstance(v, int) and v > 0 for v in budget.values()
    ):
        raise UserError(f"{path}: budget must give exactly {', '.join(BUDGET_KEYS)}, positive integers")
    budget = Budget(**budget)
    if budget.completions_per_update % budget.optimizer_steps_per_update:
        raise UserError(f"{path}: prompts x samples per update must split into optimizer_steps_per_update")
    methods = {}
    for name, entry in loaded["methods"].items():
        if not isinstance(entry, dict) or entry.get("family") not in RECIPES:
            raise UserError(f"{path}: method {name}: family must be one of {', '.join(RECIPES)}")
        methods[name] = Method(name, entry["family"], dict(entry.get("options") or {}))
    return CompareBase(
        task=task,
        folder=path.parent,
        requires=dict(loaded.get("requires") or {}),
        budget=budget,
        shared=dict(loaded["shared"]),
        families={k: dict(v or {}) for k, v in loaded["families"].items()},
        methods=methods,
        eval=dict(loaded["eval"]),
    )


def budget_options(family: str, budget: Budget) -> dict[str, Any]:
    """The budget in one recipe's own option names (one process)."""
    micro_batch = budget.completions_per_update // budget.optimizer_steps_per_update
    total = budget.updates * budget.completions_per_update
    if family == "ppo":
        return {
            "num_samples_per_prompt": budget.samples_per_prompt,
            "per_device_train_batch_size": micro_batch,
            "gradient_accumulation_steps": 1,
            "num_mini_batches": budget.optimizer_steps_per_update,
            "num_ppo_epochs": 1,
            "total_episodes": total,
            "response_length": budget.max_tokens,
            "local_rollout_forward_batch_size": budget.completions_per_update,
            "save_steps": budget.updates,  # PPO counts updates: one checkpoint, at the end
        }
    return {
        "num_generations": budget.samples_per_prompt,
        "per_device_train_batch_size": micro_batch,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": budget.optimizer_steps_per_update,
        "num_iterations": 1,
        "total_completions": total,
        "max_completion_length": budget.max_tokens,
        "save_steps": budget.updates * budget.optimizer_steps_per_update,  # optimizer steps: at the end
    }


def total_option(family: str) -> str:
    """The option that sets a recipe's number of completions (so of updates)."""
    return "total_episodes" if family == "ppo" else "total_completions"


def method_config(base: CompareBase, method: str) -> dict[str, Any]:
    """One method's recipe config: shared options, its family's, the budget's, then its own."""
    entry = base.methods[method]
    config = {
        **base.shared,
        **base.families.get(entry.family, {}),
        **budget_options(entry.family, base.budget),
        **entry.options,
    }
    config["output_dir"] = f"runs/compare/{base.task}/{method}"
    return config


def eval_config(base: CompareBase) -> dict[str, Any]:
    return {
        **base.eval,
        "max_new_tokens": base.budget.max_tokens,
        "do_sample": False,
        "output_dir": f"runs/compare/{base.task}/eval",
        "overwrite_output_dir": True,
    }


def render(config: Mapping[str, Any], header: str) -> str:
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + yaml.safe_dump(dict(config), sort_keys=False, width=110)


def rendered_files(base: CompareBase) -> dict[Path, str]:
    """Every file `--write_configs` writes: one config per method and the evaluation config."""
    files = {}
    source = f"recipes/configs/compare/{base.task}/{BASE_FILE}"
    for name, method in base.methods.items():
        header = (
            f"{name} on the {base.task} task for `make compare` (recipe {method.recipe}).\n"
            f"Rendered from {source} by `python recipes/compare.py --task {base.task} --write_configs`:\n"
            "edit that file, not this one (tests/test_compare.py checks they agree)."
        )
        files[base.config_path(name)] = render(method_config(base, name), header)
    header = (
        f"Held-out evaluation of every `make compare` model on the {base.task} task (recipes/eval_mcqa.py).\n"
        f"Rendered from {source}; the models come from the command line."
    )
    files[base.folder / EVAL_FILE] = render(eval_config(base), header)
    return files


def stale_files(base: CompareBase) -> list[Path]:
    return [
        path
        for path, text in rendered_files(base).items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


# --------------------------------------------------------------------------- budgets, as the trainers plan them


def config_budget(family: str, config: Path, *extra: str, train_size: int | None = None) -> Budget:
    """A rendered config's budget from its trainer's own batch plan (one process, nothing loaded)."""
    from trl import ModelConfig

    from medrlvr_trl.configs import MCQAScriptArguments, parse_config

    if family == "ppo":
        from medrlvr_trl.ppo import MedRLVRPPOConfig, plan_batches

        script, args, _ = parse_config(
            [MCQAScriptArguments, MedRLVRPPOConfig, ModelConfig], ["--config", str(config), *extra]
        )
        plan = plan_batches(args, 1, train_size or script.max_train_samples or 10**6)
        return Budget(
            prompts_per_update=plan.prompts_per_update,
            samples_per_prompt=plan.samples_per_prompt,
            max_tokens=args.response_length,
            updates=plan.num_updates,
            optimizer_steps_per_update=plan.optimizer_steps_per_update,
        )
    from medrlvr_trl.critic_free import MedRLVRGRPOConfig, MedRLVRRLOOConfig, plan_generations

    config_class = MedRLVRGRPOConfig if family == "grpo" else MedRLVRRLOOConfig
    script, args, _ = parse_config(
        [MCQAScriptArguments, config_class, ModelConfig], ["--config", str(config), *extra]
    )
    plan = plan_generations(args, train_size or script.max_train_samples or 10**6)
    return Budget(
        prompts_per_update=plan.prompts_per_update,
        samples_per_prompt=plan.num_generations,
        max_tokens=args.max_completion_length,
        updates=plan.updates,
        optimizer_steps_per_update=plan.optimizer_steps_per_update,
    )


# --------------------------------------------------------------------------- the table and the figure


def training_curves(run_dir: Path) -> dict[str, list[float]]:
    """Per update (one row of the run's metrics.jsonl each): the figure's curves."""
    rows = sorted(read_rows(run_dir / METRICS_FILE), key=lambda row: row["update"])
    curves: dict[str, list[float]] = {"update": [row["update"] for row in rows]}
    for key in CURVES:
        curves[key] = [float(row[key]) for row in rows]
    return curves


def summary_rows(
    methods: Sequence[str],
    curves: Mapping[str, Mapping[str, list[float]]],
    heldout: Mapping[str, Mapping[str, Any]],
    wall_s: Mapping[str, float],
    budget: Budget,
) -> list[dict[str, Any]]:
    """One row per method (and `base`, untrained, if it was evaluated): the table's numbers."""
    rows = []
    for name in (["base"] if "base" in heldout else []) + list(methods):
        result = heldout[name]
        curve = curves.get(name, {})
        rewards = curve.get("verifier/reward", [])
        rows.append(
            {
                "method": name,
                "updates": len(rewards),
                "completions": len(rewards) * budget.completions_per_update,
                "final_training_reward": rewards[-1] if rewards else None,
                "heldout_accuracy": result["accuracy"],
                "heldout_accuracy_std": result["accuracy_std"],
                "heldout_format_valid": result["format_valid_rate"],
                "heldout_response_tokens": result["mean_completion_tokens"],
                "heldout_n": result["n"],
                "wall_time_s": round(wall_s[name], 1) if name in wall_s else None,
            }
        )
    return rows


def table_markdown(rows: Sequence[Mapping[str, Any]], budget: Budget, task: str) -> str:
    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"Task {task}: {budget.prompts_per_update} prompts x {budget.samples_per_prompt} samples x at most "
        f"{budget.max_tokens} tokens per update, {budget.updates} updates, {budget.optimizer_steps_per_update} "
        f"optimizer steps per update; held-out: greedy, n = {rows[0]['heldout_n'] if rows else 0}.",
        "",
        "| method | final training reward | held-out accuracy | format-valid | mean response tokens | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        accuracy = f"{100 * row['heldout_accuracy']:.1f}% ± {100 * row['heldout_accuracy_std']:.1f}"
        lines.append(
            f"| {row['method']} | {number(row['final_training_reward'], '.3f')} | {accuracy} "
            f"| {100 * row['heldout_format_valid']:.1f}% | {row['heldout_response_tokens']:.1f} "
            f"| {number(row['wall_time_s'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: Mapping[str, Mapping[str, list[float]]], path: Path, *, title: str) -> Path:
    """Reward, training accuracy, format-valid and response length per update, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.0 * len(CURVES), 3.6))
    for ax, (key, label) in zip(axes, CURVES.items(), strict=True):
        for method, curve in curves.items():
            ax.plot(curve["update"], curve[key], marker="o", markersize=3, label=method)
        ax.set_title(label)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)  # outside the panels: equal curves overlap
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def budget_record(budget: Budget) -> dict[str, Any]:
    return {**asdict(budget), "completions_per_update": budget.completions_per_update,
            "max_tokens_per_update": budget.completions_per_update * budget.max_tokens,
            "completions": budget.updates * budget.completions_per_update}  # fmt: skip
