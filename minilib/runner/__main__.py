"""Command line: ``python -m minilib.runner {sweep,reproduce,prepare-tests,summary} ...`` (see ``--help``
and docs/sweeps.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .spec import ROOT, SpecError


def _resources(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        name, _, value = it.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise SpecError(f"--resources {it!r}: expected NAME=NUMBER, e.g. GPU=1") from None
        if not name or out[name] <= 0:
            raise SpecError(f"--resources {it!r}: expected NAME=NUMBER with a positive number")
    return out


def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the runs and which are done/stale/new; run nothing")
    p.add_argument("--force", action="store_true", help="run again the runs that are done")
    p.add_argument("--keep-going", action="store_true",
                   help="after a failed run, go on with the others (default: stop the sweep)")
    p.add_argument("--no-wait", action="store_true",
                   help="skip runs whose folder another runner has locked (default: wait for it)")
    p.add_argument("--lock-timeout", type=float, default=None, help="seconds to wait for a locked run folder")
    g = p.add_argument_group("where runs execute (Dask)")
    g.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--scheduler-file", default=None, help="a Dask scheduler file (dask-jobqueue, dask-mpi)")
    g.add_argument("--workers", type=int, default=None,
                   help="local workers (default: one per GPU, else cores // threads)")
    g.add_argument("--threads", type=int, default=None,
                   help="threads per run (OMP/MKL/OpenBLAS; default: 2 on CPU, cores // GPUs with GPUs; "
                        "reproduce on CPU: cores // 2 workers, at least 2 on 2 cores, sharing the cores)")
    g.add_argument("--gpus", default=None, help="GPUs for local workers, e.g. 0,1 ('none': CPU workers; "
                                                "default: every visible GPU)")
    g.add_argument("--resources", action="append", default=None, metavar="NAME=N",
                   help="a Dask resource every run asks for, e.g. GPU=1 (repeatable; local GPU workers: GPU=1 "
                        "by default)")
    g.add_argument("--retries", type=int, default=0, help="retries of a run that failed (worker loss is always retried)")
    g.add_argument("--allowed-failures", type=int, default=3,
                   help="local cluster: times a run may lose its worker before it counts as failed")
    g.add_argument("--dashboard", default=":8787", help="local dashboard address ('none' to switch it off)")
    g.add_argument("--kernel", default="minilib", help="Jupyter kernel the notebooks run in")


def _exec_options(a):
    """The CLI's execution options as an ``ExecuteOptions``."""
    from .sweep import ExecuteOptions
    return ExecuteOptions(scheduler=a.scheduler, scheduler_file=a.scheduler_file, workers=a.workers,
                          threads=a.threads, gpus=a.gpus, resources=_resources(a.resources), keep_going=a.keep_going,
                          force=a.force, wait_for_locks=not a.no_wait, lock_timeout=a.lock_timeout,
                          retries=a.retries, allowed_failures=a.allowed_failures,
                          dashboard=None if str(a.dashboard).lower() == "none" else a.dashboard, kernel=a.kernel)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.runner",
                                 description="Run notebooks with papermill on Dask: sweeps, `make reproduce`, nbval copies.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep", help="run a sweep spec (YAML)")
    s.add_argument("spec")
    s.add_argument("--runs-dir", default=str(ROOT / "runs" / "sweeps"),
                   help="runs go to RUNS_DIR/<sweep name>/<run id>/ (default: runs/sweeps)")
    _exec_args(s)
    r = sub.add_parser("reproduce", help="every notebook of sweeps/reproduce*.yaml with one profile")
    r.add_argument("--profile", default="default", help="test | default | paper (default: default)")
    r.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="only these notebooks (stems)")
    r.add_argument("--no-html", action="store_true", help="do not export the executed notebooks to HTML")
    _exec_args(r)
    p = sub.add_parser("prepare-tests", help="parameterised notebook copies for nbval")
    p.add_argument("out_dir")
    m = sub.add_parser("summary", help="mean and 95%% t-interval over seeds of a sweep's table.csv")
    m.add_argument("table")
    m.add_argument("--metrics", nargs="+", default=None)
    m.add_argument("--by", nargs="+", default=None)
    m.add_argument("--out", default=None, help="write the summary here (CSV) instead of printing it")
    a = ap.parse_args(argv)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _terminate) if a.cmd in ("sweep", "reproduce") else None
    try:
        if a.cmd == "prepare-tests":
            from .nbtest import prepare_tests
            for f in prepare_tests(a.out_dir):
                print(f)
            return 0
        if a.cmd == "summary":
            import pandas as pd

            from .collect import aggregate_over_seeds
            try:
                out = aggregate_over_seeds(pd.read_csv(a.table), a.metrics, a.by)
            except (ValueError, OSError) as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            if a.out:
                from minilib.io import write_text
                write_text(a.out, out.to_csv(index=False))
            else:
                print(out.to_string(index=False))
            return 0
        if a.cmd == "sweep":
            from .sweep import run_sweep
            res = run_sweep(a.spec, Path(a.runs_dir), _exec_options(a), dry_run=a.dry_run)
            if a.dry_run:
                return 0
        else:
            from .reproduce import reproduce
            res = reproduce(a.profile, only=a.only, html=not a.no_html, dry_run=a.dry_run, options=_exec_options(a))
            if a.dry_run:
                return 0
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if res.interrupted:
        return 130
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
