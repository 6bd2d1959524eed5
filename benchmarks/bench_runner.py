"""The sweep runner's overhead per run, and the speed-up of N Dask workers over one on a CPU sweep.

    python benchmarks/bench_runner.py [--runs 6] [--cpu-runs 8] [--iters 10000000] [--workers 2] [--repeats 4]

1. Overhead: a sweep of ``--runs`` runs of a trivial notebook on one local worker.  Per run, the
   runner's time (``run.json``: from starting the notebook process to its exit, i.e. papermill,
   the kernel and the checks) minus the notebook's own time (first cell to last, measured inside);
   and the sweep's wall time per run (cluster start, scheduling, locks, the table included) minus
   the notebook's own time.  Medians over runs.
2. Speed-up: ``--cpu-runs`` runs of a CPU-bound notebook (a pure-Python loop of ``--iters``
   iterations, 1 thread) on 1 worker and on ``--workers`` workers, interleaved ``--repeats`` times;
   the median wall time of each, the median of the paired ratios and a 95% t-interval of their
   geometric mean.  On a 2-core machine expect at most ~2x (less when the machine is shared).

Tiny notebooks are written to a temporary folder; nothing in the repository is touched.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

from minilib.runner.collect import seed_summary
from minilib.runner.sweep import execute_plan, plan_sweep

PARAMS = 'iters = 0\nseed = 0\nresults_path = ""\n'
START = "import json, time\nt0 = time.perf_counter()\n"
WORK = "acc = 0\nfor i in range(iters):\n    acc += i % 7\n"
END = ('json.dump({"notebook": "bench", "metrics": {"own_s": time.perf_counter() - t0, "acc": acc}}, '
       'open(results_path, "w"))\n')


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "minilib", "display_name": "Python (minilib)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    p = nbformat.v4.new_code_cell(PARAMS)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(s) for s in (START, WORK, END)]
    nbformat.write(nb, path)
    return path


def sweep(tmp: Path, name: str, nb: Path, n: int, iters: int, workers: int) -> tuple[float, list]:
    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "runs": [
        {"notebook": str(nb), "parameters": {"iters": iters}, "grid": {"seed": list(range(n))}}]}))
    plan = plan_sweep(spec, tmp / "runs")
    t = time.perf_counter()
    res = execute_plan(plan, workers=workers, threads=1, gpus="none", dashboard=None, status_every=1e9)
    wall = time.perf_counter() - t
    if not res.ok:
        sys.exit(f"benchmark sweep {name} failed: {res.failed or res.skipped}")
    runs = [(json.loads((r.run_dir / "run.json").read_text())["seconds"],
             json.loads((r.run_dir / "results.json").read_text())["metrics"]["own_s"]) for r in plan.runs]
    return wall, runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--cpu-runs", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    a = ap.parse_args()
    with open(os.devnull, "w") as out:
        run(a, out)


def run(a, out):
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as d:
        tmp = Path(d)
        nb = write_notebook(tmp / "bench.ipynb")
        stdout, sys.stdout = sys.stdout, out
        try:
            wall, runs = sweep(tmp, "overhead", nb, a.runs, 0, 1)
        finally:
            sys.stdout = stdout
        per_run = [s - own for s, own in runs]
        own = statistics.median(o for _, o in runs)
        _, mean, _, lo, hi = seed_summary(per_run)
        print(f"overhead ({a.runs} trivial runs, 1 worker): notebook's own time {own * 1e3:.0f} ms; runner time "
              f"per run minus it: median {statistics.median(per_run):.2f} s (mean {mean:.2f} s, 95% CI "
              f"[{lo:.2f}, {hi:.2f}]); sweep wall per run minus it (cluster start included): {wall / a.runs - own:.2f} s")
        walls: dict[int, list[float]] = {1: [], a.workers: []}
        owns = []
        for rep in range(a.repeats):
            for w in (1, a.workers):
                stdout, sys.stdout = sys.stdout, out
                try:
                    wall, runs = sweep(tmp, f"cpu-{w}w-{rep}", nb, a.cpu_runs, a.iters, w)
                finally:
                    sys.stdout = stdout
                walls[w].append(wall)
                owns += [o for _, o in runs]
                print(f"  repeat {rep + 1}: {w} worker(s): {wall:.1f} s")
        ratios = [s / p for s, p in zip(walls[1], walls[a.workers], strict=True)]
        _, lm, _, llo, lhi = seed_summary([math.log(r) for r in ratios])
        print(f"speed-up ({a.cpu_runs} CPU-bound runs, notebook's own time median {statistics.median(owns):.2f} s, "
              f"1 thread each): 1 worker {statistics.median(walls[1]):.1f} s, {a.workers} workers "
              f"{statistics.median(walls[a.workers]):.1f} s (medians of {a.repeats}); ratio "
              f"{statistics.median(ratios):.2f}x (paired ratios {', '.join(f'{r:.2f}' for r in ratios)}; geometric mean "
              f"{math.exp(lm):.2f}x, 95% CI [{math.exp(llo):.2f}, {math.exp(lhi):.2f}])")


if __name__ == "__main__":
    main()
