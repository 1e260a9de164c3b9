"""What only a real-size PPO run would expose, checked on the tiny model: gradient checkpointing that is
on, rollouts that keep their KV cache, old log-probs that match the training forward, the critic's own
learning rate and head, clipping, whitening and the sample-table frequency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import RepetitionPenaltyLogitsProcessor, SuppressTokensLogitsProcessor, set_seed
from trl.experimental.utils import get_reward

from medrlvr_trl.data import load_mcqa
from medrlvr_trl.modeling import load_policy, load_tokenizer, load_value_model
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer, PolicyAndCritic, _forward_inputs
from medrlvr_trl.rewards.reward_model import tokenize_prompts

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "data" / "demo" / "medqa"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each trainer builds its own AcceleratorState (fp32 or bf16) and GradientState: a trainer that
    ran earlier in this process (SFT's, say) must not leave its gradient-accumulation settings."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _trainer(model_dir: Path, out: Path, *, head_std: float | None = None, **overrides) -> MedRLVRPPOTrainer:
    """One update of 8 rollouts (2 micro-batches of 4 accumulated into one optimizer step) unless overridden.

    The global seeds (torch, numpy, random) are set first, so the tests do not depend on what ran
    before them."""
    set_seed(0)
    tokenizer = load_tokenizer(str(model_dir))
    rows = load_mcqa(str(DEMO_DATA), "train", limit=32)
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)
    values = dict(
        output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=2, num_mini_batches=1,
        num_ppo_epochs=1, total_episodes=8, response_length=16, local_rollout_forward_batch_size=8,
        learning_rate=1e-4, bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
        save_steps=100, log_completions_steps=0, num_sample_generations=0, seed=0,
    )  # fmt: skip
    values.update(overrides)
    args = MedRLVRPPOConfig(**values)
    return MedRLVRPPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=load_policy(str(model_dir), None, tokenizer),
        ref_model=load_policy(str(model_dir), None, tokenizer),
        value_model=load_value_model(str(model_dir), None, tokenizer, head_std=head_std),
        train_dataset=dataset,
        gold=gold,
    )


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _pair(trainer: MedRLVRPPOTrainer) -> PolicyAndCritic:
    return trainer.accelerator.unwrap_model(trainer.model)


# ------------------------------------------------------------------ gradient checkpointing, KV cache


def test_gradient_checkpointing_is_on_and_rollouts_keep_their_kv_cache(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, gradient_checkpointing=True)
    pair = _pair(trainer)
    assert pair.policy.is_gradient_checkpointing and pair.value_model.is_gradient_checkpointing
    assert pair.policy.model.gradient_checkpointing and pair.critic_backbone.gradient_checkpointing

    lengths: list[int] = []
    embed = pair.policy.get_input_embeddings()
    generate = trainer._generate

    def recording_generate(policy, queries):
        hook = embed.register_forward_pre_hook(lambda _, inputs: lengths.append(inputs[0].shape[1]))
        try:
            return generate(policy, queries)
        finally:
            hook.remove()

    trainer._generate = recording_generate
    trainer.train()
    # With the cache, only the first step sees the prompt; every later step feeds one new token.
    assert len(lengths) > 2 and lengths[0] > 1 and set(lengths[1:]) == {1}
    assert pair.training, "the pair is back in train mode after the rollout"
    assert "loss/policy_avg" in _metrics(tmp_path)[0]  # and the checkpointed update ran


def test_gradient_checkpointing_kwargs_survive_rollouts(tiny_model_dir, tmp_path):
    """Rollouts decode in eval mode instead of switching checkpointing off and on, which re-enabled it
    with transformers' defaults and dropped the user's kwargs after the first rollout."""
    kwargs = {"use_reentrant": False, "preserve_rng_state": False}
    trainer = _trainer(
        tiny_model_dir, tmp_path, gradient_checkpointing=True, gradient_checkpointing_kwargs=kwargs
    )
    pair = _pair(trainer)
    layers = [pair.policy.model.layers[0], pair.critic_backbone.layers[0]]
    trainer.train()
    for layer in layers:
        assert layer.gradient_checkpointing
        assert layer._gradient_checkpointing_func.keywords == kwargs


def test_rollouts_decode_in_one_call_and_pad_to_the_longest_response(tiny_model_dir, tmp_path):
    """The decode batch is not the scoring chunk (4 sequential generate calls became 1), and responses are
    padded to the longest on the process, not to response_length, before the scoring forwards."""
    trainer = _trainer(tiny_model_dir, tmp_path, local_rollout_forward_batch_size=2, response_length=16)
    eos = trainer.processing_class.eos_token_id
    calls, forwards = [], []
    generate = trainer._generate

    def ending_early(policy, queries):  # as a model that stops: every response ends by token 6
        calls.append(queries.shape[0])
        out = generate(policy, queries)
        out[:, 5] = eos
        return out

    trainer._generate = ending_early
    pair = _pair(trainer)
    hook = pair.register_forward_pre_hook(
        lambda _, args, kwargs: forwards.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    rollouts = trainer._rollout(trainer._prompt_batch(1))
    hook.remove()
    assert calls == [8]
    width = rollouts.responses.shape[1]
    assert width == int(rollouts.last_index.max()) + 1 <= 6
    assert len(forwards) == 4 and all(shape[0] == 2 for shape in forwards)  # scoring still in chunks of 2
    assert rollouts.logprobs.shape == rollouts.values.shape == rollouts.ref_logprobs.shape == (8, width)


# ------------------------------------------------------------------ old log-probs


@pytest.mark.parametrize("bf16", [False, True])
def test_step_zero_ratio_is_one(bf16, tiny_model_dir, tmp_path):
    """Old log-probs come from the training forward, so before the first optimizer step new == old.

    (From generation scores: fp32 vs bf16 log-softmax gave step-0 ratios of 0.971-1.014, and the pad
    suppression renormalised sampling but not the training forward.)
    """
    trainer = _trainer(tiny_model_dir, tmp_path, bf16=bf16)
    trainer.train()
    assert abs(_metrics(tmp_path)[0]["val/ratio"] - 1.0) < 1e-3
    assert _metrics(tmp_path)[0]["policy/approxkl_avg"] < 1e-6


def test_sampling_ignores_the_checkpoints_own_generation_processors(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path)
    policy = _pair(trainer).policy
    policy.generation_config.repetition_penalty = 5.0  # as a checkpoint's generation_config.json may say
    seen = []
    build = policy._get_logits_processor

    def recording(*args, **kwargs):
        processors = build(*args, **kwargs)
        seen.append([type(p) for p in processors])
        return processors

    policy._get_logits_processor = recording
    trainer.train()
    assert seen and all(SuppressTokensLogitsProcessor in kinds for kinds in seen)
    assert not any(RepetitionPenaltyLogitsProcessor in kinds for kinds in seen)
    assert policy.generation_config.repetition_penalty == 5.0  # the model's own config is left as it was


def test_pair_values_equal_trls_critic_values(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    policy = load_policy(str(tiny_model_dir), None, tokenizer)
    critic = load_value_model(str(tiny_model_dir), None, tokenizer, head_std=0.5)
    prompts = tokenizer(["User: short\nAssistant:", "User: a longer question here\nAssistant:"], padding=True)
    queries = torch.tensor(prompts["input_ids"])
    responses = torch.tensor([[11, 12, 13, tokenizer.pad_token_id], [14, 15, 16, 17]])
    query_responses = torch.cat([queries, responses], dim=1)
    context = queries.shape[1]
    with torch.no_grad():
        logits, values = PolicyAndCritic(policy, critic)(
            **_forward_inputs(query_responses, tokenizer.pad_token_id, 4)
        )
        trl_values = get_reward(critic, query_responses, tokenizer.pad_token_id, context)[0][
            :, context - 1 : -1, 0
        ]
        full = policy(
            input_ids=query_responses.masked_fill(query_responses == tokenizer.pad_token_id, 0),
            attention_mask=query_responses != tokenizer.pad_token_id,
            position_ids=_forward_inputs(query_responses, tokenizer.pad_token_id, 4)["position_ids"],
        )
    assert logits.shape == (2, 4, policy.config.vocab_size)
    torch.testing.assert_close(values, trl_values)
    torch.testing.assert_close(logits, full.logits[:, context - 1 : -1])


# ------------------------------------------------------------------ the critic


def test_critic_has_its_own_learning_rate_and_the_scheduler_scales_both(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, learning_rate=1e-6, critic_learning_rate=9e-6,
                       total_episodes=16, lr_scheduler_type="linear")  # fmt: skip
    groups = trainer.optimizer.param_groups
    rates = {(g["role"], g["lr"]) for g in groups}
    assert rates == {("policy", 1e-6), ("critic", 9e-6)}
    pair = _pair(trainer)
    critic_params = {id(p) for p in pair.value_model.parameters()}
    assert all((id(p) in critic_params) == (g["role"] == "critic") for g in groups for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(pair.parameters()))
    trainer.lr_scheduler.step()  # linear decay over the run's 2 updates: halfway
    rates = {g["role"]: g["lr"] for g in groups}
    assert rates["policy"] == pytest.approx(5e-7) and rates["critic"] == pytest.approx(4.5e-6)


def test_paper_config_schedule_is_openrlhfs_cosine_with_warmup_and_a_floor(tiny_model_dir, tmp_path):
    """OpenRLHF (early 2025): cosine_with_min_lr, warmup ceil(3% of the steps), floor 0.1 x each model's lr."""
    import yaml

    paper = yaml.safe_load((REPO / "recipes/configs/ppo_qwen2.5-3b.yaml").read_text())
    schedule = {
        k: paper[k] for k in ("lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "adam_beta2")
    }
    trainer = _trainer(tiny_model_dir, tmp_path, learning_rate=1e-6, critic_learning_rate=9e-6, total_episodes=800,
                       **schedule)  # fmt: skip
    assert trainer.plan.num_updates == 100
    rates = []
    for _ in range(101):
        rates.append({g["role"]: g["lr"] for g in trainer.optimizer.param_groups})
        trainer.lr_scheduler.step()
    assert rates[0]["policy"] == 0.0 and rates[3] == pytest.approx({"policy": 1e-6, "critic": 9e-6})
    assert rates[100] == pytest.approx({"policy": 1e-7, "critic": 9e-7})
    assert all(a["policy"] >= b["policy"] for a, b in zip(rates[3:-1], rates[4:], strict=True))


def test_fresh_critic_head_starts_small(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    hidden = load_policy(str(tiny_model_dir), None, tokenizer).config.hidden_size
    default = load_value_model(str(tiny_model_dir), None, tokenizer).score.weight
    assert default.std().item() == pytest.approx(1 / (hidden + 1), rel=0.3)  # OpenRLHF's init, not 0.02
    assert (
        torch.count_nonzero(load_value_model(str(tiny_model_dir), None, tokenizer, head_std=0.0).score.weight)
        == 0
    )


def test_critic_warmup_trains_the_critic_only(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, critic_warmup_updates=1, head_std=0.5)
    pair = _pair(trainer)
    policy_before = {k: v.clone() for k, v in pair.policy.state_dict().items()}
    critic_before = {k: v.clone() for k, v in pair.value_model.state_dict().items()}
    trainer.train()
    assert all(torch.equal(policy_before[k], v) for k, v in pair.policy.state_dict().items())
    assert any(not torch.equal(critic_before[k], v) for k, v in pair.value_model.state_dict().items())


def test_the_first_policy_step_after_critic_warmup_is_adams_first_step(tiny_model_dir, tmp_path):
    """Warmup gives the policy zero gradients, yet Adam counted those steps: the first real step then ran with
    step-k bias corrections (0.5-3.2x the learning rate). Its step counter restarts when warmup ends."""
    trainer = _trainer(
        tiny_model_dir, tmp_path, critic_warmup_updates=1, total_episodes=16, head_std=0.5,
        lr_scheduler_type="constant",
    )  # fmt: skip
    policy = _pair(trainer).policy
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer.train()
    state = trainer.optimizer.optimizer.state
    steps = {
        g["role"]: {float(state[p]["step"]) for p in g["params"] if p in state}
        for g in trainer.optimizer.param_groups
    }
    assert steps == {"policy": {1.0}, "critic": {2.0}}
    # Adam's first step moves every weight with a clear gradient by the learning rate (1e-4), not 0.74x it.
    moved = torch.cat([(p.detach() - before[n]).abs().flatten() for n, p in policy.named_parameters()])
    assert moved.max().item() == pytest.approx(1e-4, rel=1e-3)
    assert (moved > 0.99e-4).float().mean().item() > 0.5


def test_step_zero_kl_is_exactly_zero_with_bf16_compute_and_a_zero_head_gives_zero_values(
    tiny_model_dir, tmp_path
):
    """The recipe loads the reference in the policy's dtype (fp32 masters here): a bf16 reference beside
    them gave a KL of 6.6e-5 per token at step 0."""
    import ppo_medqa

    ppo_medqa.main(
        ["--config", str(REPO / "recipes/configs/tiny/ppo.yaml"), "--model_name_or_path", str(tiny_model_dir),
         "--dataset_name", str(DEMO_DATA), "--output_dir", str(tmp_path), "--total_episodes", "8",
         "--num_mini_batches", "1", "--num_ppo_epochs", "1", "--bf16", "true", "--dtype", "bfloat16",
         "--value_head_init_std", "0"]
    )  # fmt: skip
    first = _metrics(tmp_path)[0]
    assert first["objective/kl"] == 0.0
    assert first["critic/values_mean"] == 0.0 and first["critic/values_abs_max"] == 0.0


# ------------------------------------------------------------------ clipping, whitening, sample table


def test_policy_and_critic_are_each_clipped_at_max_grad_norm_and_both_norms_are_logged(
    tiny_model_dir, tmp_path
):
    """Each model is clipped by its own norm (as OpenRLHF's two engines are): both stepped norms sit at
    max_grad_norm. A joint clip would leave each below it (their squares sum to max_grad_norm**2)."""
    trainer = _trainer(tiny_model_dir, tmp_path, max_grad_norm=1e-3, head_std=0.5)
    groups = trainer.optimizer.param_groups
    stepped: list[dict[str, float]] = []

    def record(*_):
        norms = {}
        for role in ("policy", "critic"):
            grads = [p.grad for g in groups if g["role"] == role for p in g["params"] if p.grad is not None]
            norms[role] = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            ).item()
        stepped.append(norms)

    trainer.optimizer.optimizer.register_step_pre_hook(record)
    trainer.train()
    logged = _metrics(tmp_path)[0]
    assert logged["policy/grad_norm"] > 1e-3 and logged["critic/grad_norm"] > 1e-3  # norms before clipping
    assert stepped and all(n == pytest.approx(1e-3, rel=1e-3) for step in stepped for n in step.values())


def test_whitening_counts_all_rollouts_of_a_process(tiny_model_dir, tmp_path):
    # 2 micro-batches of 4 per mini-batch: TRL's own check saw 4 and refused; whitening is over 8.
    trainer = _trainer(tiny_model_dir, tmp_path / "ok", whiten_rewards=True, gradient_accumulation_steps=1,
                       num_mini_batches=2)  # fmt: skip
    trainer.train()
    assert len(_metrics(tmp_path / "ok")) == 1
    with pytest.raises(ValueError, match="at least 8 rollouts per process"):
        _trainer(tiny_model_dir, tmp_path / "few", whiten_rewards=True, gradient_accumulation_steps=1,
                 total_episodes=4)  # fmt: skip


def test_sample_table_frequency_counts_real_updates(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, total_episodes=32, gradient_accumulation_steps=1,
                       num_mini_batches=2, num_sample_generations=2)  # fmt: skip
    assert trainer.plan.num_updates == 4
    assert trainer.sample_generations_freq == 2  # TRL counted 8 updates of one mini-batch: 4
