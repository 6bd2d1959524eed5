"""Uncertainty and verdicts: one 95% convention (``intervals``) and one way to reach a verdict
(``verdicts``: the unit of replication, a test valid at its n, a floor, one family per block)."""

from minilib.stats.intervals import (Interval, McNemar, bootstrap_ci, format_ci, mcnemar, t_interval,
                                     wilson_interval)
from minilib.stats.verdicts import (MIN_UNITS, Test, above_chance, decide, describe, format_p, holm, min_units,
                                    nll_ratio, paired_binary, paired_difference)

__all__ = ["Interval", "McNemar", "wilson_interval", "bootstrap_ci", "mcnemar", "t_interval", "format_ci",
           "MIN_UNITS", "Test", "paired_difference", "nll_ratio", "paired_binary", "above_chance", "holm", "decide",
           "describe", "format_p", "min_units"]
