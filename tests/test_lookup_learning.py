"""The lookup benchmark's rows: what is asked, and which single token is scored."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from demo.experiments.lookup_learning import IGNORE, LookupRows
from medrlvr_trl.prompts import LETTERS

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
