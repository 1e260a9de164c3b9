"""The reward-term registry as TRL reward functions, for `GRPOTrainer` and `RLOOTrainer`.

TRL's critic-free trainers take `reward_funcs`: callables `fn(prompts, completions, **columns)` that
return one float per completion, where `columns` are the dataset's other columns repeated once per
completion. Each term of `rewards.terms.RewardMix` becomes one such function, named after the term
(so TRL logs `rewards/verifier/mean`, `rewards/no_leak/mean`, ...), and the mix's weights become
TRL's `reward_weights`; TRL's weighted sum is then exactly what PPO receives from `RewardMix.total`.

The gold answer travels as dataset columns (`GOLD_COLUMNS`): `answer` (the gold letter),
`num_options` and `options` (option texts, for answer leaks stated as text); `id` names the row in
errors and logs when present. Prompts and completions are plain text: Med-RLVR trains a base model
without a chat template.

TRL calls the reward functions one after another for every generation batch. The first function can
be given an `on_batch` hook that receives the whole batch scored by every term, so that logging sees
each completion exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medrlvr_trl.rewards.terms import REWARD_TERMS, RewardMix
from medrlvr_trl.rewards.verifier import Gold, RewardValues, Verdict, verify

logger = logging.getLogger(__name__)

PAPER_VALUES = RewardValues()  # the paper's -1 / 0 / 1 (frozen, so safe to share as a default)

ANSWER_COLUMN, NUM_OPTIONS_COLUMN, OPTIONS_COLUMN, ID_COLUMN = "answer", "num_options", "options", "id"
GOLD_COLUMNS: tuple[str, ...] = (ANSWER_COLUMN, NUM_OPTIONS_COLUMN, OPTIONS_COLUMN, ID_COLUMN)
"""Dataset columns the reward functions read; `answer` and `num_options` are required."""


@dataclass(frozen=True)
class ScoredCompletion:
    """One completion as every configured term sees it; `score` is the weighted sum the trainer gets."""

    completion: str
    gold: Gold
    verdict: Verdict
    terms: dict[str, float]
    score: float


BatchHook = Callable[[list[ScoredCompletion], dict[str, Any]], None]
"""Called with a scored generation batch and the keyword arguments TRL passed (`completion_ids`,
`trainer_state`, `log_metric`, the dataset columns)."""


def golds_from_columns(count: int, columns: dict[str, Any]) -> list[Gold]:
    """One `Gold` per completion from the dataset columns TRL passes to reward functions."""
    missing = [name for name in (ANSWER_COLUMN, NUM_OPTIONS_COLUMN) if name not in columns]
    if missing:
        raise ValueError(
            f"reward functions need the dataset column(s) {', '.join(missing)} (gold letter, option count); "
            f"got columns {sorted(columns)}; build the dataset with critic_free.prompt_dataset() and keep "
            "remove_unused_columns false"
        )
    answers, counts = columns[ANSWER_COLUMN], columns[NUM_OPTIONS_COLUMN]
    options = columns.get(OPTIONS_COLUMN) or [()] * count
    ids = columns.get(ID_COLUMN) or [f"completion {i}" for i in range(count)]
    for name, values in (
        (ANSWER_COLUMN, answers),
        (NUM_OPTIONS_COLUMN, counts),
        (OPTIONS_COLUMN, options),
        (ID_COLUMN, ids),
    ):
        if len(values) != count:
            raise ValueError(f"dataset column {name!r} has {len(values)} values for {count} completions")
    return [
        Gold(answer=a, num_options=n, id=str(i), options=tuple(o or ()))
        for a, n, o, i in zip(answers, counts, options, ids, strict=True)
    ]


def score_completions(
    completions: Sequence[str],
    golds: Sequence[Gold],
    mix: RewardMix,
    *,
    mode: str = "paper",
    values: RewardValues = PAPER_VALUES,
) -> list[ScoredCompletion]:
    """Verify each completion against its gold answer and evaluate every term of `mix` on it."""
    scored = []
    for completion, gold in zip(completions, golds, strict=True):
        verdict = _verify(completion, gold, mode, values)
        terms = mix.term_values(completion, gold, verdict)
        scored.append(ScoredCompletion(completion, gold, verdict, terms, mix.total(terms)))
    return scored


class TermReward:
    """One registry term as a TRL reward function: `fn(prompts, completions, **columns) -> list[float]`.

    An instance (not a closure) so that it pickles for multi-process data loading; `__name__` is the
    term name, which TRL uses in its logs.
    """

    def __init__(
        self,
        name: str,
        mix: RewardMix,
        *,
        mode: str = "paper",
        values: RewardValues = PAPER_VALUES,
        on_batch: BatchHook | None = None,
    ) -> None:
        if name not in mix.names:
            raise ValueError(f"reward term {name!r} is not in the configured rewards {list(mix.names)}")
        self.__name__ = name
        self.mix, self.mode, self.values, self.on_batch = mix, mode, values, on_batch
        self._term = REWARD_TERMS[name].fn

    def __repr__(self) -> str:
        return f"TermReward({self.__name__!r}, mode={self.mode!r})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        texts = _plain_texts(completions)
        golds = golds_from_columns(len(texts), columns)
        if self.on_batch is not None:
            scored = score_completions(texts, golds, self.mix, mode=self.mode, values=self.values)
            self.on_batch(scored, columns)
            return [item.terms[self.__name__] for item in scored]
        return [
            self._term(
                text, gold, _verify(text, gold, self.mode, self.values), thresholds=self.mix.thresholds
            )
            for text, gold in zip(texts, golds, strict=True)
        ]


def reward_functions(
    mix: RewardMix,
    *,
    mode: str = "paper",
    values: RewardValues = PAPER_VALUES,
    on_batch: BatchHook | None = None,
) -> list[TermReward]:
    """One reward function per term of `mix`, in order; pass `list(mix.weights)` as TRL's `reward_weights`.

    `on_batch`, if given, is attached to the first function only, so it runs once per generation batch.
    """
    return [
        TermReward(name, mix, mode=mode, values=values, on_batch=on_batch if index == 0 else None)
        for index, name in enumerate(mix.names)
    ]


def _verify(completion: str, gold: Gold, mode: str, values: RewardValues) -> Verdict:
    try:
        return verify(
            completion, gold.answer, gold.num_options, mode=mode, values=values, options=gold.options
        )
    except ValueError as err:  # a bad gold answer in the data, not a bad completion
        raise ValueError(f"row {gold.id!r}: {err}") from None


def _plain_texts(completions: Sequence[Any]) -> list[str]:
    if any(not isinstance(c, str) for c in completions):
        raise ValueError(
            "reward functions got chat-style completions (lists of messages); Med-RLVR prompts a base model "
            "with plain text, so the dataset's 'prompt' column must hold strings (critic_free.prompt_dataset)"
        )
    return list(completions)
