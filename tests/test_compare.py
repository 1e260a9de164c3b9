"""`make compare`: every method's config gives the same rollout budget as its own trainer plans it, each
method's options reach its trainer, and the comparison runs end to end (slow)."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from trl import GRPOTrainer, ModelConfig, RLOOTrainer

from medrlvr_trl.build_cache import one_intra_op_thread
from medrlvr_trl.compare import config_budget as trainer_budget
from medrlvr_trl.compare import load_base, method_config, rendered_files, stale_files, tasks
from medrlvr_trl.configs import MCQAScriptArguments, parse_config
from medrlvr_trl.critic_free import MedRLVRGRPOConfig, MedRLVRRLOOConfig, plan_generations, run_recipe
from medrlvr_trl.ppo import MedRLVRPPOConfig
from medrlvr_trl.recipe_setup import MEDQA_TRAIN_ROWS
from medrlvr_trl.run_logs import COMPLETIONS_FILE, METRICS_FILE, read_rows
from medrlvr_trl.tiny import build_tiny
from medrlvr_trl.user_errors import run_command

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))
import compare  # noqa: E402

TASKS = ("tiny", "sanity")
METHODS = ("ppo", "reinforce_pp", "grpo", "dr_grpo", "dapo", "gspo", "rloo")


def test_both_tasks_compare_every_method():
    assert set(TASKS) <= set(tasks())
    for task in TASKS:
        assert tuple(load_base(task).methods) == METHODS


@pytest.mark.parametrize("task", TASKS)
def test_rendered_configs_are_the_ones_in_the_repository(task):
    """Each <method>.yaml is what its base renders: the budget cannot drift in one file."""
    base = load_base(task)
    assert not stale_files(base), f"run python recipes/compare.py --task {task} --write_configs"
    assert {p.name for p in rendered_files(base)} == {f"{m}.yaml" for m in METHODS} | {"eval.yaml"}


@pytest.mark.parametrize("task", TASKS)
def test_every_method_gets_the_same_budget_as_its_trainer_plans_it(task):
    """prompts x samples x max tokens per update, updates and optimizer steps, read back through
    ppo.plan_batches and critic_free.plan_generations from each rendered config."""
    base = load_base(task)
    budgets = {m: trainer_budget(base.methods[m].family, base.config_path(m)) for m in METHODS}
    assert set(budgets.values()) == {base.budget}, budgets
    # the quick-look option changes every method alike
    quick = {
        m: trainer_budget(
            base.methods[m].family, base.config_path(m), *compare.run_options(base, m, _args(updates=2))
        )
        for m in METHODS
    }
    assert {b.updates for b in quick.values()} == {2} and len(set(quick.values())) == 1


@pytest.mark.parametrize("task", TASKS)
def test_same_verifier_data_seed_and_sampling_for_every_method(task):
    base = load_base(task)
    shared = [
        "model_name_or_path",
        "dataset_name",
        "prompt_template",
        "seed",
        "temperature",
        "learning_rate",
        "verifier_mode",
        "rewards",
    ]
    parsed = {m: _parse(base, m) for m in METHODS}
    for key in shared:
        values = {
            repr(getattr(parsed[m][0 if hasattr(parsed[m][0], key) else 1], key, None)) for m in METHODS
        }
        assert len(values) == 1, (key, values)


def test_ppo_family_options_reach_the_ppo_config():
    base = load_base("tiny")
    ppo, reinforce = _parse(base, "ppo")[1], _parse(base, "reinforce_pp")[1]
    assert (ppo.advantage_estimator, ppo.uses_critic, ppo.kl_coef) == ("gae", True, 0.01)
    assert (reinforce.advantage_estimator, reinforce.uses_critic, reinforce.use_kl_loss) == (
        "reinforce_pp_baseline",
        False,
        False,
    )
    assert ppo.num_samples_per_prompt == reinforce.num_samples_per_prompt == base.budget.samples_per_prompt


class _Built(Exception):
    pass


def _build_only(trainer_class):
    class BuildOnly(trainer_class):
        built: list = []

        def train(self, *args, **kwargs):
            BuildOnly.built.append(self)
            raise _Built

    return BuildOnly


# method -> what its trainer must hold: (loss_type, importance_sampling_level, mask_truncated, scale_rewards,
# epsilon_low, epsilon_high, beta); the sources are in docs/compare.md
CRITIC_FREE = {
    "grpo": ("dapo", "token", False, "group", 0.2, 0.2, 0.01),
    "dr_grpo": ("dr_grpo", "token", False, "none", 0.2, 0.2, 0.01),
    "dapo": ("dapo", "token", True, "group", 0.2, 0.28, 0.0),
    "gspo": ("grpo", "sequence", False, "group", 3e-4, 4e-4, 0.0),
}


@pytest.mark.parametrize("method", [*CRITIC_FREE, "rloo"])
def test_each_critic_free_method_reaches_trls_trainer_with_its_options(method, tiny_model_dir, tmp_path):
    base = load_base("tiny")
    family = base.methods[method].family
    trainer_class = _build_only(GRPOTrainer if family == "grpo" else RLOOTrainer)
    config_class = MedRLVRGRPOConfig if family == "grpo" else MedRLVRRLOOConfig
    argv = ["--config", str(base.config_path(method)), "--model_name_or_path", str(tiny_model_dir),
            "--max_train_samples", "16", "--output_dir", str(tmp_path)]  # fmt: skip
    with one_intra_op_thread(), pytest.raises(_Built):
        run_recipe(family, config_class, trainer_class, argv)
    (trainer,) = trainer_class.built
    assert trainer.num_generations == base.budget.samples_per_prompt
    assert trainer.args.generation_batch_size == base.budget.completions_per_update
    assert trainer.max_completion_length == base.budget.max_tokens
    if method == "rloo":
        assert (trainer.beta, trainer.normalize_advantages) == (0.01, False)
        return
    loss, level, masked, scale, low, high, beta = CRITIC_FREE[method]
    assert (trainer.loss_type, trainer.importance_sampling_level, trainer.mask_truncated_completions) == (
        loss,
        level,
        masked,
    )
    assert (trainer.scale_rewards, trainer.epsilon_low, trainer.epsilon_high, trainer.beta) == (
        scale,
        low,
        high,
        beta,
    )
    assert (trainer.ref_model is None) == (beta == 0.0)  # beta 0: TRL loads no reference model


def test_a_missing_task_input_is_one_line_and_exit_code_2(capsys, monkeypatch):
    """`--task sanity` before data/sanity exists (or any task missing an input) says so in one line."""
    base = load_base("sanity")
    if (REPO / "data/sanity/train.jsonl").is_file():  # built by now: check the same path with a missing input
        missing = {"data/sanity/not-built/train.jsonl": "the sanity task is not built yet"}
        monkeypatch.setattr(
            compare, "load_base", lambda task: base.__class__(**{**base.__dict__, "requires": missing})
        )
    with pytest.raises(SystemExit) as stopped:
        run_command(compare.main, ["--task", "sanity"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train.jsonl does not exist" in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "huge"], "--task huge"),
        (["--methods", "ppo", "trpo"], "--methods: unknown trpo"),
    ],
)
def test_a_bad_choice_is_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_command(compare.main, argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.slow  # two recipes and the evaluation as subprocesses: about a minute on 2 cores
def test_compare_runs_two_methods_end_to_end_with_equal_budgets(tmp_path, monkeypatch):
    build_tiny(REPO / "build" / "tiny")  # what `make tiny` builds (cached)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "compare"
    compare.main(
        ["--methods", "ppo", "grpo", "--updates", "1", "--eval_samples", "8", "--output_dir", str(out)]
    )
    record = json.loads((out / "compare.json").read_text())
    rows = {row["method"]: row for row in record["rows"]}
    assert list(rows) == ["base", "ppo", "grpo"]
    budget = load_base("tiny").budget
    for method in ("ppo", "grpo"):
        assert (rows[method]["updates"], rows[method]["completions"]) == (1, budget.completions_per_update)
        assert [row["update"] for row in read_rows(out / method / METRICS_FILE)] == [1]
        completions = list(read_rows(out / method / COMPLETIONS_FILE))
        assert len(completions) == budget.completions_per_update
        assert max(row["response_tokens"] for row in completions) <= budget.max_tokens
        assert -1.0 <= rows[method]["final_training_reward"] <= 1.0  # the verifier's range
        assert rows[method]["wall_time_s"] > 0 and rows[method]["heldout_n"] == 8
    assert "| ppo |" in (out / "compare.md").read_text() and (out / "compare.png").stat().st_size > 0


def _args(**overrides):
    return compare.CompareArguments(**overrides)


def _parse(base, method):
    family = base.methods[method].family
    config_class = {"ppo": MedRLVRPPOConfig, "grpo": MedRLVRGRPOConfig, "rloo": MedRLVRRLOOConfig}[family]
    script, args, _ = parse_config(
        [MCQAScriptArguments, config_class, ModelConfig], ["--config", str(base.config_path(method))]
    )
    assert method_config(base, method)["output_dir"] == args.output_dir
    return script, args


# method -> (loss_type, importance_sampling_level, mask_truncated_completions, scale_rewards, epsilon,
# epsilon_high, beta) in its paper-scale config
PAPER = {
    "dr_grpo": ("dr_grpo", "token", False, "none", 0.2, None, 0.01),
    "dapo": ("dapo", "token", True, "group", 0.2, 0.28, 0.0),
    "gspo": ("grpo", "sequence", False, "group", 3e-4, 4e-4, 0.0),
}


@pytest.mark.parametrize("method", sorted(PAPER))
def test_paper_configs_are_the_grpo_config_with_only_the_methods_values_changed(method):
    configs = REPO / "recipes" / "configs"

    def parse(name):
        return parse_config(
            [MCQAScriptArguments, MedRLVRGRPOConfig, ModelConfig],
            ["--config", str(configs / name), "--bf16", "false"],
        )[1]

    grpo, args = parse("grpo_qwen2.5-3b.yaml"), parse(f"{method}_qwen2.5-3b.yaml")
    assert (
        args.loss_type,
        args.importance_sampling_level,
        args.mask_truncated_completions,
        args.scale_rewards,
        args.epsilon,
        args.epsilon_high,
        args.beta,
    ) == PAPER[method]
    changed = {"loss_type", "importance_sampling_level", "mask_truncated_completions", "scale_rewards"}
    changed |= {"epsilon", "epsilon_high", "beta", "output_dir", "logging_dir"}
    differing = {
        f.name
        for f in fields(args)
        if f.name not in changed and getattr(args, f.name) != getattr(grpo, f.name)
    }
    assert not differing, differing  # same model, data, reward, budget, learning rate, sampling as GRPO's
    assert plan_generations(args, MEDQA_TRAIN_ROWS) == plan_generations(grpo, MEDQA_TRAIN_ROWS)
    text = (configs / f"{method}_qwen2.5-3b.yaml").read_text()
    assert {"dr_grpo": "2503.20783", "dapo": "2503.14476", "gspo": "2507.18071"}[method] in text
