"""One way to reach a verdict, used by every study.

A verdict is a claim about replication, so every comparison names its **unit of replication** and
is tested at that level, with an interval valid at its ``n``:

* ``paired_difference(a, b, unit=...)``: ``a[i]`` and ``b[i]`` measured on the same unit ``i`` --
  the same evaluation window, test item or text chunk (a fixed comparison: the text varies), or the
  same calibration seed / random-mask seed (the result depends on a random draw: the draw varies).
  Student-t interval of the mean per-unit difference (``log=True``: of the log ratio, reported as a
  ratio), two-sided one-sample t p-value.  No percentile bootstrap over a handful of units: the t
  interval is exact under normality and keeps its width honest at small ``n``.
* ``paired_binary(a, b, unit="test items")``: per-item correctness of two models on the same items;
  the exact McNemar p-value, and the t interval of the mean per-item difference (``n`` is large for
  items; the floor below applies).
* ``above_chance(k, n, chance)``: ``k`` of ``n`` items right against a chance rate (exact binomial).

Below a floor of units a comparison is **too few to test** (``MIN_UNITS``: 3 seeds, 10 windows, items
or chunks) and gets no verdict.  A block of verdicts (one generated table of sentences) is one
multiple-comparison family: ``decide(tests)`` applies Holm's step-down correction over every test the
block prints and fills each test's adjusted p-value, outcome and the **smallest effect the run could
have resolved** (``mde``: the effect a two-sided test at the Bonferroni level of the family would
detect with 80% power, given the observed spread and ``n``; on the test's own scale).

Outcomes: ``"a lower"`` / ``"a higher"`` (Holm-adjusted p < alpha), ``"not resolved"``, ``"too few to
test"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _st

__all__ = ["MIN_UNITS", "Test", "paired_difference", "nll_ratio", "paired_binary", "above_chance", "holm", "decide",
           "describe", "format_p", "min_units"]

# the floor below which a comparison is "too few to test"; units not named here use "default"
MIN_UNITS = {"seeds": 3, "calibration seeds": 3, "random seeds": 3, "default": 10}
POWER = 0.8


@dataclass(frozen=True)
class Test:
    """One comparison of a verdict block (what ``decide`` reads and fills).

    ``estimate``/``low``/``high``: the effect on its scale (``"ratio"``: a / b, no effect = 1;
    ``"difference"``: a - b, no effect = 0; ``"proportion"``: a rate against ``null``).  ``n``: units
    at the level of replication (``unit``), ``test``: what was computed.  ``sd``: the spread of the
    per-unit effects on the test's working scale (log for ratios), for the resolvable effect."""

    label: str
    estimate: float
    low: float
    high: float
    p: float
    n: int
    unit: str
    test: str
    scale: str = "difference"
    sd: float = float("nan")
    null: float = 0.0
    p_adj: float = float("nan")
    outcome: str = ""
    mde: float = float("nan")
    family: int = 0

    @property
    def resolved(self) -> bool:
        return self.outcome in ("a lower", "a higher")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def min_units(unit: str) -> int:
    return MIN_UNITS.get(unit, MIN_UNITS["default"])


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one value per unit), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _t_test(d: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """mean, half-width of the t interval, two-sided p against 0, sd (ddof=1) of ``d``."""
    n = d.size
    m = float(d.mean())
    if n < 2:
        return m, float("nan"), float("nan"), float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0.0:   # every unit shows the same difference: no spread to test against
        return m, 0.0, (1.0 if m == 0.0 else 0.0), 0.0
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    p = float(2 * _st.t.sf(abs(m) / (sd / math.sqrt(n)), n - 1))
    return m, half, p, sd


def paired_difference(a, b, *, unit: str, label: str = "", log: bool = False, confidence: float = 0.95,
                      what: str = "") -> Test:
    """``a`` against ``b`` over units measured on both (``a[i]``, ``b[i]``: the same unit).

    ``log=True`` compares ``log a - log b`` and reports the ratio ``a / b`` (geometric mean of the
    per-unit ratios) with its interval: use it for perplexities (``a``, ``b`` per-unit mean NLL are
    already logs: pass them with ``log=False`` and ``ratio_of_logs=True`` via ``nll_ratio``)."""
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold one value per unit each: {a.size} and {b.size} values")
    if log:
        if (a <= 0).any() or (b <= 0).any():
            raise ValueError("log=True needs positive values")
        d = np.log(a) - np.log(b)
    else:
        d = a - b
    return _from_differences(d, unit=unit, label=label, as_ratio=log, confidence=confidence,
                             test=what or f"paired t over {unit}" + (" (log ratio)" if log else ""))


def nll_ratio(nll_a, nll_b, *, unit: str, label: str = "", confidence: float = 0.95, what: str = "") -> Test:
    """Perplexity ratio ``ppl(a) / ppl(b)`` from per-unit mean NLL per token (natural log) of ``a``
    and ``b`` on the same units: t interval of the mean per-unit NLL difference, exponentiated."""
    a, b = _vector(nll_a, "nll_a"), _vector(nll_b, "nll_b")
    if a.shape != b.shape:
        raise ValueError(f"nll_a and nll_b must hold one value per unit each: {a.size} and {b.size} values")
    return _from_differences(a - b, unit=unit, label=label, as_ratio=True, confidence=confidence,
                             test=what or f"paired t over {unit} (per-unit log perplexity ratio)")


def _from_differences(d: np.ndarray, *, unit: str, label: str, as_ratio: bool, confidence: float, test: str) -> Test:
    m, half, p, sd = _t_test(d, confidence)
    lo, hi = m - half, m + half
    if as_ratio:
        m, lo, hi = math.exp(m), math.exp(lo), math.exp(hi)
    return Test(label=label, estimate=m, low=lo, high=hi, p=p, n=int(d.size), unit=unit, test=test,
                scale="ratio" if as_ratio else "difference", sd=sd, null=1.0 if as_ratio else 0.0)


def paired_binary(correct_a, correct_b, *, label: str = "", unit: str = "test items",
                  confidence: float = 0.95) -> Test:
    """Accuracy of A minus accuracy of B on the same items: exact McNemar p-value, t interval of the
    mean per-item difference (``+1``, ``0``, ``-1``)."""
    from minilib.stats.intervals import mcnemar
    a, b = _vector(correct_a, "correct_a"), _vector(correct_b, "correct_b")
    mc = mcnemar(a.astype(bool), b.astype(bool))
    t = _from_differences(a - b, unit=unit, label=label, as_ratio=False, confidence=confidence,
                          test=f"exact McNemar over {unit} (b = {mc.b}, c = {mc.c})")
    return replace(t, p=mc.p_value)


def above_chance(k: int, n: int, chance: float, *, label: str = "", unit: str = "items") -> Test:
    """``k`` of ``n`` items right against ``chance``: one-sided exact binomial p-value (greater), the
    Wilson interval; outcome ``"a higher"`` where the adjusted p is below alpha."""
    from minilib.stats.intervals import wilson_interval
    if not 0 < chance < 1:
        raise ValueError(f"chance must lie in (0, 1), got {chance!r}")
    lo, hi = wilson_interval(k, n)
    p = float(_st.binomtest(int(k), int(n), chance, alternative="greater").pvalue) if n else float("nan")
    sd = math.sqrt(chance * (1 - chance))
    return Test(label=label, estimate=k / n if n else float("nan"), low=lo, high=hi, p=p, n=int(n), unit=unit,
                test=f"exact binomial against chance {chance:g} (one-sided), Wilson interval", scale="proportion",
                sd=sd, null=chance)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=float)
    adj = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adj[i] = running
    return adj


def _mde(t: Test, m: int, alpha: float) -> float:
    """Smallest effect the test resolves with ``POWER`` at the Bonferroni level ``alpha / m``."""
    if t.n < 2 or not (t.sd == t.sd):
        return float("nan")
    if t.scale == "proportion":   # normal approximation of the one-sided binomial test
        z = _st.norm.ppf(1 - alpha / m) + _st.norm.ppf(POWER)
        return t.null + z * t.sd / math.sqrt(t.n)
    df = t.n - 1
    k = (_st.t.ppf(1 - alpha / (2 * m), df) + _st.t.ppf(POWER, df)) * t.sd / math.sqrt(t.n)
    return math.exp(k) if t.scale == "ratio" else k


def decide(tests: list[Test], alpha: float = 0.05) -> list[Test]:
    """One multiple-comparison family: Holm over every test that has enough units, then each test's
    outcome and smallest resolvable effect.  Tests below their unit's floor stay in the list as "too
    few to test" and do not count towards the family size."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    testable = [i for i, t in enumerate(tests) if t.n >= min_units(t.unit) and t.p == t.p]
    adj = holm([tests[i].p for i in testable]) if testable else []
    m = max(1, len(testable))
    out = []
    for i, t in enumerate(tests):
        if i not in testable:
            out.append(replace(t, outcome="too few to test", family=len(testable)))
            continue
        pa = float(adj[testable.index(i)])
        if pa < alpha and t.estimate < t.null:
            outcome = "a lower"
        elif pa < alpha and t.estimate > t.null:
            outcome = "a higher"
        else:
            outcome = "not resolved"
        out.append(replace(t, p_adj=pa, outcome=outcome, mde=_mde(t, m, alpha), family=len(testable)))
    return out


def format_p(p: float) -> str:
    """``"= 0.042"`` / ``"< 0.001"``: what follows a ``p``."""
    return "n/a" if p is None or p != p else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def _num(x: float, scale: str) -> str:
    if x != x:
        return "n/a"
    return f"{x:.3f}" if scale != "difference" else f"{x:+.3f}"


def describe(t: Test) -> str:
    """The evidence of one decided test in words: estimate [interval], test, n, adjusted p, and the
    smallest effect it could have resolved."""
    eff = f"{_num(t.estimate, t.scale)} [{_num(t.low, t.scale)}, {_num(t.high, t.scale)}]"
    if t.outcome == "too few to test":
        return f"{eff}; n = {t.n} {t.unit}: too few to test (at least {min_units(t.unit)} needed)"
    mde = ""
    if t.mde == t.mde:
        what = {"ratio": "a ratio beyond", "difference": "a difference beyond +-", "proportion": "a rate above"}[t.scale]
        mde = f"; resolvable: {what} {abs(t.mde):.3f}" if t.scale == "difference" else f"; resolvable: {what} " \
            f"{t.mde:.3f}" + (f" (or below {1 / t.mde:.3f})" if t.scale == "ratio" else "")
    return f"{eff}, {t.test}, n = {t.n} {t.unit}, Holm p {format_p(t.p_adj)} of {t.family}{mde}"
