"""minilib.stats.verdicts: the one way to a verdict (unit of replication, t at that n, floor, Holm
over the block, resolvable effect) against hand computations."""

import math

import numpy as np
import pytest
from scipy import stats as st

from minilib.stats import (MIN_UNITS, above_chance, decide, describe, holm, nll_ratio, paired_binary,
                           paired_difference)


def test_paired_difference_is_the_t_interval_of_the_differences():
    a, b = np.array([3.0, 4.5, 5.0, 6.5, 2.0]), np.array([2.0, 4.0, 3.5, 5.0, 2.5])
    t = paired_difference(a, b, unit="seeds")
    d = a - b
    half = st.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert t.estimate == pytest.approx(d.mean())
    assert (t.low, t.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert t.p == pytest.approx(st.ttest_1samp(d, 0).pvalue)
    assert t.n == 5 and t.scale == "difference" and t.null == 0


def test_log_ratio_over_seeds_and_nll_ratio_over_windows():
    a, b = np.array([30.0, 33.0, 31.0]), np.array([27.0, 27.5, 28.0])
    t = paired_difference(a, b, unit="calibration seeds", log=True)
    d = np.log(a / b)
    assert t.estimate == pytest.approx(math.exp(d.mean()))
    assert t.low < t.estimate < t.high and t.scale == "ratio" and t.null == 1
    w = nll_ratio([2.0, 2.2, 2.1], [1.9, 2.0, 2.0], unit="windows")
    assert w.estimate == pytest.approx(math.exp(np.mean([0.1, 0.2, 0.1])))


def test_floor_gives_too_few_to_test_and_leaves_the_family():
    # four windows all of one sign: the case the percentile bootstrap over-claimed
    few = nll_ratio([2.3, 2.4, 2.35, 2.5], [2.2, 2.2, 2.2, 2.3], unit="windows", label="few")
    assert few.n == 4 < MIN_UNITS["default"]
    many = nll_ratio(np.linspace(2, 3, 40) + 0.2, np.linspace(2, 3, 40) + np.tile([0.0, 0.1], 20), unit="windows")
    two_seeds = paired_difference([1.0, 2.0], [0.0, 0.5], unit="seeds")
    out = decide([few, many, two_seeds])
    assert out[0].outcome == "too few to test" and out[2].outcome == "too few to test"
    assert out[1].family == 1 and out[1].p_adj == pytest.approx(out[1].p)   # family of one testable test
    assert "too few to test" in describe(out[0]) and "at least 10" in describe(out[0])


def test_holm_over_the_whole_block():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    rng = np.random.default_rng(0)
    tests = [paired_difference(rng.normal(0.3, 1, 40), np.zeros(40), unit="items", label=str(i)) for i in range(6)]
    out = decide(tests)
    raw = [t.p for t in tests]
    assert [t.p_adj for t in out] == pytest.approx(list(holm(raw)))
    assert all(t.family == 6 for t in out)
    # a test resolved alone can drop out in the family
    alone = decide([tests[int(np.argmax(raw))]])[0]
    assert alone.p_adj <= out[int(np.argmax(raw))].p_adj


def test_outcomes_signs_and_resolvable_effect():
    rng = np.random.default_rng(1)
    base = rng.normal(2.5, 0.3, 32)
    lower = decide([nll_ratio(base - 0.2 + rng.normal(0, 0.05, 32), base, unit="windows")])[0]
    assert lower.outcome == "a lower" and lower.high < 1
    higher = decide([nll_ratio(base + 0.2 + rng.normal(0, 0.05, 32), base, unit="windows")])[0]
    assert higher.outcome == "a higher" and higher.low > 1
    none = decide([nll_ratio(base + rng.normal(0, 0.05, 32), base, unit="windows")])[0]
    assert none.outcome == "not resolved"
    # the resolvable ratio: (t_{1-a/2} + t_{0.8}) sd / sqrt(n), exponentiated; grows with the family
    one = decide([none])[0].mde
    k = (st.t.ppf(0.975, 31) + st.t.ppf(0.8, 31)) * none.sd / math.sqrt(32)
    assert one == pytest.approx(math.exp(k))
    assert decide([none] * 5)[0].mde > one


def test_paired_binary_uses_exact_mcnemar():
    a = np.array([1] * 10 + [0] * 2 + [1] * 30 + [0] * 8)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30 + [0] * 8)
    t = paired_binary(a, b)
    assert t.p == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)
    assert t.estimate == pytest.approx(8 / 50) and "McNemar" in t.test


def test_above_chance_one_sided_binomial():
    t = above_chance(36, 60, 0.25)
    assert t.p == pytest.approx(st.binomtest(36, 60, 0.25, alternative="greater").pvalue)
    assert decide([t])[0].outcome == "a higher"
    assert decide([above_chance(16, 60, 0.25)])[0].outcome == "not resolved"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one value per unit"):
        paired_difference([1, 2, 3], [1, 2], unit="seeds")
    with pytest.raises(ValueError, match="NaN"):
        nll_ratio([1, float("nan")], [1, 2], unit="windows")
    with pytest.raises(ValueError, match="positive"):
        paired_difference([1, -2, 3], [1, 2, 3], unit="seeds", log=True)
    with pytest.raises(ValueError, match="alpha"):
        decide([], alpha=5)
    with pytest.raises(ValueError, match="chance"):
        above_chance(1, 10, 1.5)
