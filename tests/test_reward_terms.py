"""Reward terms: the verifier stays the default; opt-in penalties; configuration errors; what PPO receives."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from medrlvr_trl.dynamics import Stage, StageThresholds
from medrlvr_trl.modeling import load_tokenizer
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer, Rollouts
from medrlvr_trl.rewards import Gold, RewardValues, verify
from medrlvr_trl.rewards.reward_model import VerifierRewardModel, tokenize_prompts
from medrlvr_trl.rewards.terms import RewardMix, warn_if_penalties_outweigh_format

REPO = Path(__file__).resolve().parents[1]
import ppo_medqa  # noqa: E402

OPTIONS = ("Loratadine tablets", "Artificial tears", "Ketotifen", "Prednisolone", "Timolol")
GOLD = Gold(answer="C", num_options=5, id="q1", options=OPTIONS)
FIFTEEN_WORDS = " ".join(["word"] * 15)


def _terms(completion: str, *names: str) -> dict[str, float]:
    verdict = verify(completion, GOLD.answer, GOLD.num_options)
    return RewardMix(names).term_values(completion, GOLD, verdict)


# ------------------------------------------------------------------ each term


def test_default_reward_is_the_verifier_alone():
    mix = RewardMix()
    assert mix.names == ("verifier",) and mix.weights == (1.0,)
    for completion in ("C", "<think>x</think><answer>C</answer>", "<think>x</think><answer>B</answer>"):
        verdict = verify(completion, "C", 5)
        assert mix(completion, GOLD, verdict) == verdict.reward


@pytest.mark.parametrize(
    ("think", "expected"),
    [("", -1.0), (" ".join(["word"] * 6), -0.6), (FIFTEEN_WORDS, 0.0)],
    ids=["0", "6", "15"],
)
def test_think_length_penalty_ramps_from_empty_to_the_short_threshold(think, expected):
    assert _terms(f"<think>{think}</think><answer>C</answer>", "think_length")[
        "think_length"
    ] == pytest.approx(expected)


def test_penalties_leave_malformed_completions_to_the_verifier():
    values = _terms("The correct answer is C", "verifier", "think_length", "no_leak", "no_prefix")
    assert values == {"verifier": -1.0, "think_length": 0.0, "no_leak": 0.0, "no_prefix": 0.0}


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        ("The correct answer is C.", -1.0),
        ("It is allergic, so the answer is Ketotifen.", -1.0),
        ("Option C, ketotifen, is an antihistamine; compare it with the others.", 0.0),
    ],
    ids=["letter", "option-text", "discussed-only"],
)
def test_leak_penalty_hits_only_an_answer_stated_in_think(think, expected):
    assert _terms(f"<think>{think}</think><answer>C</answer>", "no_leak")["no_leak"] == expected


@pytest.mark.parametrize(
    ("prefix", "expected"), [("", 0.0), ("Let me think step by", -0.5), (FIFTEEN_WORDS, -1.0)]
)
def test_prefix_penalty_grows_with_text_before_think(prefix, expected):
    assert (
        _terms(f"{prefix}<think>{FIFTEEN_WORDS}</think><answer>C</answer>", "no_prefix")["no_prefix"]
        == expected
    )


def test_thresholds_set_where_the_penalties_bite():
    completion = f"<think>{' '.join(['word'] * 6)}</think><answer>C</answer>"
    verdict = verify(completion, "C", 5)
    mix = RewardMix(["think_length"], thresholds=StageThresholds(short_think_words=6))
    assert mix(completion, GOLD, verdict) == 0.0


def test_total_is_the_weighted_sum_of_the_terms():
    completion = "Step one.<think>The correct answer is C.</think><answer>C</answer>"
    verdict = verify(completion, "C", 5)
    mix = RewardMix(["verifier", "think_length", "no_leak", "no_prefix"], [1.0, 0.5, 0.25, 0.1])
    values = mix.term_values(completion, GOLD, verdict)
    assert values == pytest.approx(
        {"verifier": 1.0, "think_length": -2 / 3, "no_leak": -1.0, "no_prefix": -0.2}
    )
    assert mix(completion, GOLD, verdict) == pytest.approx(1.0 - 0.5 * 2 / 3 - 0.25 - 0.1 * 0.2)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("names", "weights", "message"),
    [
        (["verifier", "no_leaks"], None, r"unknown reward term 'no_leaks'; known terms: \['no_leak'"),
        (["verifier", "no_leak"], [1.0], r"reward_weights has 1 value\(s\) but rewards names 2 term\(s\)"),
        (["verifier", "verifier"], None, "verifier listed more than once"),
        ([], None, "rewards is empty"),
        ("verifier", None, "give a list of term names"),
        (["verifier"], [float("nan")], "need a finite number"),
    ],
    ids=["unknown", "weights-length", "duplicate", "empty", "string", "nan"],
)
def test_bad_reward_configuration_is_a_clear_error(names, weights, message):
    with pytest.raises(ValueError, match=message):
        RewardMix(names, weights)


def test_reward_terms_are_checked_when_the_config_is_parsed_before_any_model_loads(tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text(
        (REPO / "recipes/configs/tiny/ppo.yaml").read_text()
        + "rewards: [verifier, no_leak]\nreward_weights: [1.0, 0.5, 0.5]\n"
    )
    args = ["--config", str(config), "--model_name_or_path", str(tmp_path / "no-such-model")]
    with pytest.raises(ValueError, match="reward_weights has 3 value"):
        ppo_medqa.main([*args, "--output_dir", str(tmp_path / "run")])


def test_trainer_config_builds_the_configured_reward_mix(tmp_path):
    config = MedRLVRPPOConfig(
        output_dir=str(tmp_path),
        rewards=["verifier", "think_length"],
        reward_weights=[1, 0.5],
        bf16=False,
        use_cpu=True,
    )
    mix = config.reward_mix()
    assert mix.names == ("verifier", "think_length") and mix.weights == (1.0, 0.5)
    with pytest.raises(ValueError, match="unknown reward term 'bogus'"):
        MedRLVRPPOConfig(output_dir=str(tmp_path), rewards=["bogus"], bf16=False, use_cpu=True)


def test_penalties_that_can_outweigh_a_format_error_are_warned_about(caplog):
    with caplog.at_level("WARNING"):
        assert not warn_if_penalties_outweigh_format(
            RewardMix(["verifier", "no_leak"], [1.0, 0.5]), RewardValues()
        )
        assert warn_if_penalties_outweigh_format(
            RewardMix(["verifier", "no_leak", "no_prefix"]), RewardValues()
        )
    assert "well-formed answer can score below a malformed one" in caplog.text


# ------------------------------------------------------------------ what PPO receives


def test_ppo_scores_are_the_weighted_sum_and_rollouts_carry_stages(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = Dataset.from_list(
        [
            {
                "id": "q1",
                "question": "Itchy eyes every spring. Best drug?",
                "options": list(OPTIONS),
                "answer": "C",
            }
        ]
    )
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)
    completions = [
        "<think>The correct answer is C.</think><answer>C</answer>",
        f"<think>{FIFTEEN_WORDS}</think><answer>B</answer>",
        "no tags at all",
    ]
    queries = torch.tensor([dataset[0]["input_ids"]] * len(completions))
    responses = tokenizer.pad(
        {"input_ids": [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in completions]},
        padding_side="right",
        return_tensors="pt",
    )["input_ids"]  # as sampled: eos, then pad
    args = MedRLVRPPOConfig(
        output_dir=str(tmp_path),
        rewards=["verifier", "think_length", "no_leak"],
        reward_weights=[1.0, 0.5, 0.25],
        bf16=False,
        use_cpu=True,
        report_to="none",
    )
    trainer = SimpleNamespace(
        args=args,
        reward_model=VerifierRewardModel(tokenizer, gold),
        gold=gold,
        reward_mix=args.reward_mix(),
        stage_thresholds=args.stage_thresholds(),
    )
    rollouts = Rollouts(
        queries=queries, responses=responses, query_responses=None, logprobs=None, ref_logprobs=None,
        values=None, last_index=None, padding_mask=None, hit_length_limit=torch.zeros(3, dtype=torch.bool),
    )  # fmt: skip
    MedRLVRPPOTrainer._score(trainer, rollouts)

    think_short = -(1 - 5 / 15)  # "The correct answer is C." is five words
    assert rollouts.scores.tolist() == pytest.approx([1.0 + 0.5 * think_short - 0.25, 0.0, -1.0])
    assert rollouts.term_values["no_leak"].tolist() == [-1.0, 0.0, 0.0]
    assert [f.stage for f in rollouts.features] == [
        Stage.DIRECT_ANSWER_HACKER,
        Stage.CONCISE_STRUCTURER,
        Stage.FORMAT_FAILURE,
    ]
