"""`shuffle_options`: a new option order per epoch, the gold letter following its text, in every trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sft import load_recipe

from medrlvr_trl import option_order
from medrlvr_trl.build_cache import one_intra_op_thread
from medrlvr_trl.data import load_mcqa
from medrlvr_trl.option_order import EpochViews, reorder_options, shuffled_rows
from medrlvr_trl.option_order import option_order as draw_order
from medrlvr_trl.prompts import LETTERS

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "data" / "demo" / "medqa"
TINY_CONFIGS = REPO / "recipes" / "configs" / "tiny"
ROWS = 8
SEED = 3


@pytest.fixture(scope="module")
def rows():
    return load_mcqa(str(DEMO_DATA), "train", limit=ROWS)


def _gold_text(row) -> str:
    return row["options"][row["answer_index"]]


def test_an_order_is_a_permutation_fixed_by_seed_epoch_and_row():
    order = draw_order(5, seed=0, epoch=1, index=7)
    assert sorted(order) == list(range(5))
    assert order == draw_order(5, seed=0, epoch=1, index=7)
    draws = {tuple(draw_order(5, seed=s, epoch=e, index=i)) for s in (0, 1) for e in (0, 1) for i in range(5)}
    assert len(draws) > 10  # 20 draws of 120 orders: not one order reused


def test_reordered_options_keep_every_text_and_the_gold_letter_follows_its_text(rows):
    row = rows[0]
    moved = reorder_options(row, [2, 0, 4, 1, 3])
    assert moved["options"] == [row["options"][i] for i in (2, 0, 4, 1, 3)]
    assert _gold_text(moved) == _gold_text(row) and moved["answer"] == LETTERS[moved["answer_index"]]


def test_each_epoch_draws_new_orders_and_the_same_epoch_the_same_ones(rows):
    first, again, second = (shuffled_rows(rows, seed=SEED, epoch=e) for e in (0, 0, 1))
    assert first["options"] == again["options"]
    assert first["options"] != second["options"] and first["options"] != rows["options"]
    for shuffled in (first, second):
        assert [_gold_text(r) for r in shuffled] == [_gold_text(r) for r in rows]
        assert [sorted(r["options"]) for r in shuffled] == [sorted(r["options"]) for r in rows]


def test_epoch_views_build_each_epoch_once_and_only_when_it_changes():
    built = []
    views = EpochViews(lambda epoch: built.append(epoch) or [epoch] * 3)
    views.set_epoch(0)
    views.set_epoch(2)
    views.set_epoch(2)
    assert built == [0, 2] and views[1] == 2 and len(views) == 3


def test_the_callback_switches_to_the_epoch_a_trainer_starts_or_resumes_in():
    from types import SimpleNamespace

    views = EpochViews(lambda epoch: [epoch])
    callback = option_order.OptionOrderCallback(views)
    for state_epoch, expected in ((None, 0), (1.0, 1), (2.5, 2), (2.99, 2), (2.9999999999, 3)):
        callback.on_epoch_begin(None, SimpleNamespace(epoch=state_epoch), None)
        assert views.epoch == expected == views[0]


def _expected_letters(rows, epoch: int) -> dict[str, str]:
    return {r["id"]: r["answer"] for r in shuffled_rows(rows, seed=SEED, epoch=epoch)}


def test_ppo_rewards_each_epoch_against_that_epoch_s_option_order(tiny_model_dir, rows, tmp_path):
    """8 questions, 8 rollouts per update: update 1 is epoch 0 and update 2 epoch 1. The gold table is
    keyed by prompt tokens, so a logged gold letter is the one of the prompt the policy was shown."""
    out = tmp_path / "ppo"
    argv = ["--config", str(TINY_CONFIGS / "ppo.yaml"), "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--dataset_name", str(DEMO_DATA), "--max_train_samples", str(ROWS), "--output_dir", str(out)]
    argv += ["--total_episodes", "16", "--seed", str(SEED), "--shuffle_options", "true"]
    load_recipe("ppo_medqa").main(argv)

    logged = [json.loads(line) for line in (out / "completions.jsonl").open()]
    assert sorted({r["update"] for r in logged}) == [1, 2]
    for row in logged:
        assert row["gold"] == _expected_letters(rows, row["update"] - 1)[row["id"]], row
    assert _expected_letters(rows, 0) != _expected_letters(rows, 1)
    info = json.loads((out / "run_info.json").read_text())
    assert info["hyperparameters"]["shuffle_options"] is True


def test_grpo_trains_each_epoch_on_that_epoch_s_prompts_and_gold(tiny_model_dir, rows, tmp_path, monkeypatch):
    recipe = load_recipe("grpo_medqa")
    fetched: list[tuple[int, dict]] = []
    original = EpochViews.__getitem__
    monkeypatch.setattr(
        EpochViews,
        "__getitem__",
        lambda self, i: fetched.append((self.epoch, original(self, i))) or original(self, i),
    )
    out = tmp_path / "grpo"
    argv = ["--config", str(TINY_CONFIGS / "grpo.yaml"), "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--dataset_name", str(DEMO_DATA), "--max_train_samples", str(ROWS), "--output_dir", str(out)]
    argv += ["--total_completions", "64", "--seed", str(SEED), "--shuffle_options", "true"]
    with one_intra_op_thread():
        recipe.main(argv)

    assert {epoch for epoch, _ in fetched} == {0, 1}
    for epoch, item in fetched:
        letter = item["answer"]
        assert letter == _expected_letters(rows, epoch)[item["id"]]
        assert f"\n{letter}. {item['options'][LETTERS.index(letter)]}\n" in item["prompt"] + "\n"
    logged = [json.loads(line) for line in (out / "completions.jsonl").open()]
    assert sorted({r["update"] for r in logged}) == [1, 2, 3, 4]  # 2 generation batches per epoch
    for row in logged:
        assert row["gold"] == _expected_letters(rows, (row["update"] - 1) // 2)[row["id"]], row


def test_sft_tokenises_and_trains_on_each_epoch_s_order(tiny_model_dir, tmp_path, monkeypatch):
    recipe = load_recipe("sft_medqa")
    views: list[EpochViews] = []
    fetched: list[tuple[int, tuple[int, ...]]] = []
    original_use, original_get = option_order.use_epoch_views, EpochViews.__getitem__
    monkeypatch.setattr(recipe, "use_epoch_views", lambda *a: views.append(original_use(*a)) or views[-1])

    def spy(self, index):
        item = original_get(self, index)
        fetched.append((self.epoch, tuple(item["input_ids"])))
        return item

    monkeypatch.setattr(EpochViews, "__getitem__", spy)
    argv = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(DEMO_DATA)]
    argv += [
        "--max_train_samples",
        str(ROWS),
        "--output_dir",
        str(tmp_path / "sft"),
        "--num_train_epochs",
        "2",
    ]
    argv += [
        "--per_device_train_batch_size",
        "4",
        "--bf16",
        "false",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
    ]
    argv += ["--save_strategy", "no", "--disable_tqdm", "true", "--prompt_template", "direct"]
    argv += ["--seed", str(SEED), "--shuffle_options", "true"]
    recipe.main(argv)

    (shuffling,) = views
    assert shuffling.epoch == 1
    prepared = {e: {tuple(x["input_ids"]) for x in shuffling._make(e)} for e in (0, 1)}
    assert prepared[0] != prepared[1]
    for epoch in (0, 1):
        seen = [ids for e, ids in fetched if e == epoch]
        assert len(seen) == ROWS and set(seen) == prepared[epoch]
    info = json.loads((tmp_path / "sft" / "run_info.json").read_text())
    assert info["shuffle_options"] is True


def test_sft_refuses_shuffle_options_with_packing(tmp_path):
    from medrlvr_trl.sft import MedSFTConfig

    with pytest.raises(ValueError, match="shuffle_options cannot be combined with packing"):
        MedSFTConfig(output_dir=str(tmp_path), shuffle_options=True, packing=True, bf16=False, use_cpu=True)
