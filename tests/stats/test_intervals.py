"""minilib.stats against known values (textbook formulas, exact binomial sums)."""

import math

import numpy as np
import pytest

from minilib.stats import Interval, bootstrap_ci, format_ci, mcnemar, t_interval, wilson_interval


def wilson_formula(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(50, 100), (0, 10), (10, 10), (146, 200), (1, 3)])
def test_wilson_matches_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_formula(k, n), abs=1e-9)


def test_wilson_known_value_and_edges():
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    assert wilson_interval(5, 10, confidence=0.99)[0] < wilson_interval(5, 10)[0]
    with pytest.raises(ValueError, match="k must be in"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=95)


def test_mcnemar_exact_known_values():
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 8, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 8, bool)
    r = mcnemar(a, b)
    assert (r.b, r.c) == (10, 2)
    assert r.p_value == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert mcnemar(b, a).p_value == pytest.approx(r.p_value)           # symmetric
    assert mcnemar(a, a) == (0, 0, 1.0)                                # no discordant items
    assert mcnemar([1, 0, 1], [0, 1, 1]).p_value == 1.0                # b = c
    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="booleans"):
        mcnemar([0.5, 1], [1, 1])


def test_t_interval_known_value():
    r = t_interval([1, 2, 3, 4, 5])
    assert r.estimate == 3
    half = 2.7764451051977987 * math.sqrt(2.5 / 5)  # t_{0.975, 4}
    assert (r.low, r.high) == pytest.approx((3 - half, 3 + half))
    one = t_interval([0.7])
    assert one.estimate == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])


def test_bootstrap_mean_close_to_normal_theory_and_seeded():
    x = np.random.default_rng(0).normal(10.0, 2.0, 1500)
    r = bootstrap_ci(x, n_resamples=4000)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert r.estimate == pytest.approx(x.mean())
    assert r.low == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert r.high == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert bootstrap_ci(x, n_resamples=4000) == r                        # same seed, same interval
    assert bootstrap_ci(x, n_resamples=4000, seed=1) != r


def test_bootstrap_proportion_agrees_with_wilson():
    x = np.zeros(400)
    x[:292] = 1
    r = bootstrap_ci(x, n_resamples=4000)
    lo, hi = wilson_interval(292, 400)
    assert r.low == pytest.approx(lo, abs=0.01) and r.high == pytest.approx(hi, abs=0.01)


def test_bootstrap_rows_resampled_together_ratio_statistic():
    # perplexity-like: exp(sum nll / sum tokens) over windows, rows kept together
    rng = np.random.default_rng(1)
    tokens = rng.integers(100, 500, 60).astype(float)
    nll = tokens * rng.normal(2.5, 0.2, 60)
    data = np.stack([nll, tokens], 1)
    r = bootstrap_ci(data, lambda a: math.exp(a[:, 0].sum() / a[:, 1].sum()), n_resamples=2000)
    assert r.estimate == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    assert r.low < r.estimate < r.high
    assert r.high / r.low < 1.3


def test_paired_bootstrap_cancels_item_variation():
    rng = np.random.default_rng(2)
    item = rng.normal(0, 5, 300)                 # large item-to-item variation shared by both systems
    a, b = item + 1.0 + rng.normal(0, 0.3, 300), item + rng.normal(0, 0.3, 300)
    paired = bootstrap_ci(a, paired=b, n_resamples=2000)
    assert paired.estimate == pytest.approx(a.mean() - b.mean())
    assert paired.low > 0.8 and paired.high < 1.2           # narrow: the shared part cancels
    unpaired_half = 1.96 * math.sqrt(a.var(ddof=1) / 300 + b.var(ddof=1) / 300)
    assert paired.high - paired.low < 0.2 * 2 * unpaired_half
    with pytest.raises(ValueError, match="one row per unit"):
        bootstrap_ci(a, paired=b[:10])


def test_bootstrap_degenerate_and_invalid():
    assert bootstrap_ci(np.ones(20), n_resamples=200) == Interval(1.0, 1.0, 1.0)
    assert bootstrap_ci([4.0]) == Interval(4.0, 4.0, 4.0)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=10)


def test_format_ci():
    assert format_ci(0.7301, 0.6642, 0.7881) == "0.730 [0.664, 0.788]"
    assert format_ci(13.971, 13.5, 14.4, digits=2) == "13.97 [13.50, 14.40]"
    assert format_ci(1.0, float("nan"), float("nan")) == "1.000 [n/a, n/a]"
