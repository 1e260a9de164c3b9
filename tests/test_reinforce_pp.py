"""REINFORCE++-baseline in the PPO trainer (`advantage_estimator: reinforce_pp_baseline`): the advantages
against the formula written out by hand, whitening over every process's tokens, the batch plan with several
samples per prompt, bad configs as one line and exit code 2, a tiny run without any critic, and the memory
plan without the critic's terms."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from trl import ModelConfig

from medrlvr_trl import memory_plan
from medrlvr_trl.configs import MCQAScriptArguments, parse_config
from medrlvr_trl.memory_plan import QWEN25_BASE_SHAPES, Launch, PPOWorkload, estimate_ppo
from medrlvr_trl.ppo import (
    MedRLVRPPOConfig,
    MedRLVRPPOTrainer,
    plan_batches,
    reinforce_pp_baseline_advantages,
)
from medrlvr_trl.recipe_setup import MEDQA_TRAIN_ROWS
from medrlvr_trl.user_errors import run_command

REPO = Path(__file__).resolve().parents[1]
import ppo_medqa  # noqa: E402
from test_ppo import prompt_batch_ids  # noqa: E402

TINY_CONFIG = str(REPO / "recipes/configs/tiny/reinforce_pp.yaml")
PAPER_CONFIG = str(REPO / "recipes/configs/reinforce_pp_qwen2.5-3b.yaml")
MASKED = (
    1.0  # what the trainer writes past a response's end (TRL's INVALID_LOGPROB), in both log-prob tensors
)

# ------------------------------------------------------------------ a hand-made batch
# 2 prompts x 2 samples, responses of 3, 1, 2 and 3 tokens (last_index 2, 0, 1, 2).
SCORES = [1.0, 0.0, -1.0, 1.0]
LAST = [2, 0, 1, 2]
LOG_RATIO = [[0.5, -0.2, 0.1], [0.3], [-0.4, 0.2], [0.0, 0.1, -0.1]]  # log pi - log pi_ref, valid tokens only


def _batch(rows: list[int] | None = None):
    rows = list(range(len(SCORES))) if rows is None else rows
    width = 3
    ref = torch.full((len(rows), width), MASKED)
    logprobs = torch.full((len(rows), width), MASKED)
    for out, row in enumerate(rows):
        for t, ratio in enumerate(LOG_RATIO[row]):
            ref[out, t] = -1.0 - 0.1 * t
            logprobs[out, t] = ref[out, t] + ratio
    last = torch.tensor([LAST[r] for r in rows])
    padding = torch.arange(width).unsqueeze(0) > last.unsqueeze(1)
    return torch.tensor([SCORES[r] for r in rows]), logprobs, ref, last, padding


def _advantages(rows=None, *, kl_coef=0.1, kl_estimator="k1", gather=None):
    scores, logprobs, ref, last, padding = _batch(rows)
    return reinforce_pp_baseline_advantages(
        scores, logprobs, ref, last, padding, samples_per_prompt=2, kl_coef=kl_coef,
        kl_estimator=kl_estimator, gather=gather,
    )  # fmt: skip


def _by_hand(kl_coef: float, k3: bool = False) -> tuple[list[list[float]], list[list[float]]]:
    """The formula, one number at a time: baseline = mean score of the prompt's two samples; token reward =
    -kl_coef x KL estimate, plus (score - baseline) on the last token; return = sum of the rewards from that
    token on; advantage = (return - mean) / std over all 9 response tokens (population std)."""
    returns = []
    for row, score in enumerate(SCORES):
        group = SCORES[2 * (row // 2) : 2 * (row // 2) + 2]
        shaped = score - sum(group) / 2
        kls = [math.exp(-r) - 1 + r if k3 else r for r in LOG_RATIO[row]]
        rewards = [-kl_coef * kl for kl in kls]
        rewards[-1] += shaped
        returns.append([sum(rewards[t:]) for t in range(len(rewards))])
    tokens = [x for row in returns for x in row]
    mean = sum(tokens) / len(tokens)
    std = math.sqrt(sum((x - mean) ** 2 for x in tokens) / len(tokens))
    return returns, [[(x - mean) / std for x in row] for row in returns]


def _valid(tensor: torch.Tensor) -> list[list[float]]:
    return [tensor[row, : LAST[row] + 1].tolist() for row in range(tensor.shape[0])]


def test_advantages_match_the_formula_on_a_hand_made_batch():
    advantages, returns, kl = _advantages()
    expected_returns, expected_advantages = _by_hand(kl_coef=0.1)
    # written out for row 0: rewards -0.05, 0.02, -0.01 + (1 - 0.5) -> returns 0.46, 0.51, 0.49
    assert expected_returns[0] == pytest.approx([0.46, 0.51, 0.49])
    assert _valid(returns) == [pytest.approx(r, abs=1e-6) for r in expected_returns]
    assert _valid(advantages) == [pytest.approx(a, abs=1e-5) for a in expected_advantages]
    assert _valid(kl) == [pytest.approx(r, abs=1e-6) for r in LOG_RATIO]  # k1: the log ratio itself
    padding = _batch()[4]
    assert advantages[padding].abs().max() == 0 and returns[padding].abs().max() == 0


def test_k3_estimate_and_kl_as_a_loss_leave_the_reward_as_the_score_minus_its_baseline():
    _, expected = _by_hand(kl_coef=0.1, k3=True)
    advantages, _, _ = _advantages(kl_estimator="k3")
    assert _valid(advantages) == [pytest.approx(a, abs=1e-5) for a in expected]
    # use_kl_loss: kl_coef 0 in the reward, every token of a response has its shaped score as return
    _, returns, kl = _advantages(kl_coef=0.0)
    assert _valid(returns) == [[0.5] * 3, [-0.5], [-1.0] * 2, [1.0] * 3]
    assert kl.abs().sum() > 0  # still returned, for the logs


class _ThreadGather:
    """`accelerator.gather` for ranks played by threads: every rank's tensor, concatenated in rank order."""

    def __init__(self, world: int) -> None:
        self.slots: list[torch.Tensor | None] = [None] * world
        self.barrier = threading.Barrier(world)

    def for_rank(self, rank: int):
        def gather(tensor: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = tensor
            self.barrier.wait()
            out = torch.cat(self.slots)
            self.barrier.wait()
            return out

        return gather


def test_advantages_are_whitened_over_every_process_tokens():
    """Two processes, one prompt group each, give exactly what one process gets on the whole batch."""
    whole, _, _ = _advantages()
    exchange = _ThreadGather(2)
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda rank: _advantages([2 * rank, 2 * rank + 1], gather=exchange.for_rank(rank))[0],
                              range(2)))  # fmt: skip
    assert torch.allclose(torch.cat(parts), whole, atol=1e-6)
    alone, _, _ = _advantages([0, 1])  # whitened over its own tokens only: not the same numbers
    assert not torch.allclose(alone, whole[:2], atol=1e-3)


# ------------------------------------------------------------------ batch plan and prompts


def _config(tmp_path: Path, **overrides) -> MedRLVRPPOConfig:
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  num_mini_batches=2, num_ppo_epochs=1, bf16=False, use_cpu=True, report_to="none",
                  advantage_estimator="reinforce_pp_baseline", num_samples_per_prompt=4)  # fmt: skip
    values.update(overrides)
    return MedRLVRPPOConfig(**values)


def test_batch_plan_counts_samples_per_prompt(tmp_path):
    plan = plan_batches(_config(tmp_path, num_train_epochs=2), world_size=4, train_size=100)
    assert plan.rollouts_per_device == 8 and plan.prompts_per_device == 2  # 8 responses = 2 prompts x 4
    assert plan.rollouts_per_update == 32 and plan.prompts_per_update == 8
    assert plan.total_episodes == 800  # 2 epochs x 100 questions x 4 samples: episodes are responses
    assert plan.num_updates == 25 and plan.epochs == pytest.approx(2.0)
    assert plan.updates_per_epoch == pytest.approx(12.5)
    with pytest.raises(ValueError, match="8 prompts .* only 6"):
        plan_batches(_config(tmp_path), world_size=4, train_size=6)


def test_each_prompt_is_sampled_num_samples_per_prompt_times_on_one_process(tmp_path):
    args = _config(tmp_path, seed=1)
    size, world = 12, 2
    plan = SimpleNamespace(prompts_per_update=4, prompts_per_device=2, samples_per_prompt=4)
    batches = [prompt_batch_ids(args, plan, size, rank, update=1) for rank in range(world)]
    for batch in batches:
        assert len(batch) == 8 and batch[:4] == [batch[0]] * 4 and batch[4:] == [batch[4]] * 4
        assert batch[0] != batch[4]
    assert not set(batches[0]) & set(batches[1])  # four different prompts in the update


def test_paper_config_is_ppos_with_the_critic_swapped_for_the_baseline_and_the_same_budget():
    def parse(name: str):
        return parse_config(
            [MCQAScriptArguments, MedRLVRPPOConfig, ModelConfig],
            ["--config", str(REPO / "recipes/configs" / name), "--bf16", "false"],
        )

    _, ppo, ppo_model = parse("ppo_qwen2.5-3b.yaml")
    _, rpp, rpp_model = parse("reinforce_pp_qwen2.5-3b.yaml")
    ppo_plan, plan = (plan_batches(args, 32, MEDQA_TRAIN_ROWS) for args in (ppo, rpp))
    assert (plan.num_updates, plan.rollouts_per_update, plan.optimizer_steps_per_update) == (
        ppo_plan.num_updates,
        ppo_plan.rollouts_per_update,
        ppo_plan.optimizer_steps_per_update,
    )  # 100 updates x 1024 responses, 800 optimizer steps
    assert (rpp.advantage_estimator, rpp.num_samples_per_prompt, rpp.use_kl_loss) == (
        "reinforce_pp_baseline",
        8,
        False,
    )
    shared = ("learning_rate", "kl_coef", "kl_estimator", "cliprange", "temperature", "response_length",
              "max_prompt_length", "per_device_train_batch_size", "num_mini_batches", "num_ppo_epochs",
              "lr_scheduler_type", "warmup_steps", "adam_beta1", "adam_beta2", "max_grad_norm", "seed", "gamma")  # fmt: skip
    assert {k: getattr(rpp, k) for k in shared} == {k: getattr(ppo, k) for k in shared}
    assert rpp_model.model_name_or_path == ppo_model.model_name_or_path


# ------------------------------------------------------------------ bad configs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num_samples_per_prompt", "1"], "needs num_samples_per_prompt >= 2"),
        (["--advantage_estimator", "reinforce_baseline"], "choose one of gae, reinforce_pp_baseline"),
        (["--num_samples_per_prompt", "3"], "not a multiple of num_samples_per_prompt 3"),
        (["--critic_learning_rate", "1e-5"], "trains no critic; remove critic_learning_rate"),
        (["--gamma", "0.99"], "uses gamma 1"),
    ],
)
def test_a_bad_reinforce_pp_config_is_one_line_and_exit_code_2_before_anything_loads(
    extra, message, capsys, monkeypatch
):
    def must_not_load(*args, **kwargs):
        raise AssertionError("data or models loaded before the config was checked")

    monkeypatch.setattr(ppo_medqa, "load_rows_and_tokenizer", must_not_load)
    with pytest.raises(SystemExit) as stopped:
        run_command(ppo_medqa.main, ["--config", TINY_CONFIG, *extra])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("first, then", [("gae", "reinforce_pp_baseline"), ("reinforce_pp_baseline", "gae")])
def test_resuming_a_checkpoint_saved_with_the_other_estimator_is_one_line_before_anything_loads(
    first, then, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """A checkpoint with a critic cannot continue critic-free (or the reverse): accelerate would fail
    inside load_state, after the models loaded."""
    configs = {"gae": str(REPO / "recipes/configs/tiny/ppo.yaml"), "reinforce_pp_baseline": TINY_CONFIG}
    out = tmp_path / "run"
    common = ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--total_episodes", "8"]
    ppo_medqa.main(["--config", configs[first], *common])
    [checkpoint] = out.glob("checkpoint-*")
    assert json.loads((checkpoint / "checkpoint_shape.json").read_text()) == {"advantage_estimator": first}

    def must_not_load(*args, **kwargs):
        raise AssertionError("data or models loaded before the checkpoint was checked")

    monkeypatch.setattr(ppo_medqa, "load_rows_and_tokenizer", must_not_load)
    capsys.readouterr()  # the first run's progress bars
    with pytest.raises(SystemExit) as stopped:
        run_command(ppo_medqa.main, ["--config", configs[then], *common, "--advantage_estimator", then])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"advantage_estimator={first!r} but this run has advantage_estimator={then!r}" in err


# ------------------------------------------------------------------ a tiny run


@pytest.mark.parametrize("kl_loss", [False, True], ids=["kl-in-reward", "kl-loss"])
def test_tiny_run_trains_the_policy_and_never_creates_a_critic(
    kl_loss, tiny_model_dir, tmp_path, monkeypatch
):
    def no_critic(*args, **kwargs):
        raise AssertionError("a critic was loaded")

    monkeypatch.setattr(ppo_medqa, "load_value_model", no_critic)
    trainers = []
    original_train = MedRLVRPPOTrainer.train

    def recording_train(self, *args, **kwargs):
        trainers.append(self)
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(MedRLVRPPOTrainer, "train", recording_train)
    out = tmp_path / "run"
    # missing_eos_penalty: the tiny model writes no valid answer yet, so stopping early is what differs
    # between a prompt's samples and gives non-zero advantages.
    ppo_medqa.main(["--config", TINY_CONFIG, "--model_name_or_path", str(tiny_model_dir),
                    "--dataset_name", str(REPO / "data/demo/medqa"), "--output_dir", str(out),
                    "--total_episodes", "16", "--missing_eos_penalty", "1.0",
                    "--use_kl_loss", str(kl_loss).lower()])  # fmt: skip

    (trainer,) = trainers
    pair = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.value_model is None and pair.value_model is None
    assert not [name for name, _ in trainer.model.named_parameters() if not name.startswith("policy.")]
    assert {group["role"] for group in trainer.optimizer.param_groups} == {"policy"}

    updates = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [u["episode"] for u in updates] == [8, 16]  # 2 updates of 2 prompts x 4 samples
    keys = set().union(*updates)
    assert not {k for k in keys if k.startswith(("critic/", "val/clipfrac")) or k == "loss/value_avg"}
    assert {"loss/policy_avg", "policy/grad_norm", "objective/kl", "verifier/reward"} <= keys
    assert any(u["policy/grad_norm"] > 0 for u in updates)
    if kl_loss:
        assert "loss/kl_avg" in keys and all(u["objective/non_score_reward"] == 0 for u in updates)
    else:
        assert "loss/kl_avg" not in keys
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    ids = [row["id"] for row in completions if row["update"] == 1]
    assert ids[:4] == [ids[0]] * 4 and ids[4:] == [ids[4]] * 4 and ids[0] != ids[4]

    trained, initial = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    info = json.loads((out / "run_info.json").read_text())
    assert info["advantage_estimator"] == "reinforce_pp_baseline"
    assert not list(out.glob("checkpoint-*/*value*"))


# ------------------------------------------------------------------ memory plan


def test_memory_plan_has_no_critic_terms_without_a_critic(caplog, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "32")
    with caplog.at_level("INFO"):
        ppo_medqa.main(["--config", PAPER_CONFIG, "--dry_run", "true", "--bf16", "false",
                        "--launch_config", str(REPO / "launch/zero3.yaml")])  # fmt: skip
    plan = [line for line in caplog.text.splitlines() if "memory plan" in line or "memory per device" in line]
    assert plan and all("critic" not in line.replace("no critic", "") for line in plan), plan
    assert "rollouts_per_update: 1024" in caplog.text and "prompts_per_update: 128" in caplog.text
    assert "num_updates: 100" in caplog.text  # compute matched to PPO's 100 updates of 1024

    shape = QWEN25_BASE_SHAPES["qwen/qwen2.5-3b"]
    work = dict(prompt_length=1024, response_length=1024, micro_batch=4, rollout_chunk=8, rollouts_per_device=32,
                compute_bytes=2, gradient_checkpointing=True)  # fmt: skip
    for launch in (Launch(world_size=32), Launch(32, True, 3)):
        with_critic = estimate_ppo(shape, PPOWorkload(**work), launch)
        without = estimate_ppo(shape, PPOWorkload(**work, critic=False), launch)
        shard = 32 if launch.zero_stage == 3 else 1
        weight_bytes = 2 if launch.deepspeed else 4
        assert with_critic.weights - without.weights == pytest.approx(
            shape.critic_params * weight_bytes / shard
        )
        assert without.optimizer < with_critic.optimizer and without.gradients < with_critic.gradients
        assert without.activations == pytest.approx(with_critic.activations / 2)  # one model's, not two
        assert "critic backward" not in without.details["update moments"]
        assert without.total < with_critic.total
    assert (
        memory_plan.PPOWorkload.from_args(
            SimpleNamespace(**vars(_args_like_paper())), SimpleNamespace(use_peft=False)
        ).critic
        is False
    )


def _args_like_paper() -> SimpleNamespace:
    return SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=8,
                           max_prompt_length=1024, response_length=1024, local_rollout_forward_batch_size=8,
                           bf16=True, fp16=False, gradient_checkpointing=True, ds3_gather_for_generation=True,
                           vllm_gpu_memory_utilization=0.3, rollout_backend="hf",
                           advantage_estimator="reinforce_pp_baseline")  # fmt: skip
