"""GRPO and RLOO: reward functions equal the verifier and the registry, compute matched to PPO, short
runs on the tiny model that log like PPO and save a model evaluation prompts with CoT."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer, ModelConfig

from medrlvr_trl import run_logs
from medrlvr_trl.build_cache import one_intra_op_thread
from medrlvr_trl.configs import MCQAScriptArguments, parse_config
from medrlvr_trl.critic_free import (
    GRPO_LOSS_TYPES,
    MedRLVRGRPOConfig,
    MedRLVRRLOOConfig,
    plan_generations,
    prompt_dataset,
    run_recipe,
)
from medrlvr_trl.data import load_mcqa
from medrlvr_trl.dynamics import StageThresholds
from medrlvr_trl.evaluation import questions_sha256, resolve_model
from medrlvr_trl.modeling import load_tokenizer
from medrlvr_trl.ppo import MedRLVRPPOConfig, plan_batches
from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.recipe_setup import MEDQA_TRAIN_ROWS
from medrlvr_trl.rewards import Gold, RewardValues, verify
from medrlvr_trl.rewards.reward_funcs import reward_functions, score_completions
from medrlvr_trl.rewards.terms import RewardMix
from medrlvr_trl.run_logs import COMPLETIONS_FILE, METRICS_FILE, RolloutLog
from medrlvr_trl.user_errors import run_command

REPO = Path(__file__).resolve().parents[1]
import dynamics_report  # noqa: E402
import grpo_medqa  # noqa: E402
import rloo_medqa  # noqa: E402

CONFIGS = REPO / "recipes" / "configs"
DEMO_DATA = REPO / "data" / "demo" / "medqa"
RECIPES = {"grpo": (grpo_medqa, MedRLVRGRPOConfig), "rloo": (rloo_medqa, MedRLVRRLOOConfig)}
OPTIONS = ("Loratadine tablets", "Artificial tears", "Ketotifen", "Prednisolone", "Timolol")
GOLD = Gold(answer="C", num_options=5, id="q1", options=OPTIONS)
FIFTEEN_WORDS = " ".join(["word"] * 15)
COMPLETIONS = [
    f"<think>{FIFTEEN_WORDS}</think><answer>C</answer>",  # correct
    f"<think>{FIFTEEN_WORDS}</think> <answer>B. Artificial tears</answer>",  # wrong
    "The correct answer is C",  # malformed
    "Step one, step two, step three, step four, step five, six. <think></think><answer>C</answer>",  # prefix
    "<think>The correct answer is C</think><answer>C</answer>",  # short think that leaks the answer
    f"<think>{FIFTEEN_WORDS}</think><answer>F</answer>",  # a letter beyond the five options
]
PPO_ROW_KEYS = {
    "update",
    "id",
    "gold",
    "completion",
    "response_tokens",
    "format_ok",
    "letter",
    "correct",
    "reward",
}


def _columns(count: int, answer: str = "C") -> dict:
    """What TRL passes a reward function besides prompts and completions: dataset columns and extras."""
    return {
        "answer": [answer] * count,
        "num_options": [len(OPTIONS)] * count,
        "options": [list(OPTIONS)] * count,
        "id": [f"q{i}" for i in range(count)],
        "completion_ids": [[7, 0]] * count,
        "trainer_state": SimpleNamespace(global_step=0),
        "log_extra": lambda column, values: None,
        "log_metric": lambda name, value: None,
    }


def _call(fn, completions: list[str], **overrides) -> list[float]:
    columns = {**_columns(len(completions)), **overrides}
    return fn(prompts=["User: q\nAssistant:"] * len(completions), completions=completions, **columns)


# ------------------------------------------------------------------ reward functions


@pytest.mark.parametrize("mode", ["paper", "strict"])
def test_verifier_reward_function_returns_exactly_the_verifiers_rewards(mode):
    values = RewardValues(
        format_error=-2.0, wrong=0.25, correct=3.0
    )  # not the defaults: they must pass through
    [verifier] = reward_functions(RewardMix(["verifier"]), mode=mode, values=values)
    got = _call(verifier, COMPLETIONS)
    assert got == [verify(c, "C", 5, mode=mode, values=values).reward for c in COMPLETIONS]
    assert set(got) == {-2.0, 0.25, 3.0}


def test_each_term_is_one_named_reward_function_and_trl_weighted_sum_is_ppos_score():
    mix = RewardMix(["verifier", "think_length", "no_leak", "no_prefix"], [1.0, 0.3, 0.2, 0.1])
    functions = reward_functions(mix)
    assert [fn.__name__ for fn in functions] == list(mix.names)  # TRL logs rewards/<name>/mean
    per_function = [_call(fn, COMPLETIONS) for fn in functions]
    for index, completion in enumerate(COMPLETIONS):
        expected = mix.term_values(completion, GOLD, verify(completion, "C", 5))
        got = {name: per_function[k][index] for k, name in enumerate(mix.names)}
        assert got == expected
        trl_sum = sum(weight * per_function[k][index] for k, weight in enumerate(mix.weights))
        assert trl_sum == pytest.approx(mix.total(expected))
    assert all(any(value != 0 for value in values) for values in per_function), (
        "every term must fire somewhere"
    )


def test_batch_hook_sees_each_batch_once_with_every_term():
    mix = RewardMix(["verifier", "no_leak"])
    seen = []
    functions = reward_functions(mix, on_batch=lambda scored, kwargs: seen.append(scored))
    for fn in functions:
        _call(fn, COMPLETIONS)
    assert len(seen) == 1
    assert [item.terms for item in seen[0]] == [
        mix.term_values(c, GOLD, verify(c, "C", 5)) for c in COMPLETIONS
    ]


def test_missing_gold_column_is_an_error_naming_it():
    [verifier] = reward_functions(RewardMix())
    columns = _columns(2)
    del columns["num_options"]
    with pytest.raises(ValueError, match="num_options"):
        verifier(prompts=["p", "p"], completions=COMPLETIONS[:2], **columns)


def test_bad_gold_letter_in_the_data_names_the_row():
    [verifier] = reward_functions(RewardMix())
    with pytest.raises(ValueError, match=r"row 'q0'.*gold answer: got 'F'"):
        _call(verifier, COMPLETIONS[:1], answer=["F"])


def test_chat_style_completions_are_refused():
    [verifier] = reward_functions(RewardMix())
    with pytest.raises(ValueError, match="plain text"):
        _call(verifier, [[{"role": "assistant", "content": COMPLETIONS[0]}]])


# ------------------------------------------------------------------ data


def test_dataset_holds_plain_text_prompts_and_the_gold_columns(tiny_model_dir):
    rows = load_mcqa(str(DEMO_DATA), "train", limit=6)
    dataset = prompt_dataset(rows, load_tokenizer(str(tiny_model_dir)), template="r1", max_prompt_length=512)
    assert dataset.column_names == ["prompt", "id", "answer", "num_options", "options"]
    assert dataset["prompt"] == [build_prompt(r["question"], r["options"], template="r1") for r in rows]
    assert all(isinstance(p, str) and p.endswith("Assistant:") for p in dataset["prompt"])
    assert dataset["answer"] == rows["answer"]
    assert dataset["num_options"] == [len(o) for o in rows["options"]]


def test_dataset_refuses_a_prompt_over_the_length_limit_naming_the_row(tiny_model_dir):
    rows = load_mcqa(str(DEMO_DATA), "train", limit=2)
    with pytest.raises(ValueError, match=r"row 'medqa-train-1'.*max_prompt_length=20"):
        prompt_dataset(rows, load_tokenizer(str(tiny_model_dir)), template="r1", max_prompt_length=20)


# ------------------------------------------------------------------ configs


def _parse(config_class, config: Path, *extra: str):
    return parse_config([MCQAScriptArguments, config_class, ModelConfig], ["--config", str(config), *extra])[
        1
    ]


@pytest.mark.parametrize(
    ("ppo_config", "suffix"),
    [("ppo_qwen2.5-3b.yaml", "_qwen2.5-3b.yaml"), ("tiny/ppo.yaml", ".yaml"), ("demo/ppo.yaml", ".yaml")],
)
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_configs_generate_as_many_completions_as_ppo(kind, ppo_config, suffix):
    train_rows = MEDQA_TRAIN_ROWS if suffix.startswith("_") else 64
    ppo = _parse(MedRLVRPPOConfig, CONFIGS / ppo_config, "--bf16", "false")
    ppo_plan = plan_batches(ppo, 1, train_rows)
    folder = (CONFIGS / ppo_config).parent
    args = _parse(RECIPES[kind][1], folder / f"{kind}{suffix}", "--bf16", "false")
    plan = plan_generations(args, train_rows)
    assert plan.total_completions == ppo_plan.num_updates * ppo_plan.rollouts_per_update
    if suffix.startswith("_"):  # the paper-scale configs also share PPO's optimizer steps and sampling
        assert plan.completions_per_update == ppo_plan.rollouts_per_update
        assert plan.max_steps == ppo_plan.num_updates * ppo_plan.optimizer_steps_per_update
        assert (args.learning_rate, args.temperature, args.max_completion_length, args.beta) == (
            ppo.learning_rate,
            ppo.temperature,
            ppo.response_length,
            ppo.kl_coef,
        )


def test_reward_weights_must_name_one_weight_per_term():
    config = CONFIGS / "tiny" / "grpo.yaml"
    with pytest.raises(ValueError, match="reward_weights has 1 value"):
        _parse(MedRLVRGRPOConfig, config, "--rewards", "verifier", "no_leak", "--reward_weights", "1.0")
    assert _parse(MedRLVRGRPOConfig, config, "--rewards", "verifier", "no_leak").reward_weights == [1.0, 1.0]


def test_generation_batch_must_cover_whole_optimizer_steps():
    with pytest.raises(ValueError, match="whole optimizer steps"):
        _parse(
            MedRLVRRLOOConfig,
            CONFIGS / "tiny" / "rloo.yaml",
            "--gradient_accumulation_steps",
            "2",
            "--steps_per_generation",
            "1",
        )


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_paper_config_dry_run_prints_the_generation_plan_offline(kind, caplog):
    with caplog.at_level("INFO"):
        RECIPES[kind][0].main(
            ["--config", str(CONFIGS / f"{kind}_qwen2.5-3b.yaml"), "--dry_run", "true", "--bf16", "false"]
        )
    # one process here: 32 completions per update (4 x 8 steps), as PPO's dry run on one process
    assert "completions_per_update: 32" in caplog.text
    assert "total_completions: 101792" in caplog.text  # ceil(101,780 / 32) updates of 32


def test_plan_refuses_a_training_set_smaller_than_one_generation_batch():
    args = _parse(MedRLVRGRPOConfig, CONFIGS / "tiny" / "grpo.yaml")
    with pytest.raises(ValueError, match="training set has only 3"):
        plan_generations(args, 3)


# ------------------------------------------------------------------ rollout log


def _log_batch(
    log: RolloutLog, global_step: int, completion_ids: list[list[int]], logged: dict | None = None
):
    scored = score_completions(COMPLETIONS[: len(completion_ids)], [GOLD] * len(completion_ids), RewardMix())
    kwargs = {"trainer_state": SimpleNamespace(global_step=global_step), "completion_ids": completion_ids}
    if logged is not None:
        kwargs["log_metric"] = logged.__setitem__
    log(scored, kwargs)


def test_rollout_log_writes_ppo_format_rows_numbered_by_generation_batch(tmp_path):
    log = RolloutLog(tmp_path, eos_token_id=0, optimizer_steps_per_update=2, thresholds=StageThresholds())
    logged: dict[str, float] = {}
    _log_batch(log, 4, [[5, 0], [5, 5, 5], [0]], logged)  # step 4 starts the third batch of 2 steps
    rows = list(run_logs.read_rows(tmp_path / COMPLETIONS_FILE))
    assert [r["update"] for r in rows] == [3, 3, 3]
    assert all(PPO_ROW_KEYS <= row.keys() and "stage" in row for row in rows)
    assert [r["response_tokens"] for r in rows] == [2, 3, 1]
    assert [r["hit_length_limit"] for r in rows] == [False, True, False]
    assert [r["reward"] for r in rows] == [1.0, 0.0, -1.0]
    [metrics] = run_logs.read_rows(tmp_path / METRICS_FILE)
    assert metrics["update"] == 3 and metrics["verifier/reward"] == pytest.approx(0.0)
    assert logged["verifier/accuracy"] == pytest.approx(1 / 3)  # also in TRL's own logs
    assert "dynamics/stage/format_failure" in logged


def test_restarted_run_forgets_logged_updates_after_its_checkpoint(tmp_path):
    log = RolloutLog(tmp_path, eos_token_id=0, optimizer_steps_per_update=2, thresholds=StageThresholds())
    for step in (0, 2, 4):
        _log_batch(log, step, [[5, 0]])
    log.drop_rows_after(global_step=4)  # a checkpoint at step 4: updates 1 and 2 are done
    assert [r["update"] for r in run_logs.read_rows(tmp_path / METRICS_FILE)] == [1, 2]
    assert [r["update"] for r in run_logs.read_rows(tmp_path / COMPLETIONS_FILE)] == [1, 2]


# ------------------------------------------------------------------ short runs on the tiny model


@pytest.fixture(scope="module", params=sorted(RECIPES))
def tiny_run(request, tiny_model_dir, tmp_path_factory) -> tuple[str, Path]:
    """A tiny-config run of each recipe: 2 updates of 16 completions on 16 demo questions."""
    kind = request.param
    out = tmp_path_factory.mktemp(f"{kind}-run")
    argv = [
        "--config", str(CONFIGS / "tiny" / f"{kind}.yaml"),
        "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(DEMO_DATA),
        "--max_train_samples", "16",
        "--output_dir", str(out),
    ]  # fmt: skip
    with one_intra_op_thread():
        RECIPES[kind][0].main(argv)
    return kind, out


def test_run_saves_a_policy_that_evaluation_prompts_with_cot(tiny_run):
    kind, out = tiny_run
    info = json.loads((out / "run_info.json").read_text())
    assert (info["kind"], info["answer_mode"], info["prompt_template"]) == (kind, "cot", "r1")
    assert resolve_model(kind, str(out), None, None).answer_mode == "cot"
    AutoModelForCausalLM.from_pretrained(out)
    tokenizer = load_tokenizer(str(out))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_run_info_names_the_training_questions_by_evaluations_hash(tiny_run):
    _, out = tiny_run
    rows = load_mcqa(str(DEMO_DATA), "train", limit=16)
    assert json.loads((out / "run_info.json").read_text())["training_data"] == {
        "source": str(DEMO_DATA),
        "split": "train",
        "category": None,
        "revision": None,
        "n": 16,
        "questions_sha256": questions_sha256(rows),
    }


def test_run_logs_every_update_with_the_verifiers_rewards(tiny_run):
    _, out = tiny_run
    assert [row["update"] for row in run_logs.read_rows(out / METRICS_FILE)] == [1, 2]
    rows = list(run_logs.read_rows(out / COMPLETIONS_FILE))
    assert len(rows) == 32 and all(PPO_ROW_KEYS <= row.keys() for row in rows)
    questions = load_mcqa(str(DEMO_DATA), "train", limit=16)
    options = dict(zip(questions["id"], questions["options"], strict=True))
    for row in rows:
        assert row["reward"] == verify(row["completion"], row["gold"], len(options[row["id"]])).reward


def test_trainer_received_the_logged_rewards(tiny_run):
    _, out = tiny_run
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    trl_rewards = [
        row["rewards/verifier/mean"] for row in state["log_history"] if "rewards/verifier/mean" in row
    ]
    ours = [row["verifier/reward"] for row in run_logs.read_rows(out / METRICS_FILE)]
    assert trl_rewards == pytest.approx(ours)


def test_dynamics_report_reads_the_run(tiny_run, tmp_path):
    _, out = tiny_run
    dynamics_report.main(["--run", str(out), "--out_dir", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["updates"], summary["completions_per_update"]) == ([1, 2], [16, 16])
    assert summary["stage_shares"]["format_failure"] == [1.0, 1.0]  # an untrained tiny model writes no tags


def test_rerun_continues_from_the_checkpoint_without_repeating_log_rows(tiny_model_dir, tmp_path):
    common = [
        "--config", str(CONFIGS / "tiny" / "grpo.yaml"),
        "--model_name_or_path", str(tiny_model_dir),
        "--max_train_samples", "16",
        "--output_dir", str(tmp_path),
    ]  # fmt: skip
    with one_intra_op_thread():
        grpo_medqa.main(common)
        grpo_medqa.main([*common, "--total_completions", "48"])  # one more update of 16
    assert [row["update"] for row in run_logs.read_rows(tmp_path / METRICS_FILE)] == [1, 2, 3]
    assert sorted({row["update"] for row in run_logs.read_rows(tmp_path / COMPLETIONS_FILE)}) == [1, 2, 3]


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_rollout_backend_vllm_is_trls_colocated_vllm(kind):
    """The PPO option's name reaches TRL's own switch: GRPO and RLOO sample with a colocated vLLM engine."""
    config_class = RECIPES[kind][1]
    hf = _parse(config_class, CONFIGS / "tiny" / f"{kind}.yaml")
    vllm = _parse(config_class, CONFIGS / "tiny" / f"{kind}.yaml", "--rollout_backend", "vllm")
    assert hf.use_vllm is False
    assert (vllm.use_vllm, vllm.vllm_mode) == (True, "colocate")
    with pytest.raises(ValueError, match="rollout_backend: got 'sglang'"):
        _parse(config_class, CONFIGS / "tiny" / f"{kind}.yaml", "--rollout_backend", "sglang")


# ------------------------------------------------------------------ the GRPO family (TRL's loss_type, GSPO)


class _Built(Exception):
    """Raised by `_BuildOnly.train`: the trainer was built, nothing trained."""


class _BuildOnly(GRPOTrainer):
    built: list[GRPOTrainer] = []

    def train(self, *args, **kwargs):
        _BuildOnly.built.append(self)
        raise _Built


@pytest.mark.parametrize(
    ("loss_type", "level", "mask_truncated"),
    [("dr_grpo", "token", False), ("grpo", "sequence", False), ("sapo", "token", True)],
    ids=["dr-grpo", "gspo", "sapo-masked"],
)
def test_grpo_family_options_reach_trls_trainer(loss_type, level, mask_truncated, tiny_model_dir, tmp_path):
    argv = ["--config", str(CONFIGS / "tiny" / "grpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(DEMO_DATA), "--max_train_samples", "16", "--output_dir", str(tmp_path),
            "--loss_type", loss_type, "--importance_sampling_level", level,
            "--mask_truncated_completions", str(mask_truncated).lower()]  # fmt: skip
    _BuildOnly.built.clear()
    with pytest.raises(_Built), one_intra_op_thread():
        run_recipe("grpo", MedRLVRGRPOConfig, _BuildOnly, argv)
    (trainer,) = _BuildOnly.built
    assert (trainer.loss_type, trainer.importance_sampling_level, trainer.mask_truncated_completions) == (
        loss_type,
        level,
        mask_truncated,
    )
    assert (trainer.args.loss_type, trainer.args.importance_sampling_level) == (loss_type, level)


def test_gspo_trains_one_update_through_trls_sequence_level_loss(tiny_model_dir, tmp_path):
    argv = ["--config", str(CONFIGS / "tiny" / "grpo.yaml"), "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(DEMO_DATA), "--max_train_samples", "16", "--output_dir", str(tmp_path),
            "--total_completions", "16", "--loss_type", "grpo", "--importance_sampling_level", "sequence"]  # fmt: skip
    with one_intra_op_thread():
        grpo_medqa.main(argv)
    assert [row["update"] for row in run_logs.read_rows(tmp_path / METRICS_FILE)] == [1]
    card = json.loads((tmp_path / "run_info.json").read_text())["hyperparameters"]
    assert (card["loss_type"], card["importance_sampling_level"]) == ("grpo", "sequence")


def test_every_loss_type_we_accept_is_one_trls_grpo_computes():
    """GRPO_LOSS_TYPES is the list TRL 1.12's loss knows: each name is a branch of `_compute_loss`."""
    import inspect

    source = inspect.getsource(GRPOTrainer._compute_loss)
    for name in GRPO_LOSS_TYPES:
        assert f'"{name}"' in source, name
        assert (
            _parse(MedRLVRGRPOConfig, CONFIGS / "tiny" / "grpo.yaml", "--loss_type", name).loss_type == name
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss_type", "ppo"], "loss_type: got 'ppo'; TRL's GRPO takes one of grpo, dr_grpo, dapo"),
        (["--importance_sampling_level", "sentence"], "importance_sampling_level: got 'sentence'"),
    ],
)
def test_an_unknown_grpo_variant_is_one_line_and_exit_code_2(extra, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_command(grpo_medqa.main, ["--config", str(CONFIGS / "tiny" / "grpo.yaml"), *extra])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("config", ["tiny/grpo.yaml", "grpo_qwen2.5-3b.yaml"])
def test_grpo_configs_spell_out_the_loss_they_use(config):
    """TRL's default loss_type is "dapo", not the original GRPO loss: the configs say which one they train."""
    text = (CONFIGS / config).read_text()
    for key in ("loss_type:", "importance_sampling_level:", "mask_truncated_completions:"):
        assert f"\n{key}" in text, key
    args = _parse(MedRLVRGRPOConfig, CONFIGS / config, "--bf16", "false")
    assert (args.loss_type, args.importance_sampling_level, args.mask_truncated_completions) == (
        "dapo",
        "token",
        False,
    )
