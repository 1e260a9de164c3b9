"""The offline tiny model: tokenizer behaviour, loading through from_pretrained, and the build cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from medrlvr_trl import tiny
from medrlvr_trl.tiny import FINGERPRINT_FILE, TAG_TOKENS, TinySpec, build_tiny

PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves it.\n"
    "User: A 45-year-old man has crushing chest pain and a troponin of 2.3 µg/L. What is the diagnosis?\n"
    "Answer with just one of the letters from the options below.\n"
    "Options:\nA. Myocardial infarction\nB. Pericarditis\nC. Pulmonary embolism\nJ. Costochondritis\n"
    "Assistant:"
)
FAST_SPEC = TinySpec(vocab_size=320, hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=32)


def test_tags_are_single_tokens_that_survive_skip_special_decoding(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for tag in TAG_TOKENS:
        assert len(tokenizer(tag)["input_ids"]) == 1, tag
    completion = "<think> chest pain and troponin </think><answer> A </answer>"
    ids = tokenizer(completion + tokenizer.eos_token)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == completion


def test_prompt_round_trips_without_added_bos(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(PROMPT)["input_ids"]
    assert tokenizer.decode(ids) == PROMPT
    assert not set(ids) & set(tokenizer.all_special_ids)


def test_default_build_has_pad_distinct_from_eos(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_qwen_like_build_has_pad_equal_to_eos(qwen_like_tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen_like_tiny_dir)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|endoftext|>"


def test_policy_generates_from_a_prompt(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = tokenizer(PROMPT, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, prompt["input_ids"].shape[1] + 4)
    assert torch.equal(out[0, : prompt["input_ids"].shape[1]], prompt["input_ids"][0])


def test_value_model_scores_every_position(tiny_model_dir: Path, tiny_value_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    value = AutoModelForSequenceClassification.from_pretrained(tiny_value_dir)
    batch = tokenizer(["User: short", "User: a somewhat longer question"], return_tensors="pt", padding=True)
    hidden = value.model(**batch).last_hidden_state
    assert value.score(hidden).shape == (2, batch["input_ids"].shape[1], 1)
    assert value(**batch).logits.shape == (2, 1)


def test_value_model_starts_from_the_policy_backbone(tiny_model_dir: Path, tiny_value_dir: Path) -> None:
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    value = AutoModelForSequenceClassification.from_pretrained(tiny_value_dir)
    assert torch.equal(policy.model.embed_tokens.weight, value.model.embed_tokens.weight)
    assert torch.equal(policy.model.layers[-1].mlp.up_proj.weight, value.model.layers[-1].mlp.up_proj.weight)


def test_unchanged_spec_reuses_the_build(tmp_path: Path) -> None:
    first = build_tiny(tmp_path / "m", FAST_SPEC)
    stamp = (first.root / FINGERPRINT_FILE).stat().st_mtime_ns
    second = build_tiny(tmp_path / "m", FAST_SPEC)
    assert (first.rebuilt, second.rebuilt) == (True, False)
    assert (second.root / FINGERPRINT_FILE).stat().st_mtime_ns == stamp


def test_changed_spec_rebuilds(tmp_path: Path) -> None:
    build_tiny(tmp_path / "m", FAST_SPEC)
    before = AutoModelForCausalLM.from_pretrained(tmp_path / "m" / "policy").lm_head.weight
    again = build_tiny(tmp_path / "m", dataclasses.replace(FAST_SPEC, seed=1))
    after = AutoModelForCausalLM.from_pretrained(again.policy).lm_head.weight
    assert again.rebuilt
    assert not torch.equal(before, after)
    assert json.loads((again.root / FINGERPRINT_FILE).read_text())["spec"]["seed"] == 1


def test_extra_corpus_vocabulary_is_learned_and_its_edits_rebuild(tmp_path: Path) -> None:
    extra = tmp_path / "facts.txt"
    extra.write_text("The quokkanitis sign is rare. " * 200)
    spec = dataclasses.replace(FAST_SPEC, extra_corpora=(str(extra),))
    paths = build_tiny(tmp_path / "m", spec)
    assert len(AutoTokenizer.from_pretrained(paths.policy)(" quokkanitis")["input_ids"]) == 1
    extra.write_text("Something else entirely. " * 200)
    assert build_tiny(tmp_path / "m", spec).rebuilt


def test_failed_build_leaves_no_folder_that_looks_valid(tmp_path: Path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while creating the models")

    monkeypatch.setattr(tiny, "_init_models", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_tiny(tmp_path / "m", FAST_SPEC)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_refuses_to_replace_a_folder_it_did_not_build(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a tiny-model build folder"):
        build_tiny(tmp_path / "m", FAST_SPEC)
    assert (tmp_path / "m" / "notes.txt").read_text() == "keep me"


def test_missing_extra_corpus_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus.txt"
    with pytest.raises(ValueError, match="no-such-corpus.txt"):
        build_tiny(tmp_path / "m", TinySpec(extra_corpora=(str(missing),)))


def test_cli_builds_a_pad_equals_eos_model(tmp_path: Path) -> None:
    paths = tiny.main(["--out", str(tmp_path / "cli"), "--pad-equals-eos"])
    tokenizer = AutoTokenizer.from_pretrained(paths.policy)
    assert paths.policy == (tmp_path / "cli" / "policy").resolve()
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
