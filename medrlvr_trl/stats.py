"""Error bars and paired tests for accuracies.

Med-RLVR's Figure 3 reports accuracy +- the standard deviation of the mean over 1,000 bootstrap
resamples of the test questions; this module computes exactly that, with a fixed seed so two runs on
the same predictions report the same error bar. It also gives the random-guess baseline its own
(analytic) spread, and compares two models on the same questions (paired bootstrap interval of the
difference, exact McNemar test), since two bars' error bars overlapping says little about the pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# Resample in chunks so memory stays at chunk x n values even for large test sets.
_CHUNK = 250


def bootstrap_means(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement, same size as `values`).

    Draws index rows from `numpy.random.default_rng(seed).integers(0, n, size=(rows, n))`, chunk by
    chunk, so the result equals one big draw of shape (n_resamples, n) with the same seed.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D list of values; got shape {array.shape}")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be at least 2 to give a standard deviation; got {n_resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        indices = rng.integers(0, array.size, size=(stop - start, array.size))
        means[start:stop] = array[indices].mean(axis=1)
    return means


def bootstrap_std(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> float:
    """Standard deviation (ddof=1) of the bootstrap means: the error bar of the paper's Figure 3."""
    return float(np.std(bootstrap_means(values, n_resamples=n_resamples, seed=seed), ddof=1))


def random_guess_std(option_counts: Sequence[int]) -> float:
    """Standard deviation of a uniform guesser's accuracy over these questions.

    Question i is guessed right with probability p_i = 1/k_i, independently, so the accuracy (their
    mean) has std sqrt(sum p_i (1 - p_i)) / n. This is the spread of the guesser itself; bootstrapping
    its expected score (a constant per question when all k_i agree) would report 0.
    """
    counts = np.asarray(option_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 1):
        raise ValueError("random_guess_std needs a non-empty list of option counts, each at least 1")
    chance = 1.0 / counts
    return float(np.sqrt(np.sum(chance * (1.0 - chance))) / counts.size)


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (Wilson 1927).

    At 0 or n successes every bootstrap resample gives the same accuracy, so the bootstrap std is 0 and
    reads as certainty; Wilson's interval still has width: 0 of 40 right gives [0, 8.8%].
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1; got {successes} of {n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    `a_only`: questions only model A got right; `b_only`: only B. Under "no difference" each
    discordant question is a fair coin, so p = min(1, 2 P(X <= min(a_only, b_only))) with
    X ~ Binomial(a_only + b_only, 1/2); p = 1 when there is no discordant question.
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be non-negative; got {a_only} and {b_only}")
    total = a_only + b_only
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**total)  # exact integers, one rounding at the end


@dataclass(frozen=True)
class PairedComparison:
    """Accuracy of A minus accuracy of B on the same questions, with its 95% interval and p-value."""

    diff: float
    ci95: tuple[float, float]
    mcnemar_p: float
    a_only: int
    b_only: int
    n: int


def compare_paired(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedComparison:
    """Compare two models' per-question correctness on the same questions, in the same order.

    The interval is the 2.5 and 97.5 percentiles of the difference over bootstrap resamples of the
    questions (one draw of indices shared by both models, so the pairing is kept): the same draw
    as `bootstrap_means` of the per-question differences.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same questions; got {a.size} and {b.size} answers")
    differences = a.astype(np.float64) - b.astype(np.float64)
    low, high = np.percentile(bootstrap_means(differences, n_resamples=n_resamples, seed=seed), [2.5, 97.5])
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return PairedComparison(
        diff=float(differences.mean()),
        ci95=(float(low), float(high)),
        mcnemar_p=mcnemar_exact_p(a_only, b_only),
        a_only=a_only,
        b_only=b_only,
        n=int(a.size),
    )
