"""``make reproduce [PROFILE=default|test|paper]``: every notebook of ``sweeps/reproduce*.yaml`` once,
with ``profile`` passed to each, on the same Dask machinery as the sweeps.

Where things go (``<res>`` is ``results/`` for the default profile and ``results/<profile>/`` for
the others, so that a test or paper run never overwrites the committed default results; figures
likewise ``figures/`` or ``figures/<profile>/``):

* ``<res>/<notebook>.json``        the results (the notebook's ``results_path``)
* ``figures[/<profile>]/``         the figures (the notebook's ``figures_dir``)
* ``<res>/html/<notebook>.html``   the executed notebook as one self-contained HTML page (nbconvert)
* ``runs/reproduce/<profile>/<notebook>/``  the executed notebook, its log, params, ``run.json``
  (duration, host) and ``DONE``; the table of every run's records is ``runs/reproduce/<profile>/table.csv``

String parameters in a reproduce spec may use ``{results_dir}``, ``{figures_dir}`` and ``{profile}``
(e.g. ``baseline_path: "{results_dir}/BERT_pruning_baseline.json"``).  A finished notebook whose
fingerprint still matches is skipped, as in sweeps; ``--force`` runs everything again.
"""

from __future__ import annotations

import os
from pathlib import Path

from minilib.io import write_text

from .state import read_run_json
from .spec import ROOT, SpecError, display_path, expand, load_spec, notebook_parameters, resolve_notebook
from .sweep import ExecuteOptions, Plan, PlannedRun, SweepResult, _fmt, execute_plan, plan_runs, print_plan

# A notebook's estimated wall time (for the time-left line and the start order, longest critical path
# first: ``sweep.priorities``) is its last recorded run: runs/reproduce/<profile>/<notebook>/run.json,
# else its row in the profile's committed reproduce_runs.json (the README's timing table; measured, not
# typed in), else, for the test profile, ``TEST_ESTIMATE``.
TEST_ESTIMATE = 60.0


def output_dirs(profile: str, results_dir: Path, figures_dir: Path) -> tuple[Path, Path]:
    if profile == "default":
        return Path(results_dir), Path(figures_dir)
    return Path(results_dir) / profile, Path(figures_dir) / profile


def _fill(value, subs: dict):
    if isinstance(value, str):
        try:
            return value.format(**subs) if "{" in value else value
        except (KeyError, IndexError, ValueError) as e:
            raise SpecError(f"cannot fill {value!r}: unknown placeholder {e} (allowed: "
                            f"{', '.join('{' + k + '}' for k in subs)})") from None
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


def plan_reproduce(profile: str = "default", specs=None, results_dir=ROOT / "results", figures_dir=ROOT / "figures",
                   runs_dir=ROOT / "runs" / "reproduce", only: list[str] | None = None) -> Plan:
    from minilib.params import PROFILES
    if profile not in PROFILES:
        raise SpecError(f"profile {profile!r}: must be one of {list(PROFILES)}")
    specs = [Path(s) for s in specs] if specs else sorted((ROOT / "sweeps").glob("reproduce*.yaml"))
    if not specs:
        raise SpecError("no reproduce specs (sweeps/reproduce*.yaml)")
    res_dir, fig_dir = output_dirs(profile, results_dir, figures_dir)
    subs = {"results_dir": str(res_dir), "figures_dir": str(fig_dir), "profile": profile}
    runs, stems = [], {}
    for path in specs:
        spec = load_spec(path)
        for e, entry in enumerate(spec["runs"]):
            w = f"{path}: run entry {e + 1}"
            if not isinstance(entry, dict):
                raise SpecError(f"{w}: each entry is a mapping with a 'notebook'")
            for k in ("grid", "seeds"):
                if k in entry:
                    raise SpecError(f"{w}: a reproduce spec runs each notebook once; {k!r} belongs in a sweep spec")
            nb = resolve_notebook(entry.get("notebook"), w)
            params = _fill(dict(entry.get("parameters") or {}), subs)
            if "profile" in params:
                raise SpecError(f"{w}: 'profile' is set by `make reproduce PROFILE=...`; remove it from the spec")
            if "profile" in notebook_parameters(nb):
                params["profile"] = profile
            elif profile != "default":
                raise SpecError(f"{w}: notebook {nb.name} has no 'profile' parameter, so it cannot run the "
                                f"{profile!r} profile")
            entry["parameters"] = params
        offset = len(runs)
        for r in expand(spec, where=str(path)):
            stem = r.notebook.stem
            if stem in stems:
                raise SpecError(f"{path}: notebook {r.notebook.name} is already run by {stems[stem]}; "
                                "each notebook runs once in `reproduce`")
            stems[stem] = path.name
            from dataclasses import replace
            runs.append(replace(r, index=r.index + offset, after=tuple(i + offset for i in r.after)))
    if only:
        unknown = sorted(set(only) - set(stems))
        if unknown:
            raise SpecError(f"--only {unknown}: not in the reproduce specs ({', '.join(stems)})")
        keep = {r.index for r in runs if r.notebook.stem in only}
        from dataclasses import replace
        runs = [replace(r, after=tuple(i for i in r.after if i in keep)) for r in runs if r.index in keep]
    folder = Path(runs_dir) / profile
    planned = plan_runs(runs, [folder / r.notebook.stem for r in runs],
                        [res_dir / f"{r.notebook.stem}.json" for r in runs], [fig_dir] * len(runs))
    recorded = recorded_seconds(res_dir, profile)
    for p in planned:
        p.html_path = res_dir / "html" / f"{p.spec.notebook.stem}.html"
        if p.estimate is None:
            p.estimate = recorded.get(p.spec.notebook.stem, TEST_ESTIMATE if profile == "test" else None)
    return Plan(f"reproduce ({profile})", folder, planned, label="reproduce")


def recorded_seconds(res_dir: Path, profile: str) -> dict[str, float]:
    """Notebook -> wall seconds of its last finished run in ``<res_dir>/reproduce_runs.json`` for
    ``profile`` ({} when there is no such file or it cannot be read: estimates are only guesses)."""
    from minilib.results import read_json
    path = Path(res_dir) / TIMINGS
    try:
        timings = read_json(path, "") if path.is_file() else {}
    except ValueError:
        return {}
    if not isinstance(timings, dict) or timings.get("profile") != profile:
        return {}
    return {r["notebook"]: float(r["seconds"]) for r in timings.get("runs", [])
            if isinstance(r, dict) and r.get("status") == "done" and isinstance(r.get("seconds"), (int, float))}


def export_html(executed: str | os.PathLike, html: str | os.PathLike) -> Path:
    """The executed notebook as one self-contained HTML page (images embedded), written atomically."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return write_text(html, body)


def _html(r: PlannedRun) -> str:
    """Export ``r``'s executed notebook unless its HTML is up to date; '' or the error."""
    executed = r.run_dir / r.spec.notebook.name
    if r.html_path is None:
        return ""
    if not executed.is_file():
        return f"no executed notebook at {executed}"
    if r.html_path.is_file() and r.html_path.stat().st_mtime >= executed.stat().st_mtime:
        return ""
    try:
        export_html(executed, r.html_path)
    except Exception as e:  # noqa: BLE001  (nbconvert raises many kinds; all are reported)
        return f"{type(e).__name__}: {e}"
    return ""


def reproduce(profile: str = "default", *, specs=None, results_dir=ROOT / "results", figures_dir=ROOT / "figures",
              runs_dir=ROOT / "runs" / "reproduce", only: list[str] | None = None, html: bool = True,
              dry_run: bool = False, options: ExecuteOptions | None = None, **settings) -> SweepResult:
    """Run the reproduce specs with ``profile``; see the module docstring for where outputs go.
    ``options`` / ``settings``: how they run, as for ``execute_plan`` (with ``cpu_placement``'s
    workers and threads when the caller chose none)."""
    opts = ExecuteOptions.build(options, **settings)
    plan = plan_reproduce(profile, specs, results_dir, figures_dir, runs_dir, only)
    res_dir, fig_dir = output_dirs(profile, results_dir, figures_dir)
    todo = [r for r in plan.runs if opts.force or r.status != "done"]
    known = [r.estimate for r in todo]
    total = _fmt(sum(known)) if all(e is not None for e in known) else "unknown"
    print(f"[reproduce] profile {profile!r}: {len(plan.runs)} notebooks, {len(todo)} to run (estimated "
          f"{total} of notebook time); results -> {display_path(res_dir)}, figures -> {display_path(fig_dir)}",
          flush=True)
    if dry_run:
        print_plan(plan)
        return SweepResult(plan, None, None, done=[r.run_id for r in plan.runs if r.status == "done"])
    html_errors: dict[str, str] = {}

    def after_run(r: PlannedRun):
        if html:
            err = _html(r)
            if err:
                html_errors[r.run_id] = err
    opts = opts.replace(**cpu_placement(**vars(opts)))
    result = execute_plan(plan, opts, after_run=after_run)
    if html:
        for r in plan.runs:
            if r.run_id in result.done and r.run_id not in result.ran:
                err = _html(r)
                if err:
                    html_errors[r.run_id] = err
        exported = [r for r in plan.runs if r.run_id in result.done and r.run_id not in html_errors]
        if exported:
            print(f"[reproduce] HTML of {len(exported)} executed notebooks -> "
                  f"{display_path(res_dir / 'html')}/", flush=True)
        for rid, err in html_errors.items():
            print(f"[reproduce] HTML export FAILED for {rid}: {err}", flush=True)
            result.failed.setdefault(rid, f"HTML export failed: {err}")
    invocation = {"ran": len(result.ran), "where": result.where} if result.ran else None
    path = write_timings(plan, res_dir, profile, invocation)
    print(f"[reproduce] wall times -> {display_path(path)}", flush=True)
    return result


def cpu_placement(workers=None, threads=None, gpus=None, client=None, scheduler=None, scheduler_file=None,
                  cores: int | None = None, **_) -> dict:
    """``make reproduce``'s own default on a local CPU-only machine: ``cores // 2`` notebooks at once,
    and at least 2 where there are 2 cores, sharing the cores (sweeps run one notebook per 2 cores).
    On 2 cores that is 2 notebooks of 1 thread each: a forward pass of SmolLM2-135M runs 1.5x as fast
    on 2 threads as on 1 (benchmarks/bench_eval.py, perplexity), not 2x, so two 1-thread notebooks
    get more through than one 2-thread notebook.  Anything the caller chose (workers, threads, GPUs,
    a scheduler) is left alone: returns ``{}``."""
    from .cluster import detect_gpus
    if any(x is not None for x in (workers, threads, gpus, client, scheduler, scheduler_file)) or detect_gpus():
        return {}
    cores = cores or os.cpu_count() or 1
    n = max(min(2, cores), cores // 2)
    return {"workers": n, "threads": max(1, cores // n)}


TIMINGS = "reproduce_runs.json"


def collect_timings(plan: Plan, profile: str, invocation: dict | None = None, previous: dict | None = None) -> dict:
    """Wall time, status, host, CPU and threads of every notebook of ``plan``, from each run folder's
    ``run.json`` (runs of earlier invocations included; a notebook never run has ``status: "new"``);
    ``invocation``: the call that wrote this (``ran``: how many notebooks it executed, ``where``:
    workers and threads); ``table_timings`` shows the runs' span as the wall clock only when it is one
    call's.  ``previous``: the timings file this replaces; a plan of some notebooks only
    (``reproduce --only``) keeps the other notebooks' rows from it, so the table still lists every
    notebook's last run, each with the CPU it ran on."""
    import platform
    import torch
    rows = []
    for r in plan.runs:
        info = read_run_json(r.run_dir)
        rows.append({"notebook": r.spec.notebook.stem, "status": info.get("status", "new"),
                     "seconds": info.get("seconds"), "host": info.get("host"), "cpu": info.get("cpu"),
                     "threads": info.get("threads"), "started": info.get("started"),
                     "finished": info.get("finished"), "load_start": info.get("load_start"),
                     "load_end": info.get("load_end"), "cpu_seconds": info.get("cpu_seconds")})
    if previous and previous.get("profile") == profile:
        mine = {r["notebook"] for r in rows}
        kept = [r for r in previous.get("runs", []) if r.get("notebook") not in mine]
        order = [r["notebook"] for r in previous.get("runs", [])]
        rows = sorted(kept + rows, key=lambda r: order.index(r["notebook"]) if r["notebook"] in order else len(order))
    out = {"profile": profile, "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "cuda": torch.cuda.is_available(), "runs": rows}
    if invocation:
        out["invocation"] = invocation
    return out


def write_timings(plan: Plan, res_dir: Path, profile: str, invocation: dict | None = None) -> Path:
    """``<results>/reproduce_runs.json``: what ``table_timings`` renders in the README (the rows of
    notebooks this plan does not run are kept from the file it replaces)."""
    from minilib.results import read_json, write_results
    path = Path(res_dir) / TIMINGS
    previous = None
    if path.is_file():
        try:
            previous = read_json(path, "")
        except ValueError as e:
            print(f"[reproduce] {display_path(path)} is unreadable ({e}); rewritten from this invocation's notebooks "
                  "alone", flush=True)
    write_results(path, collect_timings(plan, profile, invocation, previous if isinstance(previous, dict) else None))
    return path
