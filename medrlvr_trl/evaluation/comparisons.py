"""Paired comparisons: every two models on the same questions (strict rule), with a paired-bootstrap
interval and an exact McNemar p-value (`medrlvr_trl.stats`), and the headline pair (RLVR minus SFT).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from medrlvr_trl.evaluation.answers import ACCURACY_RULE
from medrlvr_trl.evaluation.specs import ModelSpec

ROLE_RANK = {"base": 0, "sft": 1, "rl": 2}
"""A paired comparison reads "A minus B" with A the later training stage: RL - SFT, SFT - base."""


def paired_comparisons(
    models: Sequence[ModelSpec],
    outcomes: Mapping[str, Mapping[str, Sequence[bool]]],
    datasets: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    shift_outcomes: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> list[dict[str, Any]]:
    """Every pair of models on every dataset both were scored on, from strict per-question outcomes.

    `shift_outcomes[model][dataset]` (`shift_mean_outcomes`, with `option_permutations` > 1) adds the
    difference in mean-over-shifts accuracy and its interval (`diff_mean_over_shifts`,
    `ci95_mean_over_shifts`).

    `outcomes[model][dataset]` lists strict correctness per question in dataset order. A pair reads
    "A minus B" with A the later stage (`ROLE_RANK`: RL, then SFT, then base), else the earlier of
    the two in `models`; see `stats.compare_paired` for the interval and the p-value.
    """
    from medrlvr_trl.stats import compare_paired

    entries = []
    for dataset in datasets:
        scored = [m for m in models if dataset in outcomes.get(m.label, {})]
        for first, second in itertools.combinations(scored, 2):
            a, b = (second, first) if ROLE_RANK[second.role] > ROLE_RANK[first.role] else (first, second)
            result = compare_paired(
                outcomes[a.label][dataset], outcomes[b.label][dataset], n_resamples=n_resamples, seed=seed
            )
            entries.append(
                {
                    "model_a": a.label,
                    "model_b": b.label,
                    "dataset": dataset,
                    "rule": ACCURACY_RULE,
                    "accuracy_a": float(sum(outcomes[a.label][dataset]) / result.n),
                    "accuracy_b": float(sum(outcomes[b.label][dataset]) / result.n),
                    "diff": result.diff,
                    "ci95": list(result.ci95),
                    "mcnemar_p": result.mcnemar_p,
                    "n": result.n,
                    "only_a_correct": result.a_only,
                    "only_b_correct": result.b_only,
                }
            )
            shifted = shift_outcomes or {}
            if dataset in shifted.get(a.label, {}) and dataset in shifted.get(b.label, {}):
                entries[-1].update(
                    _mean_over_shifts_difference(
                        shifted[a.label][dataset],
                        shifted[b.label][dataset],
                        n_resamples=n_resamples,
                        seed=seed,
                    )
                )
    return entries


def _mean_over_shifts_difference(
    a: Sequence[float], b: Sequence[float], *, n_resamples: int, seed: int
) -> dict[str, Any]:
    """A minus B in mean-over-shifts accuracy with its 95% paired-bootstrap percentile interval (the
    same question draw as the strict comparison; McNemar needs 0/1 outcomes, so there is no p-value)."""
    import numpy as np

    from medrlvr_trl.stats import bootstrap_means

    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = np.percentile(bootstrap_means(differences, n_resamples=n_resamples, seed=seed), [2.5, 97.5])
    return {
        "diff_mean_over_shifts": float(differences.mean()),
        "ci95_mean_over_shifts": [float(low), float(high)],
    }


def headline_pair(models: Sequence[ModelSpec]) -> tuple[str, str] | None:
    """(first RL model, first SFT model): the paper's claim is RLVR matching or beating SFT."""
    rl = next((m.label for m in models if m.role == "rl"), None)
    sft = next((m.label for m in models if m.role == "sft"), None)
    return (rl, sft) if rl and sft else None


def headline_entries(
    paired: Sequence[Mapping[str, Any]], pair: tuple[str, str] | None
) -> list[dict[str, Any]]:
    """The paired entries of the headline pair, one per dataset (none without a pair)."""
    return [dict(e) for e in paired if pair is not None and (e["model_a"], e["model_b"]) == pair]


def interval_and_p_disagree(entry: Mapping[str, Any], alpha: float = 0.05) -> bool:
    """Whether the bootstrap interval and McNemar's p-value point different ways: the interval leaves 0
    out while p >= alpha, or holds 0 while p < alpha (small n, few discordant questions)."""
    low, high = entry["ci95"]
    excludes_zero = low > 0 or high < 0
    return excludes_zero != (entry["mcnemar_p"] < alpha)
