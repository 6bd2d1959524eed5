"""The notebook runner (minilib.runner): strict specs, fingerprints, run locks, sweeps on a Dask
LocalCluster (2 workers; a worker killed mid-run), failures, SIGTERM, reproduce profiles + HTML,
nbval copies, and the summary over seeds.

Every notebook here is a tiny one written by the test (a parameters cell, a sleep, a results JSON);
the real notebooks are never run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from minilib.runner import (
    RunLock,
    RunLocked,
    SpecError,
    aggregate_over_seeds,
    execute_run,
    expand,
    load_spec,
    notebook_parameters,
    plan_reproduce,
    plan_sweep,
    prepare_tests,
    reproduce,
    seed_summary,
)
from minilib.runner.cluster import Placement, make_local_cluster, plan_placement
from minilib.runner.spec import _cell_assignments
from minilib.runner.state import fingerprint, library_hash, status
from minilib.runner.sweep import ExecuteOptions, execute_plan, print_plan

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]

PARAMS = '''x = 0                # an int
seed = 0
sleep = 0.0
fail = False
marker_dir = ""
tag = ""
ratios = [0.1, 0.2]
profile = "default"
results_path = ""    # "" = a run folder (papermill's own inspector skips this line: two '=')
figures_dir = ""
'''
BODY = '''import json, os, pathlib, time
if marker_dir:
    pathlib.Path(marker_dir, f"started-{x}-{seed}-{os.getpid()}").write_text(str(os.getpid()))
time.sleep(sleep)
if fail:
    raise RuntimeError("asked to fail")
'''
END = '''pathlib.Path(results_path).write_text(json.dumps({"notebook": "tiny", "metrics": {
    "y": x * 10 + seed + 0.5, "threads": os.environ.get("OMP_NUM_THREADS"), "tag": tag, "profile": profile}}))
if figures_dir:
    pathlib.Path(figures_dir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(figures_dir) / "fig.txt").write_text(profile)
if marker_dir:
    with open(pathlib.Path(marker_dir, "completions.txt"), "a") as f:
        f.write(f"{x}-{seed}\\n")
'''


def write_notebook(path: Path, params: str = PARAMS) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "minilib", "display_name": "Python (minilib)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell, nbformat.v4.new_code_cell(BODY),
                nbformat.v4.new_code_cell(END)]
    nbformat.write(nb, path)
    return path


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def nb(tmp_path_factory) -> Path:
    return write_notebook(tmp_path_factory.mktemp("nb") / "tiny.ipynb")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with 2 worker processes (one run at a time each), shared by the Dask tests."""
    from distributed import Client
    cluster = make_local_cluster(Placement(2, 1), dashboard=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(autouse=True)
def steady_library(monkeypatch):
    """Plans use the library hash taken once per test: in a working tree that others edit meanwhile,
    resumption checks would otherwise (rightly) see stale runs."""
    import minilib.runner.sweep as sweep_mod
    h = library_hash()
    monkeypatch.setattr(sweep_mod, "library_hash", lambda: h)
    return h


def run_plan(plan, **kw):
    kw.setdefault("threads", 1)
    kw.setdefault("dashboard", None)
    return execute_plan(plan, **kw)


# --- specs ---------------------------------------------------------------------------------------

BAD_SPECS = [
    ({"name": "s", "runs": [{"notebook": "{nb}", "grdi": {"x": [1]}}]}, "unknown key 'grdi'; did you mean 'grid'"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "paramters": {"x": 1}}]},
     "unknown key 'paramters'; did you mean 'parameters'"),
    ({"nmae": "s", "runs": [{"notebook": "{nb}"}]}, "unknown key 'nmae'; did you mean 'name'"),
    ({"name": "s", "runs": []}, "'runs' must be a non-empty list"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "grid": {}}]}, "'grid' is empty"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "grid": {"x": []}}]}, "grid axis 'x' is an empty list"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "grid": {"x": 3}}]}, "grid values must be lists"),
    ({"name": "s", "runs": [{"notebook": "notebooks/no_such.ipynb"}]}, "does not exist"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"y": 1}}]}, "has no parameter 'y'"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"x": "three"}}]},
     "parameter 'x' = 'three' is a str; the notebook's default is 0, so it must be an int"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "grid": {"x": [1, 2.5]}}]}, "parameter 'x' = 2.5 is a float"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"fail": 1}}]}, "parameter 'fail' = 1 is an int"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"ratios": 0.1}}]}, "must be a list"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"results_path": "r.json"}}]},
     "'results_path' is set by the runner"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"profile": "fast"}}]}, "must be one of"),
    ({"name": "s", "seeds": [0, 1], "runs": [{"notebook": "{nb}", "grid": {"seed": [3]}}]},
     "'seeds' and a 'seed' parameter"),
    ({"name": "s", "seeds": [], "runs": [{"notebook": "{nb}"}]}, "'seeds' must be a non-empty list"),
    ({"name": "s", "seeds": [0, 0], "runs": [{"notebook": "{nb}"}]}, "duplicates"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "after": ["nothing"]}]}, "not an earlier entry"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"x": 1}}, {"notebook": "{nb}", "grid": {"x": [1]}}]},
     "already run 1"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "resources": {"GPU": 0}}]}, "must be a positive number"),
    ({"name": "a/b", "runs": [{"notebook": "{nb}"}]}, "plain folder name"),
    ({"name": "s", "runs": [{"notebook": "{nb}", "parameters": {"tag": "{results_dir}/a.json"}}]},
     "placeholders are filled only by `python -m minilib.runner reproduce`"),
]


@pytest.mark.parametrize("spec,message", BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_bad_specs_are_errors_that_say_what_is_wrong(tmp_path, nb, spec, message):
    text = yaml.safe_dump(spec).replace("'{nb}'", str(nb)).replace("{nb}", str(nb))
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        plan_sweep(path, tmp_path / "runs")
    assert message in str(e.value)


def test_parameters_cell_is_read_fully_with_literal_defaults(nb):
    p = notebook_parameters(nb)
    # papermill.inspect_notebook drops `results_path` (its line has two '='); we must not
    assert list(p) == ["x", "seed", "sleep", "fail", "marker_dir", "tag", "ratios", "profile", "results_path",
                       "figures_dir"]
    assert p["x"] == 0 and p["ratios"] == [0.1, 0.2] and p["results_path"] == ""


def test_notebook_without_parameters_cell_is_an_error(tmp_path):
    nbk = nbformat.v4.new_notebook()
    nbk.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nbk, tmp_path / "plain.ipynb")
    with pytest.raises(SpecError, match="no cell tagged 'parameters'"):
        expand({"runs": [{"notebook": str(tmp_path / "plain.ipynb"), "parameters": {"x": 2}}]})


def test_expand_grid_and_seeds_in_order_with_stable_distinct_ids(tmp_path, nb):
    spec = {"name": "s", "seeds": [0, 1], "runs": [
        {"notebook": str(nb), "name": "a", "parameters": {"sleep": 0.0}, "grid": {"x": [1, 2]}},
        {"notebook": str(nb), "parameters": {"x": 9}, "seeds": [5], "after": ["a"]}]}
    runs = expand(spec)
    assert [(r.parameters["x"], r.parameters["seed"]) for r in runs] == [(1, 0), (1, 1), (2, 0), (2, 1), (9, 5)]
    assert runs[4].after == (0, 1, 2, 3)
    assert runs[0].axes == ("x", "seed")
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == 5 and ids == [r.run_id for r in expand(spec)]
    assert all(i.startswith("tiny__") for i in ids)


# --- fingerprints and status ------------------------------------------------------------------------

def test_library_hash_changes_with_any_source_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    h0 = library_hash(pkg)
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    h1 = library_hash(pkg)
    (pkg / "sub" / "b.py").write_text("B = 1\n")
    assert h0 != h1 and library_hash(pkg) == h0
    assert library_hash() == library_hash()  # the real package: deterministic
    # code a run does not execute (the runner, the tables, the planner) leaves finished runs done
    for rel in ("runner/sweep.py", "tables/dense.py", "profiles/plan.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("X = 1\n")
        assert library_hash(pkg) == h0, rel
    (pkg / "profiles" / "dense.py").write_text("SPEC = {}\n")  # a notebook's parameter spec: it runs
    assert library_hash(pkg) != h0


def test_status_done_only_while_fingerprint_and_results_match(tmp_path, nb):
    run_dir, res = tmp_path / "run", tmp_path / "run" / "results.json"
    run_dir.mkdir()
    fp = fingerprint(nb, {"x": 1}, library="L1")
    assert status(run_dir, fp, res) == ("new", "")
    res.write_text("{}")
    from minilib.runner.state import sha256_file, write_json
    write_json(run_dir / "DONE", {**fp, "results_sha256": sha256_file(res)})
    assert status(run_dir, fp, res) == ("done", "")
    assert status(run_dir, fingerprint(nb, {"x": 1}, library="L2"), res) == \
        ("stale", "the library's sources changed")
    assert status(run_dir, fingerprint(nb, {"x": 2}, library="L1"), res)[1] == "the parameters changed"
    res.write_text('{"edited": 1}')
    assert "changed since the run" in status(run_dir, fp, res)[1]


# --- the run lock ---------------------------------------------------------------------------------

def test_lock_held_by_a_live_process_skips_or_waits(tmp_path):
    d = tmp_path / "run"
    held = RunLock(d).acquire()
    with pytest.raises(RunLocked, match=rf"locked by process {os.getpid()} on .*skipped"):
        RunLock(d, wait=False).acquire()
    notes = []
    with pytest.raises(RunLocked, match="gave up after waiting"):
        RunLock(d, wait=True, timeout=0.3, poll=0.05, notify=notes.append).acquire()
    assert "waiting for it to finish" in notes[0]
    threading.Timer(0.4, held.release).start()
    t = time.monotonic()
    with RunLock(d, wait=True, poll=0.05, notify=notes.append) as second:
        assert time.monotonic() - t >= 0.3
        assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
        assert second.previous == {}  # released properly: nothing stale
    assert (d / ".lock").read_text() == ""  # released: the file (filelock's, kept) names no holder


def test_run_lock_is_a_filelock_lock(tmp_path):
    """Any filelock user on the same file is kept out while a run holds it, and gets it after."""
    from filelock import FileLock, Timeout
    d = tmp_path / "run"
    with RunLock(d):
        with pytest.raises(Timeout):
            FileLock(d / ".lock").acquire(timeout=0)
    other = FileLock(d / ".lock")
    other.acquire(timeout=0)
    with pytest.raises(RunLocked, match="skipped"):
        RunLock(d, wait=False).acquire()
    other.release()


def test_stale_lock_of_a_dead_process_is_taken_over_and_its_notebook_stopped(tmp_path):
    d = tmp_path / "run"
    code = ("import os, signal, subprocess, sys\n"
            "from minilib.runner.state import RunLock\n"
            f"lock = RunLock({str(d)!r}).acquire()\n"
            "p = subprocess.Popen(['sleep', '60'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "lock.record_child(p.pid)\n"
            "print(p.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([PY, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    orphan = int(out.stdout.split()[0])
    assert psutil.pid_exists(orphan)
    notes = []
    with RunLock(d, wait=False, notify=notes.append) as lock:
        assert lock.previous["child_pid"] == orphan
    assert "stale lock left by process" in notes[0] and "which is gone; taking over" in notes[0]
    assert f"stopping the leftover notebook process {orphan}" in notes[1]
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE


# --- sweeps on Dask ---------------------------------------------------------------------------------

def _spec4(tmp_path, nb, **params) -> Path:
    return write_spec(tmp_path / "four.yaml", {"name": "four", "seeds": [0, 1], "runs": [
        {"notebook": str(nb), "parameters": {"sleep": 0.2, **params}, "grid": {"x": [1, 2]}}]})


def test_sweep_on_two_workers_equals_sequential_and_resumes(tmp_path, nb, client, capsys, monkeypatch,
                                                              steady_library):
    spec = _spec4(tmp_path, nb)
    par = run_plan(plan_sweep(spec, tmp_path / "par"), client=client)
    assert par.ok and len(par.ran) == 4
    seq = execute_plan(plan_sweep(spec, tmp_path / "seq"), ExecuteOptions(workers=1, threads=1, dashboard=None))
    assert seq.ok and len(seq.ran) == 4
    pd.testing.assert_frame_equal(par.table, seq.table)
    assert sorted(par.table["y"]) == [10.5, 11.5, 20.5, 21.5]
    assert (par.table["threads"].astype(str) == "1").all()        # the thread budget reached the notebook
    on_disk = pd.read_csv(tmp_path / "par" / "four" / "table.csv")
    assert list(on_disk["run"]) == list(par.table["run"])
    summary = pd.read_csv(tmp_path / "par" / "four" / "summary.csv")
    row = summary[(summary["x"] == 1) & (summary["metric"] == "y")].iloc[0]
    assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(11.0)
    assert set(summary["metric"]) == {"y"} and "sleep" in summary.columns   # parameters are not metrics
    out = capsys.readouterr().out
    assert "[1/4] start" in out and "4/4 finished" in out and "left" in out
    # every run wrote into its own run folder
    r0 = par.plan.runs[0].run_dir
    assert (r0 / "figures" / "fig.txt").read_text() == "default"
    assert yaml.safe_load((r0 / "params.yaml").read_text())["results_path"] == str(r0 / "results.json")
    assert json.loads((r0 / "DONE").read_text())["library"] == steady_library
    # resumable: nothing runs again, same table
    again = run_plan(plan_sweep(spec, tmp_path / "par"), client=client)
    assert again.ran == [] and len(again.done) == 4
    pd.testing.assert_frame_equal(again.table, par.table)
    # ... until the library changes: then every finished run is stale, and --dry-run says why
    import minilib.runner.sweep as sweep_mod
    monkeypatch.setattr(sweep_mod, "library_hash", lambda: "edited-library")
    plan = plan_sweep(spec, tmp_path / "par")
    assert {(r.status, r.reason) for r in plan.runs} == {("stale", "the library's sources changed")}
    capsys.readouterr()
    print_plan(plan)
    assert capsys.readouterr().out.count(" stale ") == 4


def test_worker_killed_mid_run_no_run_lost_or_duplicated(tmp_path, nb, client, capsys):
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write_spec(tmp_path / "kill.yaml", {"name": "kill", "runs": [
        {"notebook": str(nb), "parameters": {"x": 1, "sleep": 4.0, "marker_dir": str(marks)}},
        {"notebook": str(nb), "parameters": {"sleep": 0.3, "marker_dir": str(marks)}, "grid": {"x": [2, 3, 4]}}]})
    plan = plan_sweep(spec, tmp_path / "runs")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("res", run_plan(plan, client=client)))
    t.start()
    deadline = time.time() + 60
    while not list(marks.glob("started-1-0-*")) and time.time() < deadline:
        time.sleep(0.1)
    lock = json.loads((plan.runs[0].run_dir / ".lock").read_text())
    first_kernel = int(next(marks.glob("started-1-0-*")).name.rsplit("-", 1)[1])  # the pid is in the name (no read race)
    os.kill(lock["pid"], signal.SIGKILL)                     # the worker running x=1
    t.join(120)
    res = box["res"]
    assert res.ok, (res.failed, res.skipped)
    assert sorted(res.table["y"]) == [10.5, 20.5, 30.5, 40.5]
    done_lines = (marks / "completions.txt").read_text().split()
    assert sorted(done_lines) == ["1-0", "2-0", "3-0", "4-0"]  # each run completed exactly once
    assert len(list(marks.glob("started-1-0-*"))) == 2          # x=1 ran again after the kill
    time.sleep(2)
    assert not psutil.pid_exists(first_kernel) or psutil.Process(first_kernel).status() == psutil.STATUS_ZOMBIE
    assert "restart (its worker was lost)" in capsys.readouterr().out


def test_failed_run_keep_going_dependents_and_table_of_the_rest(tmp_path, nb, client):
    spec = write_spec(tmp_path / "fail.yaml", {"name": "fail", "runs": [
        {"notebook": str(nb), "name": "bad", "parameters": {"x": 7, "fail": True}},
        {"notebook": str(nb), "parameters": {"sleep": 0.1}, "grid": {"x": [1, 2]}},
        {"notebook": str(nb), "parameters": {"x": 8}, "after": ["bad"]}]})
    res = run_plan(plan_sweep(spec, tmp_path / "r"), client=client, keep_going=True)
    bad, ok1, ok2, dep = res.plan.runs
    assert list(res.failed) == [bad.run_id] and "RuntimeError: asked to fail" in res.failed[bad.run_id]
    assert list(res.skipped) == [dep.run_id] and "did not finish" in res.skipped[dep.run_id]
    assert sorted(res.ran) == sorted([ok1.run_id, ok2.run_id])
    assert sorted(res.table["y"]) == [10.5, 20.5]
    assert not (bad.run_dir / "DONE").exists()
    assert json.loads((bad.run_dir / "run.json").read_text())["status"] == "failed"
    assert plan_sweep(spec, tmp_path / "r").runs[0].status == "failed"
    # without --keep-going the sweep stops at the failure and still writes the table of what finished
    spec2 = write_spec(tmp_path / "stop.yaml", {"name": "stop", "runs": [
        {"notebook": str(nb), "parameters": {"x": 7, "fail": True}},
        {"notebook": str(nb), "parameters": {"sleep": 30.0}, "grid": {"x": [1, 2, 3]}}]})
    t = time.time()
    res = run_plan(plan_sweep(spec2, tmp_path / "r"), client=client)
    assert time.time() - t < 60                                # the 30 s sleeper was stopped
    assert len(res.failed) == 1 and len(res.skipped) == 3 and not res.ok
    assert all("stopped after" in m for m in res.skipped.values())
    assert not any((r.run_dir / "DONE").exists() for r in res.plan.runs)


def test_sigterm_stops_the_sweep_and_its_notebook(tmp_path, nb):
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write_spec(tmp_path / "term.yaml", {"name": "term", "runs": [
        {"notebook": str(nb), "parameters": {"x": 5, "sleep": 120.0, "marker_dir": str(marks)}}]})
    proc = subprocess.Popen([PY, "-m", "minilib.runner", "sweep", str(spec), "--runs-dir", str(tmp_path / "r"),
                             "--workers", "1", "--threads", "1", "--dashboard", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    while not list(marks.glob("started-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    kernel = int(next(marks.glob("started-*")).name.rsplit("-", 1)[1])  # the pid is in the name (no read race)
    assert psutil.pid_exists(kernel)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    time.sleep(1)
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
    assert not list((tmp_path / "r" / "term").glob("*/DONE"))


def test_second_runner_on_a_locked_run_skips_or_waits(tmp_path, nb):
    spec = write_spec(tmp_path / "l.yaml", {"name": "l", "runs": [{"notebook": str(nb), "parameters": {"x": 4}}]})
    run = plan_sweep(spec, tmp_path / "r").runs[0]
    held = RunLock(run.run_dir).acquire()
    out = execute_run(run.task(threads=1, wait_for_lock=False))
    assert out.status == "locked" and f"locked by process {os.getpid()}" in out.message
    assert not (run.run_dir / "DONE").exists()
    threading.Timer(0.5, held.release).start()
    out = execute_run(run.task(threads=1))                    # waits, then runs
    assert out.status == "ran" and (run.run_dir / "DONE").exists()
    assert execute_run(run.task(threads=1)).status == "done"  # finished meanwhile: not run twice


# --- reproduce --------------------------------------------------------------------------------------

def test_execute_options_are_one_object_and_unknown_names_are_refused(tmp_path, nb):
    opts = ExecuteOptions(workers=2, keep_going=True)
    assert opts.local and opts.replace(scheduler="tcp://h:8786").local is False
    assert ExecuteOptions.build(opts, retries=2) == ExecuteOptions(workers=2, keep_going=True, retries=2)
    assert ExecuteOptions.build(None) == ExecuteOptions()
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'keepgoing'; ExecuteOptions has client, "):
        ExecuteOptions.build(keepgoing=True)
    plan = plan_sweep(_spec4(tmp_path, nb), tmp_path / "r")
    with pytest.raises(TypeError, match="unknown option"):      # before anything starts
        execute_plan(plan, worker=2)
    with pytest.raises(TypeError, match="options must be an ExecuteOptions"):
        execute_plan(plan, {"workers": 2})
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.workers = 3


def test_reproduce_cpu_placement_runs_two_notebooks_at_least(monkeypatch):
    from minilib.runner import cluster
    from minilib.runner.reproduce import cpu_placement
    monkeypatch.setattr(cluster, "detect_gpus", lambda: [])
    assert cpu_placement(cores=2) == {"workers": 2, "threads": 1}
    assert cpu_placement(cores=1) == {"workers": 1, "threads": 1}
    assert cpu_placement(cores=8) == {"workers": 4, "threads": 2}
    assert cpu_placement(workers=1, cores=2) == cpu_placement(threads=2, cores=2) == {}  # the caller's choice
    assert cpu_placement(scheduler="tcp://h:8786", cores=2) == cpu_placement(gpus="0", cores=2) == {}
    monkeypatch.setattr(cluster, "detect_gpus", lambda: ["0"])
    assert cpu_placement(cores=2) == {}                                   # GPUs: one worker per GPU, as sweeps


def test_reproduce_wall_clock_only_when_it_measures_one_call():
    from minilib.tables.reproduce import wall_clock
    run = lambda start, sec, status="done": {"status": status, "started": start, "finished": start + sec,  # noqa: E731
                                             "seconds": sec}
    overlapped = {"runs": [run(0, 100), run(10, 100), run(100, 50)]}      # 2 workers: span 150 s < sum 250 s
    assert wall_clock(overlapped) == 150
    gap = {"runs": [run(0, 100), run(5000, 100)]}                          # two calls an hour apart
    assert wall_clock(gap) is None
    assert wall_clock({**gap, "invocation": {"ran": 2}}) == 5100           # one call said it ran both
    assert wall_clock({**gap, "invocation": {"ran": 1}}) is None
    assert wall_clock({"runs": [run(0, 100), run(10, 100, "failed")]}) is None
    assert wall_clock({"runs": [{"status": "done", "seconds": 5}]}) is None  # older records: no start time


def test_timings_table_shows_cpu_time_and_share_only_when_recorded(tmp_path):
    from minilib.runner.reproduce import TIMINGS
    from minilib.tables.reproduce import table_timings
    run = {"notebook": "a", "status": "done", "seconds": 600.0, "threads": 1, "started": 0, "finished": 600,
           "load_start": 1.0, "load_end": 2.0}
    (tmp_path / TIMINGS).write_text(json.dumps({"profile": "default", "cpu_count": 2, "runs": [run]}))
    old = table_timings(tmp_path)
    assert "CPU time" not in old and "| `a` | done | 10.0 | 1 | 1.0 / 2.0 |" in old
    (tmp_path / TIMINGS).write_text(json.dumps({"profile": "default", "cpu_count": 2,
                                                "runs": [{**run, "cpu_seconds": 300.0}, {**run, "notebook": "b"}]}))
    new = table_timings(tmp_path)
    assert "| `a` | done | 10.0 | 1 | 1.0 / 2.0 | 5.0 | 50% |" in new   # half a core: it waited for one
    assert "| `b` | done | 10.0 | 1 | 1.0 / 2.0 | | |" in new            # no record: blank, not 0
    assert "waited for a core" in new


def test_reproduce_profile_outputs_html_and_progress(tmp_path, nb, client, capsys):
    nb2 = write_notebook(tmp_path / "tiny2.ipynb")
    spec = write_spec(tmp_path / "reproduce-t.yaml", {"name": "reproduce-t", "runs": [
        {"notebook": str(nb), "parameters": {"x": 1}},
        {"notebook": str(nb2), "parameters": {"x": 2, "tag": "{results_dir}/tiny.json"}, "after": ["tiny"]}]})
    dirs = {"specs": [spec], "results_dir": tmp_path / "results", "figures_dir": tmp_path / "figures",
            "runs_dir": tmp_path / "runs"}
    res = reproduce("test", client=client, threads=1, dashboard=None, **dirs)
    assert res.ok, (res.failed, res.skipped)
    r1 = json.loads((tmp_path / "results" / "test" / "tiny.json").read_text())
    r2 = json.loads((tmp_path / "results" / "test" / "tiny2.json").read_text())
    assert r1["metrics"]["profile"] == "test" and r2["metrics"]["tag"] == str(tmp_path / "results" / "test" / "tiny.json")
    assert (tmp_path / "figures" / "test" / "fig.txt").read_text() == "test"
    assert not (tmp_path / "results" / "tiny.json").exists()       # the default results are not touched
    html = (tmp_path / "results" / "test" / "html" / "tiny2.html").read_text()
    assert "<html" in html and "asked to fail" in html               # the executed notebook, code included
    out = capsys.readouterr().out
    assert "[reproduce] [1/2] start tiny" in out and "(est. 1m00s)" in out and "1/2 finished" in out
    assert (tmp_path / "runs" / "test" / "tiny" / "run.json").is_file()
    timings = json.loads((tmp_path / "results" / "test" / "reproduce_runs.json").read_text())
    assert [(r["notebook"], r["status"]) for r in timings["runs"]] == [("tiny", "done"), ("tiny2", "done")]
    assert all(r["seconds"] > 0 for r in timings["runs"])
    assert all(isinstance(r["cpu"], str) and r["cpu"] for r in timings["runs"])  # the CPU each ran on
    assert all(r["load_start"] >= 0 and r["load_end"] >= 0 for r in timings["runs"])  # how shared the machine was
    # the notebook process and its kernel did work: their CPU seconds are recorded (imports alone take > 0.5 s)
    assert all(0.5 < r["cpu_seconds"] < r["seconds"] * 3 for r in timings["runs"]), timings["runs"]
    from minilib.tables.reproduce import table_timings
    table = table_timings(tmp_path / "results" / "test")
    assert "| `tiny2` | done |" in table and "**sum of the notebooks' times**" in table and "CPU time (min)" in table
    assert timings["invocation"]["ran"] == 2 and all(r["started"] < r["finished"] for r in timings["runs"])
    assert "first start to last finish** (scheduler" in table  # one call ran both: its span is the wall clock
    with pytest.raises(ValueError, match="run `make reproduce`"):
        table_timings(tmp_path)
    # the next run knows the recorded durations and skips the finished notebooks
    plan = plan_reproduce("test", **dirs)
    assert [r.status for r in plan.runs] == ["done", "done"]
    assert plan.runs[0].estimate == json.loads((tmp_path / "runs" / "test" / "tiny" / "run.json").read_text())["seconds"]
    # the default profile writes results/ and figures/ themselves
    plan = plan_reproduce("default", **dirs)
    assert plan.runs[0].results_path == tmp_path / "results" / "tiny.json"
    assert plan.runs[0].parameters["figures_dir"] == str(tmp_path / "figures")


def test_reproduce_rejects_grids_profiles_and_notebooks_without_profile(tmp_path, nb):
    old = write_notebook(tmp_path / "old.ipynb", PARAMS.replace('profile = "default"\n', ""))
    dirs = {"results_dir": tmp_path / "res", "figures_dir": tmp_path / "fig", "runs_dir": tmp_path / "runs"}
    for spec, msg in [({"runs": [{"notebook": str(nb), "grid": {"x": [1, 2]}}]}, "runs each notebook once"),
                      ({"runs": [{"notebook": str(nb), "parameters": {"profile": "test"}}]}, "set by `make reproduce"),
                      ({"runs": [{"notebook": str(old)}]}, "has no 'profile' parameter"),
                      ({"runs": [{"notebook": str(nb), "parameters": {"tag": "{nope}"}}]}, "unknown placeholder")]:
        path = write_spec(tmp_path / "reproduce-x.yaml", spec)
        with pytest.raises(SpecError, match=msg):
            plan_reproduce("test", specs=[path], **dirs)
    with pytest.raises(SpecError, match="must be one of"):
        plan_reproduce("fast", specs=[path], **dirs)
    assert plan_reproduce("default", specs=[write_spec(tmp_path / "r.yaml", {"runs": [{"notebook": str(old)}]})],
                          **dirs).runs[0].parameters == {"results_path": str(tmp_path / "res" / "old.json"),
                                                         "figures_dir": str(tmp_path / "fig")}


def test_repository_specs_are_valid():
    for spec in sorted((ROOT / "sweeps").glob("*.yaml")):
        if spec.name.startswith("reproduce"):
            continue
        assert plan_sweep(spec).runs
    plan = plan_reproduce("test")
    stems = [r.spec.notebook.stem for r in plan.runs]
    assert sorted(stems) == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    strategy = plan.runs[stems.index("GPT2_pruning_strategy")]
    assert plan.runs[strategy.spec.after[0]].spec.notebook.stem == "GPT2_pruning_baseline"
    assert strategy.parameters["baseline_path"] == str(ROOT / "results" / "test" / "GPT2_pruning_baseline.json")


# --- nbval copies -----------------------------------------------------------------------------------

def test_prepare_tests_sets_output_paths_only_where_defined(tmp_path):
    nbs, params = tmp_path / "notebooks", tmp_path / "params"
    nbs.mkdir()
    params.mkdir()
    write_notebook(nbs / "with.ipynb")
    write_notebook(nbs / "without.ipynb", PARAMS.replace('figures_dir = ""\n', ""))
    (params / "with.yaml").write_text("x: 3\n")
    (params / "without.yaml").write_text("x: 4\n")
    out = tmp_path / "out"
    written = prepare_tests(out, params, nbs)
    assert [p.name for p in written] == ["with.ipynb", "without.ipynb"]

    def injected(p):
        cell = next(c for c in nbformat.read(p, 4).cells if "injected-parameters" in c.metadata.get("tags", []))
        return _cell_assignments(cell.source)
    assert injected(out / "with.ipynb") == {"x": 3, "results_path": str((out / "results" / "with.json").resolve()),
                                            "figures_dir": str((out / "figures").resolve())}
    assert injected(out / "without.ipynb") == {"x": 4,
                                               "results_path": str((out / "results" / "without.json").resolve())}
    (params / "with.yaml").write_text("xx: 3\n")
    with pytest.raises(SpecError, match="has no parameter 'xx'; did you mean 'x'"):
        prepare_tests(out, params, nbs)


# --- placement ----------------------------------------------------------------------------------------

def test_placement_defaults():
    p = plan_placement(cores=2, gpus="none")
    assert (p.workers, p.threads, p.resources) == (1, 2, {})
    p = plan_placement(cores=16, gpus="none")
    assert (p.workers, p.threads) == (8, 2)
    p = plan_placement(workers=4, cores=16, gpus="none")
    assert (p.workers, p.threads) == (4, 4)
    p = plan_placement(cores=16, gpus="0,3")
    assert (p.workers, p.threads, p.gpus, p.resources) == (2, 8, ["0", "3"], {"GPU": 1})
    with pytest.raises(ValueError, match="give 2 workers, not 3"):
        plan_placement(workers=3, gpus="0,1")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        plan_placement(threads=0)


def test_gpu_workers_each_see_their_own_gpu_and_offer_gpu_resource():
    from distributed import Client
    cluster = make_local_cluster(plan_placement(cores=2, gpus="0,1"), dashboard=None)
    with Client(cluster) as c:
        seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
        info = c.scheduler_info()["workers"]
        assert all(w["resources"] == {"GPU": 1} for w in info.values())
    cluster.close()


def test_docs_slurm_example_builds_a_gpu_job_script():
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(queue="gpu", account="myproject", cores=8, processes=1, memory="64GB",
                           walltime="04:00:00", job_extra_directives=["--gres=gpu:1"],
                           worker_extra_args=["--resources", "GPU=1"],
                           job_script_prologue=["source /path/to/minilib/.venv/bin/activate"],
                           scheduler_options={"dashboard_address": ":0", "host": "127.0.0.1"})  # no job is submitted
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script and "--resources GPU=1" in script and "--nthreads 8" in script


# --- over seeds -----------------------------------------------------------------------------------------

def test_seed_summary_matches_the_formula():
    n, m, s, lo, hi = seed_summary([1.0, 2.0, 3.0])
    assert (n, m, s) == (3, 2.0, 1.0)
    assert (lo, hi) == pytest.approx((2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)), abs=1e-5)
    n, m, s, lo, hi = seed_summary([5.0, float("nan")])
    assert (n, m) == (1, 5.0) and np.isnan(lo) and np.isnan(hi)


def _seed_table():
    rows = [{"run": f"nb__{s}", "notebook": "nb", "method": k, "ratio": r, "acc": a + s * 0.01,
             "latency_s": 0.1 + s * 0.003 + r, "n_test": 600, "seed": s, "budget": 5}
            for s in (0, 1, 2) for k, r, a in (("random", 0.1, 0.6), ("random", 0.3, 0.5), ("anatomy", 0.1, 0.7))]
    return pd.DataFrame(rows)


def test_aggregate_over_seeds_per_setting_and_its_guards():
    t = _seed_table()
    out = aggregate_over_seeds(t, metrics="acc", by=["method", "ratio"])
    assert len(out) == 3 and set(out["n_seeds"]) == {3}
    r = out[(out["method"] == "random") & (out["ratio"] == 0.3)].iloc[0]
    assert r["mean"] == pytest.approx(0.51) and r["ci_lo"] < 0.51 < r["ci_hi"]
    assert r["ci_hi"] - r["mean"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)
    with pytest.raises(ValueError, match="more than once"):       # no known parameters: ratio taken as a metric
        aggregate_over_seeds(t)
    with pytest.raises(ValueError, match="varies with the seed"):  # latency_s taken as part of the setting
        aggregate_over_seeds(t, metrics="acc")
    with pytest.raises(ValueError, match="no 'seed' column"):
        aggregate_over_seeds(t.drop(columns="seed"), metrics="acc")


def test_aggregate_over_seeds_infers_rows_and_metrics_of_a_collected_table():
    t = _seed_table()
    t.attrs["parameters"] = ["seed", "budget"]                    # as collect() records them
    out = aggregate_over_seeds(t)
    assert set(out["metric"]) == {"acc", "latency_s"}             # what differs between seeds
    assert {"method", "ratio", "n_test", "budget", "notebook"} <= set(out.columns)
    assert len(out) == 6 and set(out["n_seeds"]) == {3}
    r = out[(out["method"] == "anatomy") & (out["metric"] == "acc")].iloc[0]
    assert r["mean"] == pytest.approx(0.71)
    t2 = t.rename(columns={"budget": "mean"})
    t2.attrs["parameters"] = ["seed", "mean"]
    with pytest.raises(ValueError, match="names of the summary's own columns"):
        aggregate_over_seeds(t2)


def test_plot_over_seeds_draws_mean_and_interval_per_hue():
    from minilib.plotting import plot_over_seeds
    summary = pd.DataFrame({"method": ["a", "a", "b", "b"], "ratio": [0.1, 0.3, 0.1, 0.3], "metric": "acc",
                            "n_seeds": 3, "mean": [0.6, 0.5, 0.7, 0.4], "ci_lo": [0.55, 0.45, 0.65, 0.35],
                            "ci_hi": [0.65, 0.55, 0.75, 0.45]})
    fig = plot_over_seeds(summary, x="ratio", hue="method")
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.6, 0.5], [0.7, 0.4]]
    assert len(ax.collections) == 2 and "n=3" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="lacks columns"):
        plot_over_seeds(summary.drop(columns="ci_lo"), x="ratio")
    import matplotlib.pyplot as plt
    plt.close(fig)


# --- command line ----------------------------------------------------------------------------------------

def test_cli_dry_run_and_spec_errors(tmp_path, nb, capsys):
    from minilib.runner.__main__ import main
    spec = _spec4(tmp_path, nb)
    assert main(["sweep", str(spec), "--dry-run", "--runs-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count(" new ") == 4 and "4 runs: 4 new; 4 to run" in out
    assert not (tmp_path / "r").exists()                      # a dry run writes nothing
    bad = write_spec(tmp_path / "bad.yaml", {"name": "b", "runs": [{"notebook": str(nb), "grdi": {"x": [1]}}]})
    assert main(["sweep", str(bad)]) == 2
    assert "unknown key 'grdi'; did you mean 'grid'" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--resources", "GPU"]) == 2
    assert "expected NAME=NUMBER" in capsys.readouterr().err
    assert load_spec(spec)["name"] == "four"


# --- types from the notebook's parameter spec, missing values over seeds, truncated results ------

SPEC_PARAMS = '''profile = "default"
nsamples = None        # from the profile
sparsity = 0.5
method = "sparsegpt"
calib_seeds = None
seed = 0
results_path = ""
figures_dir = ""
'''

SPEC_BAD = [
    ({"nsamples": "32"}, "parameter 'nsamples' = '32' is a str; the notebook's parameter spec (minilib.profiles) "
                         "says it must be an int"),
    ({"nsamples": 32.0}, "parameter 'nsamples' = 32.0 is a float"),
    ({"nsamples": True}, "parameter 'nsamples' = True is a bool"),
    ({"nsamples": [32]}, "parameter 'nsamples' = [32] is a list"),
    ({"nsamples": 0}, "parameter 'nsamples' = 0: must be >= 1"),
    ({"sparsity": 1.0}, "parameter 'sparsity' = 1.0: must be < 1.0"),
    ({"method": "fast"}, "parameter 'method' = 'fast': must be one of ['magnitude', 'wanda', 'ria', 'dsnot', 'sparsegpt']"),
    ({"calib_seeds": 3}, "parameter 'calib_seeds' = 3 is an int; the notebook's parameter spec (minilib.profiles) "
                         "says it must be a list"),
    ({"calib_seeds": []}, "parameter 'calib_seeds' needs at least 1 entry"),
    ({"calib_seeds": [0, -1]}, "parameter 'calib_seeds[1]' = -1: must be >= 0"),
]


@pytest.fixture(scope="module")
def spec_nb(tmp_path_factory) -> Path:
    """A notebook whose stem has a parameter spec in minilib.profiles (SparseGPT_one_shot), with
    ``None`` defaults where the profile fills the value."""
    return write_notebook(tmp_path_factory.mktemp("specnb") / "SparseGPT_one_shot.ipynb", SPEC_PARAMS)


@pytest.mark.parametrize("params,message", SPEC_BAD, ids=[m for _, m in SPEC_BAD])
def test_values_are_checked_against_the_notebooks_parameter_spec_not_the_default(spec_nb, params, message):
    with pytest.raises(SpecError) as e:
        expand({"runs": [{"notebook": str(spec_nb), "parameters": params}]})
    assert message in str(e.value)
    name, value = next(iter(params.items()))   # the same value as a later grid point
    with pytest.raises(SpecError) as e:
        expand({"runs": [{"notebook": str(spec_nb), "grid": {name: [None, value]}}]})
    assert message in str(e.value)


def test_values_the_spec_allows_pass_with_none_defaults(spec_nb):
    runs = expand({"runs": [{"notebook": str(spec_nb), "parameters": {"nsamples": 8, "calib_seeds": [0, 1]},
                             "grid": {"sparsity": [0, 0.5]}, "seeds": [0]},
                            {"notebook": str(spec_nb), "parameters": {"nsamples": None, "sparsity": 0.7}}]})
    assert [(r.parameters.get("sparsity"), r.parameters.get("seed")) for r in runs] == [(0, 0), (0.5, 0), (0.7, None)]


def test_cli_dry_run_rejects_a_wrong_type_where_the_real_notebooks_default_is_none(tmp_path, capsys):
    from minilib.runner.__main__ import main
    assert notebook_parameters(ROOT / "notebooks" / "SparseGPT_one_shot.ipynb")["nsamples"] is None
    spec = write_spec(tmp_path / "s.yaml", {"name": "s", "runs": [
        {"notebook": "notebooks/SparseGPT_one_shot.ipynb", "parameters": {"nsamples": "many"}}]})
    assert main(["sweep", str(spec), "--dry-run", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "parameter 'nsamples' = 'many' is a str" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _fake_runs(tmp_path, budgets=(None, "x")) -> list[Path]:
    """Finished run folders as the runner leaves them: a parameter that is None for some runs."""
    dirs = []
    for b in budgets:
        for s in (0, 1, 2):
            d = tmp_path / f"nb__{b}-{s}"
            d.mkdir()
            (d / "results.json").write_text(json.dumps({"notebook": "nb", "metrics": {
                "acc": 0.5 + 0.01 * s + (0.1 if b is None else 0.0), "n_test": 600}}))
            (d / "params.json").write_text(json.dumps({"seed": s, "budget": b, "results_path": "r.json"}))
            dirs.append(d)
    return dirs


def test_summary_over_seeds_with_a_parameter_that_is_none_for_some_runs(tmp_path, capsys):
    from minilib.runner.collect import collect
    table = collect(_fake_runs(tmp_path))
    assert table["budget"].isna().sum() == 3
    out = aggregate_over_seeds(table)
    assert len(out) == 2 and list(out["metric"]) == ["acc", "acc"] and list(out["n_seeds"]) == [3, 3]
    none_row = out[out["budget"].isna()].iloc[0]
    assert none_row["mean"] == pytest.approx(0.61) and out[out["budget"] == "x"].iloc[0]["mean"] == pytest.approx(0.51)
    # the same table read back from table.csv (pandas 3: a str column holding NaN), by `runner summary`
    from minilib.runner.__main__ import main
    table.to_csv(tmp_path / "table.csv", index=False)
    assert main(["summary", str(tmp_path / "table.csv"), "--metrics", "acc", "--out", str(tmp_path / "s.csv")]) == 0
    again = pd.read_csv(tmp_path / "s.csv")
    assert sorted(again["mean"].round(6)) == [0.51, 0.61] and set(again["n_seeds"]) == {3}


def test_missing_values_are_one_setting_distinct_from_the_text_nan():
    from minilib.runner.collect import row_keys
    t = pd.DataFrame({"a": pd.array(["nan", None, "x", np.nan], dtype="object"), "b": [1.0, np.nan, 2.0, None]})
    k = row_keys(t, ["a", "b"])
    assert k[1] == k[3] and k[0] != k[1] and len(set(k)) == 3
    rows = [{"run": f"r{s}{v}", "tag": v, "seed": s, "acc": 0.1 * s + (v == "nan")}
            for s in (0, 1) for v in ("nan", None)]
    out = aggregate_over_seeds(pd.DataFrame(rows), metrics="acc", by=["tag"])
    assert len(out) == 2 and set(out["n_seeds"]) == {2}       # "nan" and None are two settings, not one


@pytest.mark.parametrize("text,what", [('{"notebook": "nb", "metrics": {"acc": 0.5', "is truncated"),
                                       ('{"notebook": "nb", "metrics": {"acc": "0.', "is truncated"),
                                       ("", "is empty"), ("{'acc': 1}", "is not valid JSON")])
def test_collect_names_a_truncated_results_file_and_says_to_rerun(tmp_path, text, what):
    from minilib.runner.collect import collect
    dirs = _fake_runs(tmp_path, budgets=("x",))
    (dirs[1] / "results.json").write_text(text)
    with pytest.raises(ValueError) as e:
        collect(dirs)
    msg = str(e.value)
    assert str(dirs[1] / "results.json") in msg and what in msg and "rerun the sweep" in msg and "nb notebook" in msg


def test_a_run_that_writes_truncated_results_fails_with_the_reason(tmp_path):
    from minilib.runner.execute import _results_ok
    p = tmp_path / "results.json"
    p.write_text('{"a": [1, 2')
    why = _results_ok(p, None)
    assert str(p) in why and "truncated" in why
    p.write_text('{"a": [1, 2]}')
    assert _results_ok(p, None) == ""


def test_collect_keeps_the_sweeps_seed_beside_a_records_own_seed(tmp_path):
    """A record column named like a run parameter (the random baseline's mask ``seed``) must not hide the
    sweep's ``seed``: the parameter keeps the name, the record's values become ``record_seed``."""
    dirs = []
    for s in (0, 1, 2):
        d = tmp_path / f"nb__seed{s}"
        d.mkdir()
        recs = [{"method": "random", "seed": k, "acc": 0.5 + 0.01 * s + 0.001 * k} for k in (0, 1)]
        recs.append({"method": "norm", "acc": 0.6 + 0.01 * s})
        (d / "results.json").write_text(json.dumps({"notebook": "nb", "records": recs}))
        (d / "params.json").write_text(json.dumps({"seed": s, "n_test": 10}))
        dirs.append(d)
    (tmp_path / "nb__same").mkdir()
    (tmp_path / "nb__same" / "results.json").write_text(json.dumps({"records": [{"n_test": 10, "acc": 1.0}]}))
    (tmp_path / "nb__same" / "params.json").write_text(json.dumps({"n_test": 10}))
    from minilib.runner.collect import collect
    table = collect(dirs + [tmp_path / "nb__same"])
    assert table["seed"].iloc[:9].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and pd.isna(table["seed"].iloc[9])
    assert table["record_seed"].iloc[:3].tolist()[:2] == [0, 1] and pd.isna(table["record_seed"].iloc[2])
    assert "record_n_test" not in table  # a record repeating its run's parameter is not renamed
    s = aggregate_over_seeds(table.iloc[:9], metrics=["acc"], by=["method", "record_seed"])
    norm = s[s.method == "norm"].iloc[0]
    assert norm.n_seeds == 3 and norm["mean"] == pytest.approx(0.61)


def test_ready_runs_start_longest_estimate_first_and_none_queue_behind_a_busy_worker(tmp_path, nb, client):
    """Four independent runs listed shortest first: on two workers the two with the longest estimates
    run first, the others only when a worker is free (Dask would queue them behind a busy worker)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = write_spec(tmp_path / "order.yaml", {"name": "order", "runs": [
        {"notebook": str(nb), "parameters": {"sleep": 0.5, "marker_dir": str(marks)}, "grid": {"x": [1, 2, 3, 4]}}]})
    plan = plan_sweep(spec, tmp_path / "runs")
    for r, est in zip(plan.runs, (1.0, 2.0, 30.0, 40.0)):
        r.estimate = est
    res = run_plan(plan, client=client)
    assert res.ok and len(res.ran) == 4
    done = (marks / "completions.txt").read_text().split()
    assert {d.split("-")[0] for d in done[:2]} == {"3", "4"}, done


def test_a_run_made_ready_by_its_dependency_goes_before_a_queued_shorter_one(tmp_path, nb, client):
    """L runs long on one worker; when S finishes, its dependent D (long chain) must take the free
    worker before the short X0-X2, although they were ready from the start (without the runner's cap
    on runs in flight, Dask had queued them on the workers: measured, D finished last)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    p = {"marker_dir": str(marks)}
    spec = write_spec(tmp_path / "deps.yaml", {"name": "deps", "runs": [
        {"notebook": str(nb), "name": "L", "parameters": {**p, "x": 1, "sleep": 3.0}},
        {"notebook": str(nb), "name": "S", "parameters": {**p, "x": 2, "sleep": 0.1}},
        *({"notebook": str(nb), "name": f"X{i}", "parameters": {**p, "x": 5 + i, "sleep": 0.1}} for i in range(3)),
        {"notebook": str(nb), "name": "D", "parameters": {**p, "x": 4, "sleep": 0.1}, "after": ["S"]}]})
    plan = plan_sweep(spec, tmp_path / "runs")
    for r, est in zip(plan.runs, (100.0, 1.0, 5.0, 5.0, 5.0, 50.0)):
        r.estimate = est
    res = run_plan(plan, client=client)
    assert res.ok and len(res.ran) == 6
    done = [d.split("-")[0] for d in (marks / "completions.txt").read_text().split()]
    assert done.index("2") < done.index("4") < min(done.index(x) for x in ("5", "6", "7")), done


def test_the_notebook_process_runs_its_kernel_encrypted_and_quietly(tmp_path):
    """The runner's kernel gets CurveZMQ keys (transport_encryption="auto"): no "running over TCP
    without encryption" warning on every run, and the notebook runs as before."""
    from minilib.runner.child import encrypted_kernel_manager
    assert encrypted_kernel_manager()().transport_encryption == "auto"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(x + 1)")]
    nb.metadata = {"kernelspec": {"name": "minilib", "language": "python", "display_name": "Python (minilib)"},
                   "language_info": {"name": "python"}}
    nbformat.write(nb, tmp_path / "in.ipynb")
    (tmp_path / "p.yaml").write_text("x: 41\n")
    r = subprocess.run([sys.executable, "-m", "minilib.runner.child", str(tmp_path / "in.ipynb"),
                        str(tmp_path / "out.ipynb"), "--parameters", str(tmp_path / "p.yaml")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "without encryption" not in r.stdout + r.stderr
    assert nbformat.read(tmp_path / "out.ipynb", 4).cells[-1].outputs[0]["text"] == "42\n"


def test_the_notebook_process_counts_its_kernels_cpu_time(tmp_path):
    """usage.json holds the kernel's CPU seconds too (a notebook that burns 4 s of CPU), not only the
    notebook process's own (papermill's imports, under 4 s)."""
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\nt = time.process_time()\n"
                                          "while time.process_time() - t < 4: pass")]
    nbformat.write(nb, tmp_path / "busy.ipynb")
    (tmp_path / "p.yaml").write_text("{}\n")
    r = subprocess.run([sys.executable, "-m", "minilib.runner.child", str(tmp_path / "busy.ipynb"),
                        str(tmp_path / "out.ipynb"), "--parameters", str(tmp_path / "p.yaml"),
                        "--kernel", "minilib", "--usage", str(tmp_path / "usage.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    own = json.loads((tmp_path / "usage.json").read_text())["cpu_seconds"]
    assert own >= 4.0, own


def test_a_partial_reproduce_keeps_the_other_notebooks_timings(tmp_path):
    """``reproduce --only X`` rewrites X's row of reproduce_runs.json and keeps the others (in their
    order): the README's timing table still lists every notebook, says which CPU each ran on, and
    shows no wall clock for rows of different invocations."""
    from types import SimpleNamespace

    from minilib.runner.reproduce import TIMINGS, write_timings
    from minilib.tables.reproduce import table_timings
    res = tmp_path / "results"
    res.mkdir()
    earlier = {"profile": "default", "runs": [
        {"notebook": n, "status": "done", "seconds": 60.0 * (i + 1), "threads": 1, "started": 100.0 * i,
         "finished": 100.0 * i + 60.0 * (i + 1), "cpu_seconds": 50.0} for i, n in enumerate(("a", "b", "c"))],
        "invocation": {"ran": 3, "where": "2 CPU worker(s)"}}
    (res / TIMINGS).write_text(json.dumps(earlier))
    run_dir = tmp_path / "runs" / "b"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "done", "seconds": 600.0, "threads": 2, "cpu": "Some CPU",
                                                  "started": 5000.0, "finished": 5600.0, "cpu_seconds": 900.0}))
    plan = SimpleNamespace(runs=[SimpleNamespace(run_dir=run_dir, spec=SimpleNamespace(notebook=Path("b.ipynb")))])
    write_timings(plan, res, "default", {"ran": 1, "where": "1 CPU worker(s)"})
    d = json.loads((res / TIMINGS).read_text())
    assert [(r["notebook"], r["seconds"]) for r in d["runs"]] == [("a", 60.0), ("b", 600.0), ("c", 180.0)]
    t = table_timings(res)
    assert "| `b` | done | Some CPU | 10.0 | 2 |" in t and "| `a` | done | not recorded | 1.0 |" in t
    assert "first start to last finish" not in t and "The last invocation ran 1 of these 3 notebooks" in t
    # another profile's file is not merged: the plan's rows alone
    (res / TIMINGS).write_text(json.dumps({**earlier, "profile": "test"}))
    write_timings(plan, res, "default", {"ran": 1, "where": "1 CPU worker(s)"})
    assert [r["notebook"] for r in json.loads((res / TIMINGS).read_text())["runs"]] == ["b"]


def test_a_fresh_clone_estimates_each_notebook_from_the_committed_timings(tmp_path, nb):
    """With no run folders yet, a reproduce plan takes each notebook's estimate from its finished row in
    the profile's reproduce_runs.json (measured, not a typed-in table); a row that did not finish, another
    profile's file or an unreadable one gives none (the test profile's one minute)."""
    from minilib.runner.reproduce import TIMINGS, recorded_seconds
    spec = write_spec(tmp_path / "reproduce-x.yaml", {"runs": [{"notebook": str(nb)}]})
    dirs = {"results_dir": tmp_path / "results", "figures_dir": tmp_path / "figures", "runs_dir": tmp_path / "runs"}
    res = tmp_path / "results" / "test"
    res.mkdir(parents=True)
    rows = [{"notebook": nb.stem, "status": "done", "seconds": 1234.5}, {"notebook": "other", "status": "failed",
                                                                          "seconds": 9.0}]
    (res / TIMINGS).write_text(json.dumps({"profile": "test", "runs": rows}))
    assert recorded_seconds(res, "test") == {nb.stem: 1234.5}
    assert plan_reproduce("test", specs=[spec], **dirs).runs[0].estimate == 1234.5
    assert recorded_seconds(res, "default") == {}                        # another profile's timings
    (res / TIMINGS).write_text("{not json")
    assert recorded_seconds(res, "test") == {}
    assert plan_reproduce("test", specs=[spec], **dirs).runs[0].estimate == 60.0
