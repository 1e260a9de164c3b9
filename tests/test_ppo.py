"""MedRLVRPPOTrainer: the verifier reward seam, gold lookup, batch plan, training, saving, resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from medrlvr_trl.data import load_mcqa
from medrlvr_trl.evaluation import questions_sha256
from medrlvr_trl.modeling import load_tokenizer
from medrlvr_trl.ppo import MedRLVRPPOConfig, MedRLVRPPOTrainer, Rollouts, _verifier_reward_seam, plan_batches
from medrlvr_trl.rewards import Gold, verify
from medrlvr_trl.rewards.reward_model import GoldTable, VerifierRewardModel, tokenize_prompts

REPO = Path(__file__).resolve().parents[1]
import ppo_medqa  # noqa: E402

LETTERS = "ABCD"


@pytest.fixture(scope="session")
def medqa_dir(tmp_path_factory) -> Path:
    """Sixteen MedQA-schema questions in a folder holding train.jsonl."""
    folder = tmp_path_factory.mktemp("medqa")
    drugs = ["aspirin", "insulin", "penicillin", "metformin", "warfarin", "heparin", "atropine", "naloxone"]
    with (folder / "train.jsonl").open("w") as f:
        for i in range(16):
            options = [drugs[(i + k) % len(drugs)] for k in range(4)]
            gold = i % 4
            row = {
                "question": f"Patient {i} needs treatment. Which drug is first line?",
                "options": dict(zip(LETTERS, options, strict=True)),
                "answer": options[gold],
                "answer_idx": LETTERS[gold],
                "meta_info": "step1",
            }
            f.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture()
def tokenized(medqa_dir, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = load_mcqa(str(medqa_dir), "train")
    dataset, gold = tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=512)
    return tokenizer, rows, dataset, gold


def _left_padded(tokenizer, dataset, indices) -> torch.Tensor:
    batch = tokenizer.pad({"input_ids": [dataset[i]["input_ids"] for i in indices]}, return_tensors="pt")
    return batch["input_ids"]


def _responses(tokenizer, texts: list[str], width: int = 48) -> torch.Tensor:
    """Responses as PPO produces them: tokens, the eos stop token, then pad to a common width."""
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(ids + [tokenizer.pad_token_id] * (width - len(ids)))
    return torch.tensor(rows)


# ------------------------------------------------------------------ gold lookup


def test_gold_lookup_finds_each_prompt_through_left_padding(tokenized):
    tokenizer, rows, dataset, gold = tokenized
    queries = _left_padded(tokenizer, dataset, [0, 5, 10])
    assert (queries[:, 0] == tokenizer.pad_token_id).any(), "prompts of different length must be left-padded"
    found = [gold.lookup(q) for q in queries]
    assert [g.answer for g in found] == [rows[i]["answer"] for i in (0, 5, 10)]
    assert [g.id for g in found] == [rows[i]["id"] for i in (0, 5, 10)]
    assert all(g.num_options == 4 for g in found)


def test_prompt_without_gold_is_an_error_not_a_zero(tokenized):
    tokenizer, _, _, gold = tokenized
    stranger = torch.tensor(tokenizer("User: something else entirely\nAssistant:")["input_ids"])
    with pytest.raises(KeyError, match="no gold answer"):
        gold.lookup(stranger)


def test_same_prompt_with_two_gold_answers_is_rejected():
    table = GoldTable(pad_token_id=0)
    table.add([5, 6, 7], Gold("A", 4, "q1"))
    table.add([5, 6, 7], Gold("A", 4, "q1-copy"))  # a duplicate with the same answer is harmless
    with pytest.raises(ValueError, match="'q1' and 'q2'"):
        table.add([5, 6, 7], Gold("B", 4, "q2"))


def test_prompt_over_the_length_limit_names_the_row(medqa_dir, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = load_mcqa(str(medqa_dir), "train")
    with pytest.raises(ValueError, match=r"row 'medqa\w*-train-1'.*max_prompt_length=20"):
        tokenize_prompts(rows, tokenizer, template="r1", max_prompt_length=20)


def test_ppo_refuses_a_tokenizer_with_pad_equal_to_eos(medqa_dir, qwen_like_tiny_dir):
    raw = AutoTokenizer.from_pretrained(str(qwen_like_tiny_dir))
    assert raw.pad_token_id == raw.eos_token_id  # configured like Qwen2.5 base
    rows = load_mcqa(str(medqa_dir), "train")
    # The prompts themselves are fine (GRPO and RLOO train on them with pad == eos); PPO is not.
    dataset, gold = tokenize_prompts(rows, raw, template="r1", max_prompt_length=512)
    assert len(gold) == len(rows)
    with pytest.raises(ValueError, match="pad and eos tokens must differ"):
        MedRLVRPPOTrainer(
            args=None, processing_class=raw, model=None, ref_model=None, value_model=None,
            train_dataset=dataset, gold=gold,
        )  # fmt: skip
    fixed = load_tokenizer(str(qwen_like_tiny_dir))
    assert fixed.pad_token_id != fixed.eos_token_id


# ------------------------------------------------------------------ reward seam

COMPLETIONS = [
    "<think>first line is aspirin</think><answer>A</answer>",  # valid; correct for row 0 (gold A)
    "<think>hmm</think> <answer>B. insulin</answer>",  # valid; row 1 has gold B
    "<think>no idea</think><answer>D</answer>",  # valid; wrong for row 2 (gold C)
    "The answer is A",  # no tags: format error
    "<think>x</think><answer>A</answer> trailing text",  # text after </answer>: format error
]


def test_reward_model_returns_exactly_the_verifier_rewards(tokenized):
    tokenizer, rows, dataset, gold = tokenized
    indices = list(range(len(COMPLETIONS)))
    queries = _left_padded(tokenizer, dataset, indices)
    responses = _responses(tokenizer, COMPLETIONS)
    reward_model = VerifierRewardModel(tokenizer, gold)
    expected = [
        verify(text, rows[i]["answer"], 4).reward for i, text in zip(indices, COMPLETIONS, strict=True)
    ]
    assert expected == [1.0, 1.0, 0.0, -1.0, -1.0]
    assert reward_model.scores(queries, responses).tolist() == expected

    texts, verdicts = reward_model.judge(queries, responses)
    assert texts == COMPLETIONS  # eos and pad are stripped before verifying


def test_trl_get_reward_seam_routes_our_module_to_the_verifier(tokenized):
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    tokenizer, rows, dataset, gold = tokenized
    queries = _left_padded(tokenizer, dataset, range(len(COMPLETIONS)))
    responses = _responses(tokenizer, COMPLETIONS)
    reward_model = VerifierRewardModel(tokenizer, gold)
    original = trl_ppo.get_reward
    with _verifier_reward_seam():
        _, scores, last = trl_ppo.get_reward(
            reward_model, torch.cat([queries, responses], 1), tokenizer.pad_token_id, queries.shape[1]
        )
    assert trl_ppo.get_reward is original, "the seam must restore TRL's function"
    assert scores.tolist() == [1.0, 1.0, 0.0, -1.0, -1.0]
    eos_positions = (responses == tokenizer.eos_token_id).int().argmax(1) + queries.shape[1]
    assert last.tolist() == eos_positions.tolist()


# ------------------------------------------------------------------ batch plan and advantages


def _config(tmp_path: Path, **overrides) -> MedRLVRPPOConfig:
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  num_mini_batches=2, num_ppo_epochs=3, total_episodes=100, bf16=False, use_cpu=True,
                  report_to="none")  # fmt: skip
    values.update(overrides)
    return MedRLVRPPOConfig(**values)


def test_batch_plan_counts_rollouts_steps_and_updates(tmp_path):
    plan = plan_batches(_config(tmp_path), world_size=4, train_size=1000)
    assert plan.rollouts_per_device == 8  # 2 per micro-batch x 2 accumulated x 2 mini-batches
    assert plan.rollouts_per_update == 32
    assert plan.optimizer_steps_per_update == 6  # 2 mini-batches x 3 PPO epochs
    assert plan.num_updates == 4  # ceil(100 / 32)
    assert plan.updates_per_epoch == 31.25
    assert plan.epochs == pytest.approx(0.128)  # 4 updates x 32 rollouts of 1,000 questions


def prompt_batch_ids(args, plan, size: int, rank: int, update: int) -> list[int]:
    """The question indices process `rank` reads for `update`, from the trainer's own `_prompt_batch` on
    a stand-in holding only what it reads (questions 0..size-1, each one token: its index)."""
    fake = SimpleNamespace(
        plan=plan, train_dataset_len=size, train_dataset=[{"input_ids": [i]} for i in range(size)],
        accelerator=SimpleNamespace(process_index=rank, device="cpu"), args=args, _epoch_cache={},
        _epoch_prompts=None, data_collator=lambda rows: {"input_ids": torch.tensor([r["input_ids"] for r in rows])},
    )  # fmt: skip
    fake._epoch_data = lambda epoch: MedRLVRPPOTrainer._epoch_data(fake, epoch)
    return MedRLVRPPOTrainer._prompt_batch(fake, update)[:, 0].tolist()


def test_every_question_is_seen_once_per_epoch_when_updates_do_not_divide_it(tmp_path):
    """10 questions, 2 processes x 2 rollouts per update: epochs end mid-update and carry over (the paper
    config's 10,178 questions in updates of 1,024 used to drop 962 per epoch)."""
    args = _config(tmp_path, seed=3)
    size, per_device, world = 10, 2, 2
    plan = SimpleNamespace(rollouts_per_update=per_device * world, rollouts_per_device=per_device,
                           prompts_per_update=per_device * world, prompts_per_device=per_device,
                           samples_per_prompt=1)  # fmt: skip
    seen: dict[int, list[int]] = {rank: [] for rank in range(world)}
    for rank in range(world):
        for update in range(1, 16):  # 60 rollouts: 6 epochs
            seen[rank].append(prompt_batch_ids(args, plan, size, rank, update))
    stream = [row for update in range(15) for rank in range(world) for row in seen[rank][update]]
    epochs = [stream[e * size : (e + 1) * size] for e in range(6)]
    assert all(sorted(epoch) == list(range(size)) for epoch in epochs)
    assert epochs[0] != epochs[1]  # a new shuffle each epoch


def test_batch_plan_rejects_a_training_set_smaller_than_one_update(tmp_path):
    with pytest.raises(ValueError, match="only 20"):
        plan_batches(_config(tmp_path), world_size=4, train_size=20)


def test_verifier_score_lands_on_the_last_response_token(tmp_path):
    args = _config(tmp_path, kl_coef=0.0, gamma=1.0, lam=1.0)
    padding_mask = torch.tensor([[False, False, False, True], [False, True, True, True]])
    zeros = torch.zeros(2, 4)
    rollouts = Rollouts(
        queries=torch.zeros(2, 1, dtype=torch.long), responses=torch.zeros(2, 4, dtype=torch.long),
        query_responses=torch.zeros(2, 5, dtype=torch.long), logprobs=zeros, ref_logprobs=zeros,
        values=zeros, last_index=torch.tensor([2, 0]), padding_mask=padding_mask,
        hit_length_limit=torch.tensor([False, False]), scores=torch.tensor([1.0, -1.0]),
    )  # fmt: skip
    _, returns, _ = MedRLVRPPOTrainer._advantages(SimpleNamespace(args=args), rollouts)
    # With no KL, no discount and a zero critic, every valid token's return is the final score.
    assert returns.tolist() == [[1.0, 1.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]


# ------------------------------------------------------------------ training runs


def _recipe_args(model_dir: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "recipes/configs/tiny/ppo.yaml"),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(data_dir),
        "--output_dir", str(out),
        *extra,
    ]  # fmt: skip


def test_tiny_ppo_run_logs_verifier_metrics_and_saves_the_policy(tiny_model_dir, medqa_dir, tmp_path):
    out = tmp_path / "run"
    ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, out, "--total_episodes", "24"))

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in metrics] == [1, 2, 3]
    for key in ("verifier/reward", "verifier/format_ok", "verifier/accuracy", "verifier/response_length",
                "verifier/hit_length_limit", "objective/kl", "loss/policy_avg"):  # fmt: skip
        assert key in metrics[0]
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 3 * 8
    first = completions[0]
    assert verify(first["completion"], first["gold"], 4).reward == first["reward"]

    policy = AutoModelForCausalLM.from_pretrained(out)
    assert policy.config.vocab_size > 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["answer_mode"] == "cot" and info["base_model"] == str(tiny_model_dir)
    rows = load_mcqa(str(medqa_dir), "train")  # evaluation's hash of the same questions
    assert info["training_data"] == {"source": str(medqa_dir), "split": "train", "category": None,
                                     "revision": None, "n": 16, "questions_sha256": questions_sha256(rows)}  # fmt: skip
    assert "final_metrics" in (out / "README.md").read_text()
    assert AutoTokenizer.from_pretrained(out).pad_token_id != AutoTokenizer.from_pretrained(out).eos_token_id
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000003"]


class _StopAtUpdate(TrainerCallback):
    def __init__(self, update: int) -> None:
        self.update = update

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.update:
            raise KeyboardInterrupt(f"stopped at update {self.update}")


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(
    tiny_model_dir, medqa_dir, tmp_path, monkeypatch
):
    extra = ("--total_episodes", "40", "--save_steps", "2")
    ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, tmp_path / "straight", *extra))

    resumed = tmp_path / "resumed"
    original_init = MedRLVRPPOTrainer.__init__

    def init_with_stop(self, *args, **kwargs):
        original_init(self, *args, callbacks=[_StopAtUpdate(3)], **kwargs)

    monkeypatch.setattr(MedRLVRPPOTrainer, "__init__", init_with_stop)
    with pytest.raises(KeyboardInterrupt):
        ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, resumed, *extra))
    monkeypatch.setattr(MedRLVRPPOTrainer, "__init__", original_init)
    assert not (resumed / "config.json").exists()
    ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, resumed, *extra))

    metrics = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [m["update"] for m in metrics] == [1, 2, 3, 4, 5]  # update 3 was redone, not logged twice
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    again = load_file(resumed / "model.safetensors")
    assert max((straight[k] - again[k]).abs().max().item() for k in straight) == 0.0


def test_used_output_dir_is_refused_when_resume_is_off(tiny_model_dir, medqa_dir, tmp_path):
    out = tmp_path / "run"
    ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, out, "--total_episodes", "8"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        ppo_medqa.main(
            _recipe_args(tiny_model_dir, medqa_dir, out, "--total_episodes", "8", "--resume", "false")
        )


def test_lora_policy_trains_and_saves_a_merged_model(tiny_model_dir, medqa_dir, tmp_path):
    out = tmp_path / "lora"
    lora = (
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
    )
    ppo_medqa.main(_recipe_args(tiny_model_dir, medqa_dir, out, "--total_episodes", "16", *lora))
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not any("lora" in name for name in merged.state_dict())
    changed = [
        name for name, weight in merged.state_dict().items()
        if not torch.equal(weight, base.state_dict()[name])
    ]  # fmt: skip
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)


# ------------------------------------------------------------------ configuration


def test_unknown_yaml_key_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rate: 1.0e-6\nlearnin_rate: 2.0e-6\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*learnin_rate"):
        ppo_medqa.main(["--config", str(config)])


def test_paper_config_offline_fails_fast_and_names_the_tiny_config():
    paper = ["--config", str(REPO / "recipes/configs/ppo_qwen2.5-3b.yaml"), "--bf16", "false"]
    with pytest.raises(ValueError, match="recipes/configs/tiny/ppo.yaml"):
        ppo_medqa.main(paper)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is supported on this machine")
def test_bf16_config_on_a_cpu_machine_says_how_to_proceed():
    with pytest.raises(ValueError, match="add `--bf16 false`"):
        ppo_medqa.main(["--config", str(REPO / "recipes/configs/ppo_qwen2.5-3b.yaml")])


def test_readme_dry_run_plans_the_paper_config_under_zero3_on_a_laptop(caplog, monkeypatch):
    """No GPU needed for a plan: bf16 stays as the config says, the launch is the one named."""
    monkeypatch.setenv("WORLD_SIZE", "32")
    with caplog.at_level("INFO"):
        ppo_medqa.main(["--config", str(REPO / "recipes/configs/ppo_qwen2.5-3b.yaml"), "--dry_run", "true",
                        "--launch_config", str(REPO / "launch/zero3.yaml")])  # fmt: skip
    text = caplog.text
    assert "DeepSpeed ZeRO-3, world size 32; compute bf16/fp16" in text
    assert "A100-40GB (39.59 GiB, line 35.6): fits" in text
    assert "rollouts_per_update: 1024" in text and "epochs: 10.06" in text


def test_paper_config_dry_run_prints_the_batch_plan_offline(caplog, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "32")
    with caplog.at_level("INFO"):
        ppo_medqa.main(
            [
                "--config",
                str(REPO / "recipes/configs/ppo_qwen2.5-3b.yaml"),
                "--dry_run",
                "true",
                "--bf16",
                "false",
            ]
        )
    text = caplog.text
    assert "rollouts_per_update: 1024" in text  # OpenRLHF's rollout batch at the paper's 32 GPUs
    assert "mini_batch_per_device: 4" in text and "optimizer_steps_per_update: 8" in text
    assert "num_updates: 100" in text  # 10 epochs x 10,178 questions / 1024
    assert "Qwen/Qwen2.5-3B" in text
