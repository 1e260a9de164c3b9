"""Bootstrap error bars: the numbers behind the figure's error bars."""

from __future__ import annotations

import numpy as np
import pytest

from medrlvr_trl.stats import bootstrap_std, mean_with_bootstrap_std


def test_bootstrap_std_matches_a_direct_numpy_computation():
    values = np.random.default_rng(7).integers(0, 2, size=137).astype(float)
    rng = np.random.default_rng(3)
    indices = rng.integers(0, values.size, size=(1000, values.size))
    expected = np.std(values[indices].mean(axis=1), ddof=1)
    assert bootstrap_std(values, n_resamples=1000, seed=3) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_std_is_reproducible_with_a_fixed_seed_and_changes_with_the_seed():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert bootstrap_std(values, seed=0) == bootstrap_std(values, seed=0)
    assert bootstrap_std(values, seed=0) != bootstrap_std(values, seed=1)


def test_bootstrap_std_of_an_accuracy_is_close_to_the_binomial_standard_error():
    hits = np.array([1.0] * 200 + [0.0] * 200)  # accuracy 0.5 on 400 questions
    assert bootstrap_std(hits) == pytest.approx(np.sqrt(0.5 * 0.5 / 400), rel=0.1)


def test_constant_values_have_zero_spread():
    summary = mean_with_bootstrap_std([0.25] * 50)
    assert (summary.mean, summary.std, summary.n) == (0.25, 0.0, 50)


@pytest.mark.parametrize("values", [[], [[1.0, 0.0]]])
def test_bootstrap_rejects_empty_or_nested_input(values):
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_std(values)
