"""The verifier as a PPO reward: tokenised prompts, their gold answers, and scoring of rollouts.

PPO rollouts carry only token ids, so each prompt's gold letter and option count are looked up by
the prompt's own (un-padded) token ids, in a table built once when the dataset is tokenised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from datasets import Dataset
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from medrlvr_trl.prompts import build_prompt
from medrlvr_trl.rewards.verifier import Gold, RewardValues, Verdict, verify
from medrlvr_trl.user_errors import UserError

logger = logging.getLogger(__name__)


class GoldTable:
    """Maps un-padded prompt token ids to the prompt's gold answer."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self._by_prompt: dict[tuple[int, ...], Gold] = {}

    def __len__(self) -> int:
        return len(self._by_prompt)

    def add(self, prompt_ids: Sequence[int], gold: Gold) -> None:
        key = tuple(int(t) for t in prompt_ids)
        known = self._by_prompt.get(key)
        if known is not None and (known.answer, known.num_options) != (gold.answer, gold.num_options):
            raise ValueError(
                f"rows {known.id!r} and {gold.id!r} render to the same prompt but have different gold answers "
                f"({known.answer} vs {gold.answer}); fix or remove one of them in the dataset"
            )
        self._by_prompt.setdefault(key, gold)

    def replace_with(self, *others: GoldTable) -> None:
        """Hold the prompts of `others` instead of these (one or two epochs' option orders)."""
        merged: dict[tuple[int, ...], Gold] = {}
        for other in others:
            merged.update(other._by_prompt)
        self._by_prompt = merged

    def lookup(self, padded_prompt: torch.Tensor) -> Gold:
        """Gold for one left-padded prompt row; an unknown prompt is an error, never a silent zero."""
        ids = padded_prompt[padded_prompt != self.pad_token_id].tolist()
        try:
            return self._by_prompt[tuple(ids)]
        except KeyError:
            raise KeyError(
                f"no gold answer for a rollout prompt of {len(ids)} tokens; prompts must come from the dataset "
                "tokenised by tokenize_prompts() with the same tokenizer"
            ) from None


def tokenize_prompts(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, *, template: str, max_prompt_length: int
) -> tuple[Dataset, GoldTable]:
    """Render and tokenise every question; return the `input_ids` dataset PPO samples from and its gold table.

    A prompt longer than `max_prompt_length` is an error naming the row: silently truncating it would
    cut off the options the verifier checks against.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer needs a pad token; load it with modeling.load_tokenizer()")
    gold = GoldTable(tokenizer.pad_token_id)
    rows: list[list[int]] = []
    for row in dataset:
        ids = tokenizer(build_prompt(row["question"], row["options"], template=template))["input_ids"]
        if len(ids) > max_prompt_length:
            raise UserError(
                f"row {row['id']!r}: prompt has {len(ids)} tokens, more than max_prompt_length={max_prompt_length}; "
                "raise max_prompt_length or filter long questions out of the dataset"
            )
        if tokenizer.pad_token_id in ids:
            raise UserError(
                f"row {row['id']!r}: the prompt text contains the pad token; remove it from the row"
            )
        options = tuple(row["options"])
        gold.add(ids, Gold(answer=row["answer"], num_options=len(options), id=row["id"], options=options))
        rows.append(ids)
    logger.info(
        "tokenised %d prompts (%d distinct), longest %d tokens", len(rows), len(gold), max(map(len, rows))
    )
    return Dataset.from_dict({"input_ids": rows}), gold


class VerifierRewardModel(nn.Module):
    """The rule-based verifier dressed as the reward model TRL's PPO trainer expects.

    TRL moves the reward model to the device (or wraps it with DeepSpeed) and disables its dropout,
    so it must be an `nn.Module` with a `.config` and at least one parameter; the parameter is a
    frozen placeholder and never used.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        gold: GoldTable,
        *,
        mode: str = "paper",
        values: RewardValues | None = None,
    ) -> None:
        super().__init__()
        self.config = PretrainedConfig()
        self.placeholder = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.tokenizer = tokenizer
        self.gold = gold
        self.mode = mode
        self.values = values or RewardValues()

    def judge(self, queries: torch.Tensor, responses: torch.Tensor) -> tuple[list[str], list[Verdict]]:
        """Decode responses (already cut at the stop token) and verify each against its prompt's gold."""
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        verdicts = []
        for query, text in zip(queries, texts, strict=True):
            gold = self.gold.lookup(query)
            verdicts.append(
                verify(
                    text,
                    gold.answer,
                    gold.num_options,
                    mode=self.mode,
                    values=self.values,
                    options=gold.options,
                )
            )
        return texts, verdicts

    def scores(self, queries: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """One scalar reward per rollout, on the queries' device."""
        _, verdicts = self.judge(queries, responses)
        return torch.tensor([v.reward for v in verdicts], dtype=torch.float32, device=queries.device)
