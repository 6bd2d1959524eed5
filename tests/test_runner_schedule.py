"""Scheduling of a plan's runs: longest critical path first, and a time left that never reads ~0s
while a run is still going (the wall time of `make reproduce`; a quiet, true progress output)."""
from __future__ import annotations

import time
from types import SimpleNamespace as NS

from minilib.runner.sweep import Progress, critical_paths, priorities


def _plan(*runs):
    """runs: (run_id, estimate, after indices)"""
    out = [NS(run_id=rid, label=rid, estimate=est, status="new", spec=NS(index=i, after=tuple(after)))
           for i, (rid, est, after) in enumerate(runs)]
    return NS(runs=out, label="reproduce", name="t")


def test_critical_path_adds_the_longest_chain_waiting_for_a_run():
    plan = _plan(("anatomy", 5, ()), ("baseline", 13, (0,)), ("strategy", 5, (1,)), ("side", 2, (0,)),
                 ("sparsegpt", 27, ()), ("dense", 6, ()))
    cp = critical_paths(plan)
    assert cp == {"anatomy": 23, "baseline": 18, "strategy": 5, "side": 2, "sparsegpt": 27, "dense": 6}
    prio = priorities(plan)
    order = sorted(prio, key=prio.get, reverse=True)
    assert order == ["sparsegpt", "anatomy", "baseline", "dense", "strategy", "side"]  # listed 5th, starts first


def test_without_every_estimate_the_spec_order_stands():
    plan = _plan(("a", None, ()), ("b", 100, ()), ("c", 1, (0,)))
    assert critical_paths(plan)["a"] is None
    prio = priorities(plan)
    assert sorted(prio, key=prio.get, reverse=True) == ["a", "b", "c"]


def test_time_left_names_a_run_past_its_estimate_instead_of_zero():
    plan = _plan(("slow", 10.0, ()), ("next", 20.0, ()))
    p = Progress(plan, plan.runs, slots=1)
    p.started["slow"] = time.time() - 60  # 6x its estimate and still running
    left = p.left()
    assert left >= 20.0 + 1.0  # the queued run, plus a share for the late one: never ~0s
    text = p.left_text()
    assert "slow past its estimate" in text and text.startswith("~")
    p.finished["slow"] = 60.0
    assert "past" not in p.left_text() and abs(p.left() - 20.0) < 1e-6
