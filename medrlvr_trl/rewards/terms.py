"""Reward terms PPO can add up: the verifier, and the paper's proposed fixes for reward hacking.

Med-RLVR rewards only the verifier, and the policy learned to game it (answers stated inside
`<think>`, reasoning written before it, thinking shrunk to nothing). The paper suggests penalising
very short reasoning; the other two penalties target the hacks it describes. They are opt-in:

    rewards: [verifier, think_length, no_leak, no_prefix]
    reward_weights: [1.0, 0.3, 0.3, 0.3]

Every term is a function of (completion, gold, verdict) and returns a float; PPO receives the
weighted sum. The penalties are in [-1, 0] and are 0 for a completion whose tags do not parse (the
verifier already gives it `format_error`). Keep the sum of penalty weights below the verifier's
gap between a wrong and a malformed answer (1 with the paper's values), or a well-formed answer can
score below a malformed one; `RewardMix.worst_penalty` gives the number to compare.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from medrlvr_trl.dynamics import DEFAULT_THRESHOLDS, StageThresholds, answer_leaked, word_count
from medrlvr_trl.rewards.verifier import Gold, RewardValues, Verdict, check_format, extract_letter

logger = logging.getLogger(__name__)

TermFn = Callable[..., float]
VERIFIER = "verifier"
DEFAULT_REWARDS: tuple[str, ...] = (VERIFIER,)


def verifier_term(completion: str, gold: Gold, verdict: Verdict, *, thresholds: StageThresholds) -> float:
    """The verifier's own reward: format error, wrong or correct."""
    return verdict.reward


def think_length_term(completion: str, gold: Gold, verdict: Verdict, *, thresholds: StageThresholds) -> float:
    """-1 for an empty think, rising linearly to 0 at `short_think_words` words."""
    tagged = check_format(completion, "paper")
    if tagged is None:
        return 0.0
    return -max(0.0, 1.0 - word_count(tagged.think) / thresholds.short_think_words)


def no_leak_term(completion: str, gold: Gold, verdict: Verdict, *, thresholds: StageThresholds) -> float:
    """-1 when the think states the chosen option as the answer (see `dynamics.answer_leaked`)."""
    tagged = check_format(completion, "paper")
    if tagged is None:
        return 0.0
    return -1.0 if answer_leaked(tagged.think, extract_letter(tagged.answer), gold.options) else 0.0


def no_prefix_term(completion: str, gold: Gold, verdict: Verdict, *, thresholds: StageThresholds) -> float:
    """0 for nothing before `<think>`, falling linearly to -1 at `prefix_reasoning_words` words."""
    tagged = check_format(completion, "paper")
    if tagged is None:
        return 0.0
    return -min(1.0, word_count(tagged.prefix) / thresholds.prefix_reasoning_words)


@dataclass(frozen=True)
class RewardTerm:
    name: str
    fn: TermFn
    is_penalty: bool


REWARD_TERMS: dict[str, RewardTerm] = {
    term.name: term
    for term in (
        RewardTerm(VERIFIER, verifier_term, is_penalty=False),
        RewardTerm("think_length", think_length_term, is_penalty=True),
        RewardTerm("no_leak", no_leak_term, is_penalty=True),
        RewardTerm("no_prefix", no_prefix_term, is_penalty=True),
    )
}


class RewardMix:
    """The configured terms and their weights; bad configuration is a ValueError raised on creation."""

    def __init__(
        self,
        names: Sequence[str] = DEFAULT_REWARDS,
        weights: Sequence[float] | None = None,
        *,
        thresholds: StageThresholds = DEFAULT_THRESHOLDS,
    ) -> None:
        self.names = _check_names(names)
        self.weights = _check_weights(weights, self.names)
        self.thresholds = thresholds
        self._fns = [REWARD_TERMS[name].fn for name in self.names]
        if VERIFIER not in self.names:
            logger.warning("rewards %s has no %r term: correct answers earn nothing", list(names), VERIFIER)

    def __repr__(self) -> str:
        return f"RewardMix({dict(zip(self.names, self.weights, strict=True))})"

    def term_values(self, completion: str, gold: Gold, verdict: Verdict) -> dict[str, float]:
        """Each term's unweighted value for one completion."""
        return {
            name: fn(completion, gold, verdict, thresholds=self.thresholds)
            for name, fn in zip(self.names, self._fns, strict=True)
        }

    def total(self, values: Mapping[str, float]) -> float:
        """The weighted sum of `term_values`: what PPO receives."""
        return sum(weight * values[name] for name, weight in zip(self.names, self.weights, strict=True))

    def __call__(self, completion: str, gold: Gold, verdict: Verdict) -> float:
        return self.total(self.term_values(completion, gold, verdict))

    def worst_penalty(self) -> float:
        """The lowest the penalty terms together can add (each penalty is in [-1, 0])."""
        return sum(
            -abs(weight)
            for name, weight in zip(self.names, self.weights, strict=True)
            if REWARD_TERMS[name].is_penalty
        )


def warn_if_penalties_outweigh_format(mix: RewardMix, values: RewardValues) -> bool:
    """Warn (and return True) when penalties can push a well-formed answer below a malformed one."""
    if VERIFIER not in mix.names:
        return False
    gap = mix.weights[mix.names.index(VERIFIER)] * (values.wrong - values.format_error)
    worst = -mix.worst_penalty()
    if gap <= 0 or worst < gap:
        return False
    logger.warning(
        "reward penalties can add up to %.2f, at least the verifier's gap of %.2f between a wrong and a "
        "malformed answer, so a well-formed answer can score below a malformed one; lower their weights",
        worst,
        gap,
    )
    return True


def _check_names(names: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ValueError(f"rewards: got the string {names!r}; give a list of term names, e.g. [{names}]")
    names = tuple(names or ())
    if not names:
        raise ValueError(f"rewards is empty; name at least one term (known terms: {sorted(REWARD_TERMS)})")
    for name in names:
        if name not in REWARD_TERMS:
            raise ValueError(f"rewards: unknown reward term {name!r}; known terms: {sorted(REWARD_TERMS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"rewards: {', '.join(repeated)} listed more than once; give each term once")
    return names


def _check_weights(weights: Sequence[float] | None, names: tuple[str, ...]) -> tuple[float, ...]:
    if weights is None or len(weights) == 0:
        return (1.0,) * len(names)
    if len(weights) != len(names):
        raise ValueError(
            f"reward_weights has {len(weights)} value(s) but rewards names {len(names)} term(s) "
            f"({', '.join(names)}); give one weight per term, in the same order, or leave reward_weights out"
        )
    checked = []
    for name, weight in zip(names, weights, strict=True):
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"reward_weights: the weight of {name!r} is {weight!r}; need a finite number")
        checked.append(float(weight))
    return tuple(checked)
