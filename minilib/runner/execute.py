"""Execute one run (on a Dask worker or in the calling process): lock the run folder, run the
notebook in a child process, check what it wrote, and only then write ``DONE``.

``execute_run(task)`` is what the sweep submits to Dask; it is a plain function of a picklable
``RunTask`` and returns a ``RunOutcome`` or raises ``RunFailed``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import terminate_tree
from .state import DONE, RUN_JSON, RunLock, RunLocked, read_done, sha256_file, write_json

LOG = "log.txt"


class RunFailed(RuntimeError):
    """A run that did not finish: the notebook failed, wrote no results, or was stopped."""


@dataclass
class RunTask:
    run_id: str
    notebook: str                 # absolute path of the .ipynb
    run_dir: str
    parameters: dict              # everything the notebook gets, incl. results_path (and figures_dir)
    fingerprint: dict
    results_path: str
    figures_dir: str              # also exported as $MINILIB_FIGURES
    kernel: str = "minilib"
    threads: int | None = None    # thread budget of the notebook (OMP/MKL/OpenBLAS); None: inherit
    token: str = ""               # the sweep this run belongs to (events, termination)
    force: bool = False
    wait_for_lock: bool = True
    lock_timeout: float | None = None
    env: dict = field(default_factory=dict)


@dataclass
class RunOutcome:
    run_id: str
    status: str                   # "ran" | "done" (finished meanwhile by another runner) | "locked"
    seconds: float = 0.0
    host: str = ""
    message: str = ""


# --- child processes -----------------------------------------------------------------------------

_ACTIVE: dict[str, set] = {}
_ACTIVE_LOCK = threading.Lock()


def terminate_active(token: str | None = None, timeout: float = 10.0) -> int:
    """Stop every notebook process this process started (for the sweep ``token``, or all); returns
    how many.  The sweep runs this on every worker (``client.run``) when it is interrupted."""
    with _ACTIVE_LOCK:
        procs = [p for t, ps in _ACTIVE.items() if token is None or t == token for p in ps]
    for p in procs:
        if p.poll() is None:
            terminate_tree(p.pid, timeout)
    return len(procs)


def _emit(task: RunTask, kind: str, **msg) -> None:
    """Tell the sweep's client (Dask event ``minilib-runner-<token>``); printed when not on a worker."""
    msg = {"kind": kind, "run": task.run_id, **msg}
    try:
        from distributed import get_worker
        get_worker().log_event(f"minilib-runner-{task.token}", msg)
    except (ImportError, ValueError):
        if kind == "note":
            print(f"[runner] {msg['message']}", flush=True)


def _load() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


USAGE = "usage.json"  # written by the notebook process when it ends: its and its kernel's CPU seconds


def _cpu_seconds(path: Path) -> float | None:
    try:
        v = json.loads(path.read_text()).get("cpu_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(v) if isinstance(v, (int, float)) else None


def _child_env(task: RunTask) -> dict:
    env = dict(os.environ)
    env.update(task.env)
    env["MINILIB_FIGURES"] = task.figures_dir
    env["PYTHONUNBUFFERED"] = "1"
    if task.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(task.threads)
    return env


def _results_ok(path: Path, before: int | None) -> str:
    """'' if the notebook wrote a fresh JSON results file at ``path``, else what is wrong."""
    if not path.is_file():
        return f"the notebook finished but wrote no results at {path}"
    if before is not None and path.stat().st_mtime_ns == before:
        return f"the notebook finished but did not rewrite {path} (the file there is from an earlier run)"
    from minilib.results import ResultsError, read_json
    try:
        read_json(path, "rerun the notebook (the sweep runs it again)")
    except ResultsError as e:
        return f"the notebook finished but its results file is unusable: {e}"
    return ""


def execute_run(task: RunTask) -> RunOutcome:
    import yaml
    run_dir = Path(task.run_dir)
    host = socket.gethostname()
    note = lambda m: _emit(task, "note", message=m)
    try:
        lock = RunLock(run_dir, wait=task.wait_for_lock, timeout=task.lock_timeout, notify=note).acquire()
    except RunLocked as e:
        return RunOutcome(task.run_id, "locked", host=host, message=str(e))
    try:
        done = read_done(run_dir)
        if done and (not task.force or done.get("token") == task.token) and \
                all(done.get(k) == v for k, v in task.fingerprint.items()) and \
                Path(task.results_path).is_file() and done.get("results_sha256") == sha256_file(task.results_path):
            return RunOutcome(task.run_id, "done", host=host, message="finished by another runner meanwhile")
        results = Path(task.results_path)
        local_results = run_dir / "results.json"
        for f in (run_dir / DONE, local_results if results != local_results else None):
            if f is not None and f.exists():
                f.unlink()
        before = results.stat().st_mtime_ns if results.is_file() else None
        nb = Path(task.notebook)
        out_nb = run_dir / nb.name
        results.parent.mkdir(parents=True, exist_ok=True)  # the runner owns the output paths
        Path(task.figures_dir).mkdir(parents=True, exist_ok=True)
        (run_dir / "params.yaml").write_text(yaml.safe_dump(task.parameters, sort_keys=False))
        write_json(run_dir / "params.json", task.parameters)
        started = time.time()
        from minilib.determinism import cpu_name
        info = {"run": task.run_id, "notebook": task.notebook, "status": "running", "host": host, "cpu": cpu_name(),
                "worker_pid": os.getpid(), "started": started, "threads": task.threads,
                "load_start": _load(),  # 1-minute load average: how shared the machine was
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        write_json(run_dir / RUN_JSON, info)
        _emit(task, "start", host=host, pid=os.getpid())
        cmd = [sys.executable, "-m", "minilib.runner.child", str(nb), str(out_nb),
               "--parameters", str(run_dir / "params.yaml"), "--kernel", task.kernel,
               "--cwd", str(nb.parent), "--parent", str(os.getpid()), "--usage", str(run_dir / USAGE)]
        (run_dir / USAGE).unlink(missing_ok=True)
        with open(run_dir / LOG, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_child_env(task), start_new_session=True)
        with _ACTIVE_LOCK:
            _ACTIVE.setdefault(task.token, set()).add(proc)
        try:
            lock.record_child(proc.pid)
            rc = proc.wait()
        except BaseException:
            terminate_tree(proc.pid)
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.get(task.token, set()).discard(proc)
        seconds = time.time() - started
        error = ""
        if rc != 0:
            error = ("stopped (signal)" if rc in (143, -signal.SIGTERM, -signal.SIGKILL, 137)
                     else f"the notebook failed (exit {rc})")
        else:
            error = _results_ok(results, before)
        info.update(seconds=round(seconds, 3), finished=time.time(), returncode=rc, load_end=_load(),
                    cpu_seconds=_cpu_seconds(run_dir / USAGE))
        if error:
            info.update(status="failed", error=error)
            write_json(run_dir / RUN_JSON, info)
            tail = _tail(run_dir / LOG)
            raise RunFailed(f"{task.run_id} ({nb.name}): {error}; log: {run_dir / LOG}\n{tail}")
        if results != local_results:
            shutil.copyfile(results, local_results)
        info.update(status="done", results_path=str(results))
        write_json(run_dir / RUN_JSON, info)
        write_json(run_dir / DONE, {**task.fingerprint, "results_sha256": sha256_file(results),
                                    "token": task.token, "finished": time.time()})
        return RunOutcome(task.run_id, "ran", seconds=seconds, host=host)
    finally:
        lock.release()
