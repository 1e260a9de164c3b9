"""The lookup benchmark's rows: what is asked, and which single token is scored."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from demo.experiments import lookup_learning
from demo.experiments.lookup_learning import IGNORE, LookupRows
from medrlvr_trl.prompts import LETTERS, build_prompt

WORDS = ["tailor", "lime", "hive", "harbour", "violin", "parrot"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def asked_keys(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, str]]:
    """(asked word, scored letter) for every scored position of a key row."""
    text_before = [tokenizer.decode(ids[:i]) for i, label in enumerate(labels) if label != IGNORE]
    letters = [tokenizer.decode([label]).strip() for label in labels if label != IGNORE]
    return [
        (prefix.rsplit("Key: ", 1)[1].split(" is option")[0], letter)
        for prefix, letter in zip(text_before, letters, strict=True)
    ]


@pytest.mark.parametrize("keys_per_row, expected", [(0, None), (1, 1), (2, 2)])
def test_a_key_row_asks_the_given_number_of_options_each_scored_on_its_own_letter(
    tokenizer, keys_per_row, expected
):
    rows = LookupRows(
        tokenizer, WORDS, row_format="key", max_options=6, loss="letter", seed=3, keys_per_row=keys_per_row
    )
    for n_options in (2, 4, 6):
        words = WORDS[:n_options]
        ids, labels = rows.key_row(words)
        keys = asked_keys(tokenizer, ids, labels)
        assert len(keys) == (n_options if expected is None else min(expected, n_options))
        assert len({word for word, _ in keys}) == len(keys)  # no option asked twice
        for word, letter in keys:
            assert letter == LETTERS[words.index(word)]


def test_one_key_rows_ask_every_position_about_equally_often(tokenizer):
    """With one key asked, which option it is must not be predictable (else a position prior scores)."""
    rows = LookupRows(
        tokenizer, WORDS, row_format="key", max_options=5, loss="letter", seed=0, keys_per_row=1
    )
    counts = dict.fromkeys(LETTERS[:5], 0)
    for _ in range(500):
        ids, labels = rows.key_row(WORDS[:5])
        [(_, letter)] = asked_keys(tokenizer, ids, labels)
        counts[letter] += 1
    assert min(counts.values()) > 70, counts


PROSE_AND_CHECKPOINTS = ["--format", "prompt", "--prose_batch", "2", "--checkpoint_every", "4"]


@pytest.mark.parametrize("extra", [[], PROSE_AND_CHECKPOINTS], ids=["key_rows", "prompt_rows_with_prose"])
def test_a_stopped_run_continues_from_its_state_and_matches_a_straight_one(tmp_path, extra):
    """A 10k-step run takes hours on one core: it must survive being stopped, and a rerun must be the
    same run, not a new one (model, optimizer and every random stream restored, the corpus windows'
    included)."""
    common = ["--probe_every", "2", "--probe_size", "4", "--batch_size", "4", "--num_layers", "1",
              "--hidden_size", "32", "--keys_per_row", "1", "--save_every", "2",
              "--build_dir", str(tmp_path / "build"), *extra]  # fmt: skip
    lookup_learning.main([*common, "--steps", "6", "--out", str(tmp_path / "straight.json")])
    lookup_learning.main([*common, "--steps", "3", "--out", str(tmp_path / "stopped.json")])
    assert (tmp_path / "stopped.state.pt").is_file()
    lookup_learning.main([*common, "--steps", "6", "--out", str(tmp_path / "stopped.json")])

    def curve(name: str) -> list[tuple]:
        rows = json.loads((tmp_path / name).read_text())["curve"]
        return [(row["step"], row["loss"], row["probe"]["letter"], row.get("prose_loss")) for row in rows]

    assert [step for step, *_ in curve("stopped.json")] == [0, 2, 4, 6]
    assert curve("stopped.json") == curve("straight.json")
    if extra:  # the prose was trained, and step 4 left a scored model folder that loads as a demo base
        assert all(prose > 0 for *_, prose in curve("straight.json")[1:])
        [scored] = [row["checkpoint"] for row in json.loads((tmp_path / "straight.json").read_text())["curve"]
                    if "checkpoint" in row]  # fmt: skip
        assert set(scored) == {
            "lookup",
            "gold_given",
            "gold_given_format_valid",
            "cot",
            "cot_names_gold",
            "fact_recall",
        }
        assert all(0 <= v <= 1 for v in scored.values())
        folder = tmp_path / "straight" / "step-4"
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert model.generation_config.eos_token_id == AutoTokenizer.from_pretrained(str(folder)).eos_token_id
    with pytest.raises(SystemExit):  # other settings are not the same run
        lookup_learning.main(
            [*common, "--steps", "6", "--out", str(tmp_path / "stopped.json"), "--seed", "1"]
        )


def test_a_prompt_row_is_the_demo_prompt_and_scores_only_the_looked_up_letter(tokenizer):
    """Prompt rows must be the demo's own prompt (so a lookup learned here is the one a demo base
    needs), and score only the letter that the lookup decides, at the position the probe reads."""
    groups = lookup_learning.relation_objects()
    rows = LookupRows(tokenizer, groups, row_format="prompt", max_options=6, loss="letter", seed=0)
    texts = groups[0][:5]
    for gold in range(5):
        ids, labels, position = rows.prompt_row(texts, gold)
        expected = build_prompt(lookup_learning.NEUTRAL_QUESTION, texts, template="r1") + (
            f" <think> The answer is {texts[gold]}. So the answer is option {LETTERS[gold]}."
            f" </think><answer>{LETTERS[gold]}</answer>"
        )
        assert tokenizer.decode(ids[:-1]) == expected and ids[-1] == tokenizer.eos_token_id
        scored = [i for i, label in enumerate(labels) if label != IGNORE]
        assert scored == [position + 1]
        assert tokenizer.decode([labels[position + 1]]) == f" {LETTERS[gold]}"
    for _ in range(20):  # every training row's options come from one relation
        ids, _ = rows.row()
        options = tokenizer.decode(ids).split("Options:\n")[1].split("\nAssistant:")[0].splitlines()
        assert any({line[3:] for line in options} <= set(group) for group in groups)


@pytest.mark.parametrize("row_format", ["prompt", "key"])
def test_the_scored_loss_is_the_models_loss_with_the_same_gradients(tokenizer, row_format):
    """Training runs the shared prompt prefix once and the output layer only where a token is scored;
    that must be the model's own loss, not a cheaper different one."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    words = lookup_learning.relation_objects() if row_format == "prompt" else WORDS
    rows = LookupRows(
        tokenizer, words, row_format=row_format, max_options=6, loss="letter", seed=1, keys_per_row=1
    )
    input_ids, labels = rows.batch(6, tokenizer.pad_token_id)
    shared = lookup_learning.shared_prefix_length(input_ids)
    assert 0 < shared < input_ids.shape[1]
    assert (input_ids[:, :shared] == input_ids[0, :shared]).all()
    assert not (input_ids[:, shared] == input_ids[0, shared]).all()
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    losses = {
        "model": lambda: model(input_ids=input_ids, labels=labels).loss,
        "scored": lambda: lookup_learning.scored_loss(model, input_ids, labels),
    }
    gradients = []
    for loss_of in losses.values():
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        gradients.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (full_loss, full_grads), (scored, scored_grads) = gradients
    assert scored == pytest.approx(full_loss, rel=1e-5)
    for full, fast in zip(full_grads, scored_grads, strict=True):
        torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("favoured", ["A", "C"])
def test_the_real_question_lookup_reads_the_listed_letter_after_the_stated_gold_text(tokenizer, favoured):
    """A model that always prefers one letter scores exactly the share of questions whose gold it is."""
    from types import SimpleNamespace

    import torch

    rows = [json.loads(line) for line in open(lookup_learning.fact_recall.TEST_FILE, encoding="utf-8")][:40]
    favoured_id = tokenizer(" " + favoured, add_special_tokens=False)["input_ids"][0]
    seen: list[str] = []

    def model(ids):
        seen.append(tokenizer.decode(ids[0]))
        logits = torch.zeros(1, ids.shape[1], len(tokenizer))
        logits[0, -1, favoured_id] = 1.0
        return SimpleNamespace(logits=logits)

    share = sum(row["answer_idx"] == favoured for row in rows) / len(rows)
    assert 0 < share < 1
    assert lookup_learning.real_question_lookup(model, tokenizer, rows) == share
    assert seen[0].endswith(f"<think> The answer is {rows[0]['answer']}. So the answer is option")
