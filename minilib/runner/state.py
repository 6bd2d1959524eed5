"""Run folders: what makes a run "done", why it is stale, and the lock that keeps two runners apart.

A run folder holds ``params.yaml`` / ``params.json`` (what the notebook got), the executed notebook,
``log.txt`` (papermill's output), ``results.json``, ``run.json`` (status, host, duration) and, last
of all, ``DONE``: the run's fingerprint (sha256 of the notebook, the parameters, a hash of every
``minilib/**/*.py`` source and the library version) plus the sha256 of the results file.  A run is
done only when ``DONE`` matches all of them now; anything else is stale and runs again.

``RunLock`` is an exclusive ``filelock`` lock on ``<run folder>/.lock`` whose file also records who
holds it (pid, host, start time, the notebook's process).  The kernel drops the lock when its holder
dies, so a lock left by a dead process never blocks; the next runner finds its record, says so and
stops that process's leftover notebook, if it still runs on this host.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Self

from minilib.io import write_text

from .procs import process_start, terminate_tree
from .spec import ROOT, display_path

DONE = "DONE"
LOCK = ".lock"
RUN_JSON = "run.json"
PACKAGE = ROOT / "minilib"

_LIB_CACHE: dict[str, str] = {}


# library code a notebook run does not execute: the runner that starts it, the tables rendered from
# its results afterwards, the profile planner.  Editing them leaves finished runs done.
NOT_RUN = ("runner/", "tables/", "profiles/plan.py")


def library_hash(package: str | os.PathLike = PACKAGE) -> str:
    """sha256 over every ``*.py`` file of the package that a run executes (relative path and contents;
    not ``NOT_RUN``), so that a change anywhere in that code makes finished runs stale."""
    package = Path(package).resolve()
    h = hashlib.sha256()
    for f in sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts
                    and not p.relative_to(package).as_posix().startswith(NOT_RUN)):
        h.update(f.relative_to(package).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _portable(params: dict) -> dict:
    """Output paths inside the repository are written relative to it (moving a clone keeps runs)."""
    out = dict(params)
    for k in ("results_path", "figures_dir"):
        if isinstance(out.get(k), str) and out[k]:
            out[k] = display_path(out[k])
    return out


def fingerprint(notebook: str | os.PathLike, parameters: dict, library: str | None = None) -> dict:
    """What a finished run must still match to count as done."""
    from minilib import __version__
    return {"notebook": sha256_file(notebook), "parameters": json.loads(json.dumps(_portable(parameters),
                                                                                    sort_keys=True)),
            "library": library if library is not None else library_hash(), "version": __version__}


REASONS = {"notebook": "the notebook changed", "parameters": "the parameters changed",
           "library": "the library's sources changed", "version": "the library's version changed"}


def read_done(run_dir: str | os.PathLike) -> dict | None:
    f = Path(run_dir) / DONE
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def status(run_dir: str | os.PathLike, fp: dict, results_path: str | os.PathLike) -> tuple[str, str]:
    """``("done" | "stale" | "new" | "failed", reason)`` of a run folder against the fingerprint ``fp``."""
    run_dir = Path(run_dir)
    done = read_done(run_dir)
    if done is None:
        info = read_run_json(run_dir)
        if info.get("status") == "failed":
            return "failed", f"failed before: {info.get('error', '')}".strip()
        if info.get("status") == "running":
            return "new", "started before but did not finish"
        return "new", ""
    if not done:
        return "stale", "the DONE marker is unreadable"
    reasons = [REASONS[k] for k in REASONS if done.get(k) != fp.get(k)]
    results_path = Path(results_path)
    if not results_path.is_file():
        reasons.append(f"{display_path(results_path)} is missing")
    elif done.get("results_sha256") != sha256_file(results_path):
        reasons.append(f"{display_path(results_path)} changed since the run")
    return ("stale", "; ".join(reasons)) if reasons else ("done", "")


def read_run_json(run_dir: str | os.PathLike) -> dict:
    f = Path(run_dir) / RUN_JSON
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


# --- the lock ------------------------------------------------------------------------------------

class RunLocked(RuntimeError):
    """The run folder is locked by another live runner."""


def describe_holder(info: dict) -> str:
    if not info:
        return "an unknown process"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"process {info.get('pid', '?')} on {info.get('host', '?')} (since {when})"


class RunLock:
    """``with RunLock(run_dir, wait=True):`` -- an exclusive lock on one run folder: a ``filelock``
    lock on ``<run folder>/.lock``, whose file also records the holder (pid, host, start time, the
    notebook's process) while it is held and is emptied on release.

    ``wait``: block until the holder releases it (``timeout`` seconds at most, ``None`` = forever)
    or, with ``wait=False``, raise ``RunLocked`` at once.  ``notify(message)`` is called once when
    waiting starts and when a stale lock of a dead process is taken over: the kernel drops a dead
    holder's lock, so a lock file that still names a holder when the lock is won was left by one."""

    def __init__(self, run_dir: str | os.PathLike, wait: bool = True, timeout: float | None = None,
                 poll: float = 0.5, notify=print):
        from filelock import FileLock
        self.path = Path(run_dir) / LOCK
        self.wait, self.timeout, self.poll, self.notify = wait, timeout, poll, notify
        self._lock = FileLock(self.path, thread_local=False, poll_interval=poll)
        self.info: dict = {}
        self.previous: dict = {}

    def _read(self) -> dict:
        try:
            d = json.loads(self.path.read_text() or "{}")
            return d if isinstance(d, dict) else {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def acquire(self) -> Self:
        from filelock import Timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            msg = f"{self.path.parent.name}: locked by {describe_holder(self._read())}"
            if not self.wait:
                raise RunLocked(f"{msg}; skipped (another runner is running it)") from None
            self.notify(f"{msg}; waiting for it to finish")
            if self.timeout is not None:
                try:
                    self._lock.acquire(timeout=self.timeout)
                except Timeout:
                    raise RunLocked(f"{msg}; gave up after waiting {self.timeout:.0f} s") from None
            else:  # finite waits in turn: filelock refuses an unbounded one on a path held in this process
                while True:
                    try:
                        self._lock.acquire(timeout=60.0)
                        break
                    except Timeout:
                        continue
        self.previous = self._read()
        if self.previous:
            self._take_over(self.previous)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                     "process_start": process_start(os.getpid())}
        self._write(self.info)
        return self

    def _take_over(self, prev: dict) -> None:
        self.notify(f"{self.path.parent.name}: stale lock left by {describe_holder(prev)}, which is gone; "
                    "taking over")
        child, start = prev.get("child_pid"), prev.get("child_start")
        if prev.get("host") == socket.gethostname() and isinstance(child, int) and start is not None \
                and process_start(child) == start:
            self.notify(f"{self.path.parent.name}: stopping the leftover notebook process {child}")
            terminate_tree(child)

    def _write(self, info: dict) -> None:
        """The holder record, in place (another descriptor of the file: closing it keeps the flock)."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            if info:
                os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)

    def record_child(self, pid: int) -> None:
        """Note the notebook's process in the lock, so that a runner taking over a stale lock can stop it."""
        self.info.update(child_pid=pid, child_start=process_start(pid))
        self._write(self.info)

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        self._write({})  # emptied before unlocking: the next holder finds no record, so no stale lock
        self._lock.release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
