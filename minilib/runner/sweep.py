"""Plan a sweep (run folders, fingerprints, what is done or stale) and execute it on Dask.

    plan = plan_sweep("sweeps/anatomy-grid.yaml")             # validates the spec; nothing runs
    print_plan(plan)                                          # --dry-run
    result = execute_plan(plan, workers=2)                    # LocalCluster, or client=/scheduler=
    result = execute_plan(plan, ExecuteOptions(workers=2, keep_going=True))   # the same options as one object
    result.table                                              # as written to <sweep folder>/table.csv

Runs whose dependencies (``after``) are finished are submitted to Dask; a run lost with its worker
is rescheduled by Dask (``allowed_failures`` times) and takes over its run folder's lock.  The table
is written for the runs that finished, also when others failed or the sweep was interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from minilib.io import write_text

from .execute import RunFailed, RunTask, execute_run, terminate_active
from .spec import ROOT, RunSpec, SpecError, display_path, expand, load_spec, notebook_parameters
from .state import fingerprint, library_hash, read_run_json, status

DEFAULT_RUNS = ROOT / "runs" / "sweeps"
PLACEHOLDERS = ("results_dir", "figures_dir", "profile")   # filled by `reproduce` only


@dataclass
class PlannedRun:
    spec: RunSpec
    run_dir: Path
    parameters: dict             # what the notebook gets (spec parameters + output paths)
    results_path: Path
    figures_dir: Path
    fingerprint: dict
    status: str                  # done | stale | new | failed
    reason: str = ""
    html_path: Path | None = None
    estimate: float | None = None

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def label(self) -> str:
        """The notebook and the values of its entry's grid axes (and seed), else the run id."""
        shown = " ".join(f"{k}={self.spec.parameters[k]!r}" for k in self.spec.axes)
        return f"{self.spec.notebook.stem} {shown}" if shown else self.run_id

    def task(self, kernel: str = "minilib", threads: int | None = None, token: str = "", force: bool = False,
             wait_for_lock: bool = True, lock_timeout: float | None = None) -> RunTask:
        return RunTask(self.run_id, str(self.spec.notebook), str(self.run_dir), self.parameters, self.fingerprint,
                       str(self.results_path), str(self.figures_dir), kernel, threads, token, force,
                       wait_for_lock, lock_timeout)


@dataclass
class Plan:
    name: str
    folder: Path                 # where table.csv (and summary.csv) go
    runs: list[PlannedRun]
    has_seeds: bool = False
    label: str = "runner"
    kernel: str = "minilib"


@dataclass
class SweepResult:
    plan: Plan
    table: object                # DataFrame
    table_path: Path | None
    done: list[str] = field(default_factory=list)       # finished (now or before)
    ran: list[str] = field(default_factory=list)        # executed by this call
    failed: dict = field(default_factory=dict)          # run id -> message
    skipped: dict = field(default_factory=dict)         # run id -> why it did not run
    interrupted: bool = False
    where: str = ""              # where the runs executed (workers and threads, or the scheduler)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


def _outputs(nb: Path, run_dir: Path, results_path: Path | None = None, figures_dir: Path | None = None):
    results_path = results_path or run_dir / "results.json"
    figures_dir = figures_dir or run_dir / "figures"
    out = {"results_path": str(results_path)}
    if "figures_dir" in notebook_parameters(nb):
        out["figures_dir"] = str(figures_dir)
    return out, results_path, figures_dir


def plan_runs(specs: list[RunSpec], run_dirs: list[Path], results_paths=None, figures_dirs=None,
              library: str | None = None) -> list[PlannedRun]:
    library = library or library_hash()
    out = []
    for i, (r, d) in enumerate(zip(specs, run_dirs)):
        extra, res, fig = _outputs(r.notebook, d, results_paths[i] if results_paths else None,
                                   figures_dirs[i] if figures_dirs else None)
        params = {**r.parameters, **extra}
        fp = fingerprint(r.notebook, params, library)
        st, why = status(d, fp, res)
        prev = read_run_json(d)
        est = prev.get("seconds") if prev.get("status") == "done" else None
        out.append(PlannedRun(r, d, params, res, fig, fp, st, why, estimate=est))
    return out


def plan_sweep(spec_path: str | os.PathLike, runs_dir: str | os.PathLike = DEFAULT_RUNS) -> Plan:
    """Validate the spec and find, for every run, its folder ``<runs_dir>/<sweep name>/<run id>/``
    and whether it is done, stale or new."""
    spec = load_spec(spec_path)
    name = spec.get("name", Path(spec_path).stem)
    folder = Path(runs_dir) / name
    runs = expand(spec, where=str(spec_path))
    for r in runs:
        for k, v in r.parameters.items():
            if isinstance(v, str) and any(f"{{{p}}}" in v for p in PLACEHOLDERS):
                raise SpecError(f"{spec_path}: parameter {k!r} = {v!r}: placeholders are filled only by "
                                f"`python -m minilib.runner reproduce` (e.g. --only {r.notebook.stem})")
    planned = plan_runs(runs, [folder / r.run_id for r in runs])
    has_seeds = any("seed" in r.axes for r in runs)   # `seeds:` or a `seed` grid axis
    return Plan(name, folder, planned, has_seeds)


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def print_plan(plan: Plan, file=None) -> None:
    file = file or sys.stdout
    counts: dict[str, int] = {}
    for i, r in enumerate(plan.runs):
        counts[r.status] = counts.get(r.status, 0) + 1
        why = f"  ({r.reason})" if r.reason else ""
        params = json.dumps(r.spec.parameters, sort_keys=True, default=str) if r.spec.parameters else "(defaults)"
        print(f"{i + 1:>4}  {r.status:<6} {r.run_id}  {params}{why}", file=file)
    todo = sum(r.status != "done" for r in plan.runs)
    print(f"[{plan.label}] {plan.name}: {len(plan.runs)} runs: "
          + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + f"; {todo} to run; folder {display_path(plan.folder)}", file=file)


class Progress:
    """One line per run start and finish, with the elapsed time and an estimate of the time left
    (from recorded durations, else the mean of the runs finished so far), and a status line when
    nothing happened for ``every`` seconds."""

    def __init__(self, plan: Plan, todo: list[PlannedRun], slots: int, every: float = 300.0):
        self.plan, self.slots, self.every = plan, max(1, slots), every
        self.t0 = time.time()
        self.total = len(todo)
        self.order = {r.run_id: i + 1 for i, r in enumerate(todo)}
        self.runs = {r.run_id: r for r in todo}
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.lock = threading.Lock()
        self.last = time.time()

    def say(self, msg: str) -> None:
        with self.lock:
            print(f"[{self.plan.label}] {msg}", flush=True)
            self.last = time.time()

    def _estimate(self, r: PlannedRun) -> float | None:
        if r.estimate is not None:
            return r.estimate
        took = [v for v in self.finished.values() if v]
        return sum(took) / len(took) if took else None

    def overdue(self) -> list[str]:
        """Labels of the running runs that have run past their estimate."""
        now = time.time()
        return [self.runs[k].label for k, t in self.started.items() if k not in self.finished
                and (e := self._estimate(self.runs[k])) is not None and now - t > e]

    def left(self) -> float | None:
        """Estimated seconds until the last run finishes; None when a run has no estimate.  A run past
        its estimate counts as still needing a tenth of it (not zero: "~0s left" while it runs)."""
        now, total = time.time(), 0.0
        for rid, r in self.runs.items():
            if rid in self.finished:
                continue
            e = self._estimate(r)
            if e is None:
                return None
            total += max(0.1 * e, e - (now - self.started[rid])) if rid in self.started else e
        return total / self.slots

    def left_text(self) -> str:
        left = self.left()
        late = self.overdue()
        return (f"~{_fmt(left)} left" if left is not None else "time left unknown") + \
            (f" ({', '.join(late)} past {'its' if len(late) == 1 else 'their'} estimate)" if late else "")

    def event(self, ev) -> None:
        _, msg = ev if isinstance(ev, tuple) else (None, ev)
        rid, kind = msg.get("run"), msg.get("kind")
        r = self.runs.get(rid)
        name = r.label if r else rid
        if kind == "start" and r is not None:
            again = rid in self.started
            self.started[rid] = time.time()
            est = self._estimate(r)
            self.say(f"[{self.order[rid]}/{self.total}] {'restart (its worker was lost)' if again else 'start'} "
                     f"{name} on {msg.get('host', '?')} (est. {_fmt(est)})")
        elif kind == "note":
            self.say(msg.get("message", ""))

    def done(self, rid: str, seconds: float | None, ok: bool, why: str = "") -> None:
        r = self.runs.get(rid)
        self.finished[rid] = seconds if ok else None
        n = len(self.finished)
        head = f"[{self.order.get(rid, '?')}/{self.total}] {'done' if ok else 'NOT DONE'} {r.label if r else rid}"
        took = f" in {_fmt(seconds)}" if seconds else ""
        self.say(f"{head}{took}{(': ' + why) if why else ''} | {n}/{self.total} finished, elapsed "
                 f"{_fmt(time.time() - self.t0)}" + (f", {self.left_text()}" if n < self.total else ""))

    def tick(self) -> None:
        if time.time() - self.last < self.every:
            return
        running = [f"{self.runs[k].label} ({_fmt(time.time() - t)})" for k, t in self.started.items()
                   if k not in self.finished]
        self.say(f"running: {', '.join(running) or 'nothing yet (waiting for workers)'} | elapsed "
                 f"{_fmt(time.time() - self.t0)}, {self.left_text()}")


def write_table(plan: Plan, done_dirs: list[Path]):
    """Collect the finished runs (in plan order) into ``<folder>/table.csv`` (and, for sweeps with
    seeds, ``summary.csv``: mean and 95% t-interval over seeds)."""
    from .collect import aggregate_over_seeds, collect
    table = collect(done_dirs)
    path = None
    if len(table):
        path = plan.folder / "table.csv"
        write_text(path, table.to_csv(index=False))
        print(f"[{plan.label}] {len(table)} rows from {table['run'].nunique()} runs -> {display_path(path)}",
              flush=True)
        seeded = {r.run_id for r in plan.runs if "seed" in r.spec.axes}
        if plan.has_seeds and "seed" in table.columns and table["run"].isin(seeded).any():
            try:
                summary = aggregate_over_seeds(table[table["run"].isin(seeded)])
            except ValueError as e:
                print(f"[{plan.label}] no summary over seeds: {e}", flush=True)
            else:
                write_text(plan.folder / "summary.csv", summary.to_csv(index=False))
                print(f"[{plan.label}] mean and 95% t-interval over seeds -> "
                      f"{display_path(plan.folder / 'summary.csv')}", flush=True)
    return table, path


def critical_paths(plan: Plan) -> dict[str, float | None]:
    """Per run: its estimated seconds plus the longest chain of estimated runs that wait for it
    (``after``), None where a run in it has no estimate.  Ready runs start longest chain first, so a
    long notebook listed late in a spec does not start last and set the wall time alone."""
    by_index = {r.spec.index: r for r in plan.runs}
    waiting: dict[int, list[int]] = {i: [] for i in by_index}
    for r in plan.runs:
        for d in r.spec.after:
            waiting.setdefault(d, []).append(r.spec.index)
    memo: dict[int, float | None] = {}

    def path(i: int) -> float | None:
        if i not in memo:
            own = by_index[i].estimate
            tails = [path(j) for j in waiting.get(i, [])]
            memo[i] = None if own is None or any(t is None for t in tails) else own + max(tails, default=0.0)
        return memo[i]

    return {by_index[i].run_id: path(i) for i in by_index}


def priorities(plan: Plan) -> dict[str, int]:
    """Dask priorities (higher first): longest critical path first when every run has an estimate,
    else the spec's order."""
    cp = critical_paths(plan)
    if any(v is None for v in cp.values()):
        order = sorted(plan.runs, key=lambda r: r.spec.index)
    else:
        order = sorted(plan.runs, key=lambda r: (-cp[r.run_id], r.spec.index))
    return {r.run_id: len(order) - k for k, r in enumerate(order)}


class _Interrupted(KeyboardInterrupt):
    pass


@dataclass(frozen=True)
class ExecuteOptions:
    """How ``execute_plan`` runs a plan (the runner CLI's options; ``python -m minilib.runner sweep -h``).

    Where: ``client`` (a ``distributed.Client``), else ``scheduler`` (address) or ``scheduler_file``,
    else a fresh ``LocalCluster`` of ``workers`` workers with ``threads`` threads each and ``gpus``
    (``"none"``, a count or device list; see ``minilib.runner.cluster``), whose workers Dask may lose
    ``allowed_failures`` times per run, with its dashboard at ``dashboard`` (None: none).
    ``resources``: Dask resources every run asks for (a run's own ``resources`` are added).
    Failures: ``retries`` (Dask retries of a failed run); ``keep_going``: run the rest after a failure.
    Locks and done runs: ``force`` reruns runs that are done; ``wait_for_locks`` waits for a run folder
    another process holds (``lock_timeout`` seconds at most, None: no limit), else the run is skipped.
    Status: a progress line every ``status_every`` seconds.  ``kernel``: overrides the plan's kernel."""

    client: object = None
    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    threads: int | None = None
    gpus: object = None
    resources: dict | None = None
    allowed_failures: int = 3
    dashboard: str | None = ":8787"
    retries: int = 0
    keep_going: bool = False
    force: bool = False
    wait_for_locks: bool = True
    lock_timeout: float | None = None
    status_every: float = 300.0
    kernel: str | None = None

    @property
    def local(self) -> bool:
        """A local cluster of our own (no client, scheduler or scheduler file given)."""
        return self.client is None and not self.scheduler and not self.scheduler_file

    @classmethod
    def build(cls, options: "ExecuteOptions | None" = None, **changes) -> "ExecuteOptions":
        """``options`` (None: the defaults) with ``changes`` by name; an unknown name is a ``TypeError``."""
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"execute_plan: options must be an ExecuteOptions (or None), got {type(options).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise TypeError(f"execute_plan: unknown option(s) {', '.join(map(repr, unknown))}; ExecuteOptions has "
                            f"{', '.join(names)}")
        return dataclasses.replace(options, **changes) if changes else options

    def replace(self, **changes) -> "ExecuteOptions":
        """A copy with ``changes`` (unknown names refused by name)."""
        return self.build(self, **changes)


def execute_plan(plan: Plan, options: ExecuteOptions | None = None, *, after_run=None, **settings) -> SweepResult:
    """Run every run of ``plan`` that is not done (all of them with ``force``) on Dask.

    ``options``: an ``ExecuteOptions`` (None: its defaults), any ``settings`` by name replacing its
    fields (``execute_plan(plan, workers=2, keep_going=True)``).  ``after_run(planned_run)`` is called
    (in the client) after each run that finished."""
    opts = ExecuteOptions.build(options, **settings)
    if opts.kernel:
        plan.kernel = opts.kernel
    result = SweepResult(plan, None, None)
    todo = [r for r in plan.runs if opts.force or r.status != "done"]
    result.done = [r.run_id for r in plan.runs if r not in todo]
    if not todo:
        print(f"[{plan.label}] {plan.name}: all {len(plan.runs)} runs are done; nothing to run", flush=True)
    else:
        from .cluster import connect
        with connect(opts.client, opts.scheduler, opts.scheduler_file, opts.workers, opts.threads, opts.gpus,
                     opts.dashboard, opts.allowed_failures) as (c, placement, _owned):
            _Execution(plan, todo, opts, c, placement, result, after_run).run()
    done_dirs = [r.run_dir for r in plan.runs if r.run_id in set(result.done)]
    result.table, result.table_path = write_table(plan, done_dirs)
    _summary(result)
    return result


class _Execution:
    """One ``execute_plan`` call on a connected client ``c``: submits the runs whose dependencies
    finished (highest priority first, no more in flight than the workers have slots), records each
    outcome in ``result``, stops on a failure (unless ``keep_going``), SIGTERM or Ctrl-C."""

    def __init__(self, plan: Plan, todo: list[PlannedRun], opts: ExecuteOptions, c, placement, result: SweepResult,
                 after_run=None):
        self.plan, self.opts, self.c, self.placement, self.result, self.after_run = \
            plan, opts, c, placement, result, after_run
        self.finished = set(result.done)
        self.by_index = {r.spec.index: r for r in plan.runs}
        self.token = uuid.uuid4().hex[:12]
        self.futures: dict = {}
        self.pending = list(todo)
        self.blocked: set[str] = set()
        self.prio = priorities(plan)
        self.resources = {**placement.resources, **(opts.resources or {})}
        where = placement.describe() if opts.local else \
            f"scheduler {c.scheduler.address} ({len(c.nthreads())} workers)"
        result.where = where
        print(f"[{plan.label}] {plan.name}: {len(todo)} of {len(plan.runs)} runs to run on {where}", flush=True)
        if opts.dashboard is not None or not opts.local:
            print(f"[{plan.label}] Dask dashboard: {c.dashboard_link}", flush=True)
        self.progress = Progress(plan, todo, max(1, sum(c.nthreads().values())), opts.status_every)
        self.topic = f"minilib-runner-{self.token}"

    def run(self) -> None:
        from distributed import wait
        from distributed.client import FIRST_COMPLETED
        c, result = self.c, self.result
        c.subscribe_topic(self.topic, self.progress.event)
        old_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        if old_term is not None:
            signal.signal(signal.SIGTERM, _on_term)
        try:
            self.submit_ready()
            while self.futures:
                try:
                    done_now, _ = wait(list(self.futures), timeout=min(self.opts.status_every, 30.0),
                                       return_when=FIRST_COMPLETED)
                except TimeoutError:
                    self.progress.tick()
                    continue
                for fut in done_now:
                    if not self.collect(fut):
                        break
                self.submit_ready()
        except KeyboardInterrupt:
            result.interrupted = True
            print(f"[{self.plan.label}] interrupted: stopping the running notebooks", flush=True)
            _stop(c, self.token, self.futures, result, self.pending, "interrupted")
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            with contextlib.suppress(Exception):  # the client may be closing already
                c.unsubscribe_topic(self.topic)

    def submit_ready(self) -> None:
        # Highest priority first, and no more runs in flight than the workers have slots: Dask
        # assigns a submitted run to a worker's queue at once, so a run submitted early would
        # wait behind another on a busy worker while a later, longer one starts elsewhere.
        result, opts = self.result, self.opts
        capacity = max(1, sum(self.c.nthreads().values()))
        for r in sorted(self.pending, key=lambda r: -self.prio[r.run_id]):
            deps = [self.by_index[i] for i in r.spec.after]
            if any(d.run_id in result.failed or d.run_id in self.blocked or d.run_id in result.skipped for d in deps):
                self.pending.remove(r)
                bad = [d.run_id for d in deps if d.run_id not in self.finished]
                result.skipped[r.run_id] = f"a run it depends on did not finish ({', '.join(bad)})"
                self.blocked.add(r.run_id)
                self.progress.done(r.run_id, None, False, result.skipped[r.run_id])
                continue
            if all(d.run_id in self.finished for d in deps):
                if len(self.futures) >= capacity:
                    continue  # still check the rest for runs whose dependencies failed
                self.pending.remove(r)
                task = r.task(self.plan.kernel, self.placement.threads, self.token, opts.force, opts.wait_for_locks,
                              opts.lock_timeout)
                fut = self.c.submit(execute_run, task, key=f"run-{r.run_id}-{self.token}", pure=False,
                                    resources=({**self.resources, **r.spec.resources} or None), retries=opts.retries,
                                    priority=self.prio[r.run_id])
                self.futures[fut] = r

    def collect(self, fut) -> bool:
        """Record the outcome of the finished future ``fut``; False when the sweep stops here."""
        r = self.futures.pop(fut)
        if fut.status == "finished":
            self._finished(r, fut.result())
            return True
        msg = self._failure(fut)
        self.result.failed[r.run_id] = msg
        self.progress.done(r.run_id, None, False, msg.splitlines()[0])
        print(msg, file=sys.stderr, flush=True)
        if self.opts.keep_going:
            return True
        _stop(self.c, self.token, self.futures, self.result, self.pending,
              f"stopped after {r.run_id} failed (--keep-going runs the rest)")
        return False

    def _finished(self, r: PlannedRun, out) -> None:
        result = self.result
        if out.status == "locked":
            result.skipped[r.run_id] = out.message
            self.progress.done(r.run_id, None, False, out.message)
            return
        self.finished.add(r.run_id)
        result.done.append(r.run_id)
        if out.status == "ran":
            result.ran.append(r.run_id)
        self.progress.done(r.run_id, out.seconds, True, "" if out.status == "ran" else out.message)
        if self.after_run is not None:
            self.after_run(r)

    def _failure(self, fut) -> str:
        exc = fut.exception() if fut.status == "error" else None
        msg = str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__ if exc else fut.status}: {exc}"
        if type(exc).__name__ == "KilledWorker":
            msg = (f"its worker died each time it ran it (Dask's allowed-failures, here --allowed-failures "
                   f"{self.opts.allowed_failures} on a local cluster; out of memory?); {exc}")
        return msg


def _on_term(signum, frame):
    raise _Interrupted()


def _stop(c, token: str, futures: dict, result: SweepResult, pending: list, why: str) -> None:
    """Stop the running notebooks of this sweep on every worker and cancel what is queued."""
    try:
        c.run(terminate_active, token)
    except Exception as e:  # noqa: BLE001  (a worker that is gone has nothing to stop)
        print(f"[runner] could not reach every worker to stop its notebooks: {e}", file=sys.stderr)
    if futures:
        c.cancel(list(futures), force=True)
    for r in list(futures.values()) + list(pending):
        result.skipped.setdefault(r.run_id, why)
    futures.clear()
    pending.clear()


def _summary(result: SweepResult) -> None:
    plan = result.plan
    before = len(result.done) - len(result.ran)
    print(f"[{plan.label}] {plan.name}: {len(result.done)}/{len(plan.runs)} done ({len(result.ran)} ran now, "
          f"{before} already done), {len(result.failed)} failed, {len(result.skipped)} not run", flush=True)
    for rid, msg in result.failed.items():
        print(f"[{plan.label}]   FAILED {rid}: {msg.splitlines()[0]}", flush=True)
    for rid, msg in result.skipped.items():
        print(f"[{plan.label}]   not run {rid}: {msg}", flush=True)


def run_sweep(spec_path: str | os.PathLike, runs_dir: str | os.PathLike = DEFAULT_RUNS,
              options: ExecuteOptions | None = None, *, dry_run: bool = False, **settings) -> SweepResult:
    """Validate, plan and execute a sweep spec (``options`` / ``settings``: as for ``execute_plan``)."""
    opts = ExecuteOptions.build(options, **settings)
    plan = plan_sweep(spec_path, runs_dir)
    if opts.kernel:
        plan.kernel = opts.kernel
    if dry_run:
        print_plan(plan)
        return SweepResult(plan, None, None, done=[r.run_id for r in plan.runs if r.status == "done"])
    return execute_plan(plan, opts)
