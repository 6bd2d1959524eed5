"""Uncertainty for every number we claim: one 95% convention everywhere.

* ``wilson_interval(k, n)``: a proportion (accuracy of ``n`` independent items) -> ``(low, high)``.
* ``bootstrap_ci(x, statistic)``: any statistic of ``n`` exchangeable units (MCQ items, perplexity
  windows), percentile bootstrap over the units, seeded -> ``Interval(estimate, low, high)``.
  ``bootstrap_ci(x, statistic, paired=y)``: the interval of ``statistic(x) - statistic(y)`` where
  ``x[i]`` and ``y[i]`` belong to the same unit (two models on the same items/windows): both are
  resampled with the same indices, so the item-to-item variation cancels.
* ``mcnemar(correct_a, correct_b)``: exact (binomial) McNemar test of two classifiers on the same
  items -> ``McNemar(b, c, p_value)``.
* ``t_interval(values)``: the mean over seeds with its Student-t interval -> ``Interval``.

Every function takes ``confidence=0.95``; the bootstrap takes ``seed=0`` and gives the same
interval for the same inputs.  scipy does the arithmetic (``scipy.stats.bootstrap``,
``binomtest``, ``t``); this module fixes one convention and validates inputs.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = ["Interval", "McNemar", "wilson_interval", "bootstrap_ci", "mcnemar", "t_interval", "format_ci"]


class Interval(NamedTuple):
    """A point estimate with its confidence interval (``low <= estimate <= high`` for percentile
    intervals of well-behaved statistics; NaN bounds where no interval exists, e.g. one seed)."""

    estimate: float
    low: float
    high: float


class McNemar(NamedTuple):
    """``b``: items only A gets right; ``c``: items only B gets right; ``p_value``: two-sided exact."""

    b: int
    c: int
    p_value: float


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials: ``(low, high)``.

    ``n == 0`` gives ``(nan, nan)`` (no data, no interval).  Known value: ``k=50, n=100`` ->
    ``(0.4038, 0.5962)``."""
    _check_confidence(confidence)
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n] and n >= 0, got k={k}, n={n}")
    if n == 0:
        return (float("nan"), float("nan"))
    ci = _st.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def _as_units(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one unit (rows), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def bootstrap_ci(x, statistic: Callable[[np.ndarray], float] = np.mean, *, paired=None,
                 n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the units (rows) of ``x``.

    ``x``: 1-D values, one per unit, or a 2-D array ``[units, columns]`` whose rows are resampled
    together (e.g. ``[nll_sum, tokens]`` per window with ``statistic=lambda a: a[:, 0].sum() /
    a[:, 1].sum()``).  ``statistic`` maps such an array to one number.  With ``paired=y`` (same
    number of units as ``x``), the interval is for ``statistic(x) - statistic(y)``, both resampled
    with the same indices.  The estimate is the statistic of the data itself; resampling is seeded
    (``seed``), so the same inputs give the same interval.  A single unit gives ``low == high ==
    estimate`` (no variation is observable)."""
    _check_confidence(confidence)
    if int(n_resamples) != n_resamples or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    x = _as_units(x, "x")
    data = (x,)
    if paired is not None:
        y = _as_units(paired, "paired")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"paired must have one row per unit of x: {y.shape[0]} rows for {x.shape[0]} units")
        data = (x, y)

        def stat(a, b):
            return statistic(a) - statistic(b)
    else:
        def stat(a):
            return statistic(a)
    estimate = float(stat(*data))
    n = x.shape[0]
    if n == 1:
        return Interval(estimate, estimate, estimate)
    # resample unit indices (not values), so 2-D units and pairs stay together
    idx = np.arange(n)
    rng = np.random.default_rng(seed)
    res = _st.bootstrap((idx,), lambda i: stat(*(d[i.astype(int)] for d in data)), n_resamples=int(n_resamples),
                        batch=max(1, 2_000_000 // n), vectorized=False, confidence_level=confidence, method="percentile", rng=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(lo) or math.isnan(hi):  # scipy gives NaN when every resample is identical
        dist = res.bootstrap_distribution
        if np.allclose(dist, dist.flat[0]):
            lo = hi = float(dist.flat[0])
    return Interval(estimate, lo, hi)


def mcnemar(correct_a, correct_b) -> McNemar:
    """Exact McNemar test: are A and B equally accurate on the same items?

    ``correct_a``, ``correct_b``: booleans, one per item (A / B answered item i correctly).  Only
    discordant items count: ``b`` (A right, B wrong) and ``c`` (A wrong, B right); under the null
    ``b ~ Binomial(b + c, 1/2)`` and the p-value is the two-sided exact binomial test (1.0 when
    there are no discordant items).  Known value: ``b=10, c=2`` -> ``p = 158/4096 = 0.0386``."""
    a, b_ = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b_.shape or a.size == 0:
        raise ValueError(f"correct_a and correct_b must be 1-D, non-empty and of the same length, "
                         f"got shapes {a.shape} and {b_.shape}")
    for name, v in (("correct_a", a), ("correct_b", b_)):
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1), got values {np.unique(v)[:5].tolist()}")
    a, b_ = a.astype(bool), b_.astype(bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(_st.binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b, c, min(1.0, p))


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean over independent runs (seeds) with its Student-t interval, ``n - 1`` degrees of freedom.

    One value gives NaN bounds (one seed says nothing about seed-to-seed variation).  Known value:
    ``[1, 2, 3, 4, 5]`` -> ``3 +- 2.776 * sqrt(2.5 / 5) = (1.037, 4.963)``."""
    _check_confidence(confidence)
    v = _as_units(values, "values")
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per run), got shape {v.shape}")
    m = float(v.mean())
    if v.size == 1:
        return Interval(m, float("nan"), float("nan"))
    half = float(_st.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(m, m - half, m + half)


def format_ci(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """``"0.730 [0.664, 0.788]"``: the one way tables print a number with its 95% interval."""
    def f(x):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "n/a"
        return f"{x:.{digits}f}" if abs(x) < 10 ** 6 else f"{x:.3g}"
    return f"{f(estimate)} [{f(low)}, {f(high)}]"
