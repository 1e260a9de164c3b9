"""Bootstrap error bars for accuracies.

Med-RLVR's Figure 3 reports accuracy +- the standard deviation of the mean over 1,000 bootstrap
resamples of the test questions; this module computes exactly that, with a fixed seed so two runs on
the same predictions report the same error bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
# Resample in chunks so memory stays at chunk x n values even for large test sets.
_CHUNK = 250


@dataclass(frozen=True)
class MeanWithError:
    """A sample mean, its bootstrap standard deviation and the number of values behind it."""

    mean: float
    std: float
    n: int


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


def mean_with_bootstrap_std(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> MeanWithError:
    """The plain mean of `values` with its bootstrap standard deviation."""
    array = np.asarray(values, dtype=np.float64)
    std = bootstrap_std(array, n_resamples=n_resamples, seed=seed)
    return MeanWithError(mean=float(array.mean()), std=std, n=int(array.size))
