"""Loaders shared by the recipes: pad handling, embedding resizing, dtype, and clear loading errors."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerFast
from trl import ModelConfig

from medrlvr_trl.modeling import (
    ModelSourceError,
    ensure_distinct_pad,
    load_policy,
    load_tokenizer,
    load_value_model,
)


def test_load_tokenizer_replaces_pad_equal_to_eos_without_touching_eos(qwen_like_tiny_dir: Path) -> None:
    raw = AutoTokenizer.from_pretrained(qwen_like_tiny_dir)
    tokenizer = load_tokenizer(str(qwen_like_tiny_dir))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == (raw.eos_token, raw.eos_token_id)
    assert tokenizer.pad_token == "<|fim_pad|>"  # an existing spare token, as with Qwen2.5
    assert len(tokenizer) == len(raw)


def test_load_tokenizer_left_pads_batches_with_the_new_pad(qwen_like_tiny_dir: Path) -> None:
    tokenizer = load_tokenizer(str(qwen_like_tiny_dir))
    short, long = "User: fever?\nAssistant:", "User: fever, cough and night sweats for a month?\nAssistant:"
    batch = tokenizer([short, long], padding=True)
    short_ids = tokenizer(short)["input_ids"]
    n_pad = len(batch["input_ids"][0]) - len(short_ids)
    assert tokenizer.padding_side == "left"
    assert n_pad > 0
    assert batch["input_ids"][0] == [tokenizer.pad_token_id] * n_pad + short_ids
    assert batch["attention_mask"][0] == [0] * n_pad + [1] * len(short_ids)


def test_load_tokenizer_keeps_a_pad_that_already_differs_from_eos(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.padding_side == "left"


def test_ensure_distinct_pad_adds_a_token_when_no_spare_one_exists() -> None:
    backend = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "fever": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="[UNK]"
    )
    assert ensure_distinct_pad(tokenizer) == "<|pad|>"
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, len(tokenizer)) == (3, 0, 4)


def test_load_policy_keeps_embeddings_when_the_tokenizer_fits(qwen_like_tiny_dir: Path) -> None:
    tokenizer = load_tokenizer(str(qwen_like_tiny_dir))
    model = load_policy(str(qwen_like_tiny_dir), None, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_load_policy_grows_embeddings_for_tokens_beyond_the_vocabulary(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = len(tokenizer)
    tokenizer.add_tokens(["<extra_a>", "<extra_b>"])
    model = load_policy(str(tiny_model_dir), None, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == rows + 2
    assert model.get_output_embeddings().weight.shape[0] == rows + 2


def test_load_policy_uses_model_config_dtype_unless_overridden(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    config = ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="bfloat16")
    assert load_policy(str(tiny_model_dir), config, tokenizer).dtype == torch.bfloat16
    assert load_policy(str(tiny_model_dir), config, tokenizer, dtype="float32").dtype == torch.float32


def test_load_value_model_from_a_causal_lm_checkpoint(qwen_like_tiny_dir: Path) -> None:
    tokenizer = load_tokenizer(str(qwen_like_tiny_dir))
    value = load_value_model(str(qwen_like_tiny_dir), None, tokenizer)
    batch = tokenizer(["User: a", "User: a longer question here"], return_tensors="pt", padding=True)
    assert value.config.num_labels == 1
    assert value.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert value(**batch).logits.shape == (2, 1)


def test_unknown_dtype_is_a_clear_error(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match="'float33' is not a torch dtype"):
        load_policy(str(tiny_model_dir), None, tokenizer, dtype="float33")


@pytest.mark.parametrize("loader", ["tokenizer", "policy", "value"])
def test_uncached_hub_id_offline_is_one_clear_error(loader: str, tiny_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_id = "medrlvr-tests/model-that-is-not-cached"
    load = {
        "tokenizer": lambda: load_tokenizer(hub_id),
        "policy": lambda: load_policy(hub_id, None, load_tokenizer(str(tiny_model_dir))),
        "value": lambda: load_value_model(hub_id, None, load_tokenizer(str(tiny_model_dir))),
    }[loader]
    with pytest.raises(ModelSourceError) as excinfo:
        load()
    message = str(excinfo.value)
    assert hub_id in message
    assert "local path" in message and "python -m medrlvr_trl.tiny" in message
    assert excinfo.value.__suppress_context__  # no chained Hub-client traceback


def test_missing_local_path_error_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "not-built-yet" / "policy"
    with pytest.raises(ModelSourceError, match=f"{missing}.*does not exist"):
        load_tokenizer(str(missing))


def test_added_pad_token_grows_every_model_and_starts_at_the_mean_row(no_spare_pad_dir: Path) -> None:
    tokenizer = load_tokenizer(str(no_spare_pad_dir))
    rows = AutoConfig.from_pretrained(no_spare_pad_dir).vocab_size
    assert (tokenizer.pad_token, tokenizer.pad_token_id, len(tokenizer)) == ("<|pad|>", rows, rows + 1)

    policy = load_policy(str(no_spare_pad_dir), None, tokenizer)
    value = load_value_model(str(no_spare_pad_dir), None, tokenizer)  # padding_idx beyond the table failed
    for model in (policy, value):
        table = model.get_input_embeddings().weight
        assert table.shape[0] == rows + 1 and model.config.pad_token_id == rows
        torch.testing.assert_close(table[rows], table[:rows].mean(dim=0))
    head = policy.get_output_embeddings().weight
    torch.testing.assert_close(head[rows], head[:rows].mean(dim=0))
    batch = tokenizer(["User: a", "User: a longer question here"], return_tensors="pt", padding=True)
    assert (batch["input_ids"] == rows).any()  # the new pad id really is used
    assert value(**batch).logits.shape == (2, 1) and policy(**batch).logits.shape[-1] == rows + 1


def test_without_may_add_pad_the_vocabulary_is_never_grown(
    no_spare_pad_dir: Path, qwen_like_tiny_dir: Path
) -> None:
    """GRPO and RLOO: TRL loads the model by name, so the tokenizer must fit its embeddings as shipped."""
    tokenizer = load_tokenizer(str(no_spare_pad_dir), may_add_pad=False)
    rows = AutoConfig.from_pretrained(no_spare_pad_dir).vocab_size
    assert (tokenizer.pad_token_id, len(tokenizer)) == (tokenizer.eos_token_id, rows)
    spare = load_tokenizer(str(qwen_like_tiny_dir), may_add_pad=False)  # a spare pad is still preferred
    assert spare.pad_token == "<|fim_pad|>" and len(spare) == rows
