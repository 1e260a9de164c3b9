"""Bootstrap error bars, the random baseline's spread and paired tests: the numbers behind the report."""

from __future__ import annotations

import numpy as np
import pytest

from medrlvr_trl.stats import (
    bootstrap_std,
    compare_paired,
    mcnemar_exact_p,
    random_guess_std,
)


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
    assert bootstrap_std([0.25] * 50) == 0.0


@pytest.mark.parametrize("values", [[], [[1.0, 0.0]]])
def test_bootstrap_rejects_empty_or_nested_input(values):
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_std(values)


# --- the random baseline's spread and paired comparisons -----------------------------------------


def test_random_guess_std_is_the_binomial_std_of_one_guesser():
    assert random_guess_std([4] * 100) == pytest.approx(np.sqrt(100 * 0.25 * 0.75) / 100)  # 0.0433
    assert random_guess_std([4] * 100) == pytest.approx(0.0433, abs=5e-5)
    mixed = random_guess_std([2, 10])
    assert mixed == pytest.approx(np.sqrt(0.5 * 0.5 + 0.1 * 0.9) / 2)


def test_random_guess_std_rejects_no_questions():
    with pytest.raises(ValueError, match="non-empty"):
        random_guess_std([])


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [
        (1, 6, 2 * (1 + 7) / 128),  # 0.125
        (6, 1, 0.125),  # two-sided: symmetric
        (0, 5, 2 / 32),
        (3, 3, 1.0),  # 2 * 42 / 64 > 1, capped
        (0, 0, 1.0),  # no discordant question: no evidence either way
    ],
)
def test_exact_mcnemar_matches_hand_computed_binomial_tails(a_only, b_only, p):
    assert mcnemar_exact_p(a_only, b_only) == pytest.approx(p, rel=1e-12)


def test_exact_mcnemar_stays_finite_for_thousands_of_discordant_questions():
    p = mcnemar_exact_p(900, 1100)
    assert 0.0 < p < 1e-4


def test_paired_comparison_reports_the_difference_its_interval_and_discordant_counts():
    rng = np.random.default_rng(11)
    a = rng.random(300) < 0.6
    b = np.where(rng.random(300) < 0.8, a, ~a)  # agrees with a on about 80% of the questions
    result = compare_paired(a, b, n_resamples=1000, seed=4)
    assert result.diff == pytest.approx(a.mean() - b.mean())
    assert result.ci95[0] < result.diff < result.ci95[1]
    assert (result.a_only, result.b_only, result.n) == (int(np.sum(a & ~b)), int(np.sum(~a & b)), 300)
    assert result.mcnemar_p == mcnemar_exact_p(result.a_only, result.b_only)


def test_paired_interval_resamples_questions_with_one_seeded_draw():
    rng = np.random.default_rng(2)
    a, b = rng.random(57) < 0.7, rng.random(57) < 0.5
    indices = np.random.default_rng(9).integers(0, a.size, size=(1000, a.size))
    resampled = a[indices].mean(axis=1) - b[indices].mean(axis=1)
    expected = np.percentile(resampled, [2.5, 97.5])
    assert compare_paired(a, b, seed=9).ci95 == pytest.approx(tuple(expected), rel=1e-12)
    assert compare_paired(a, b, seed=9) == compare_paired(a, b, seed=9)
    assert compare_paired(a, b, seed=9).ci95 != compare_paired(a, b, seed=10).ci95


def test_paired_comparison_needs_the_same_questions():
    with pytest.raises(ValueError, match="same questions"):
        compare_paired([True, False], [True])


@pytest.mark.parametrize(("successes", "n"), [(0, 40), (40, 40), (3, 20), (1, 1), (17, 1273)])
def test_wilson_interval_matches_scipy_and_keeps_a_width_at_zero_and_one(successes, n):
    from scipy.stats import binomtest

    from medrlvr_trl.stats import wilson_interval

    expected = binomtest(successes, n).proportion_ci(method="wilson")
    low, high = wilson_interval(successes, n)
    assert (low, high) == (pytest.approx(expected.low, abs=1e-12), pytest.approx(expected.high, abs=1e-12))
    assert high - low > 0
    assert (successes > 0 or low == 0.0) and (successes < n or high == 1.0)  # exact at the ends
