"""Stopping process trees, shared by the runner (a notebook run that is cancelled or timed out),
the notebook process (its kernel, when it is itself stopped) and the run lock (a leftover notebook
process of a runner that died)."""

from __future__ import annotations

import os
import signal


def process_start(pid: int) -> float | None:
    """The start time of process ``pid`` (with the pid, it names one process: pids are reused),
    ``None`` when there is no such process."""
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def stop_processes(procs, timeout: float) -> None:
    """SIGTERM to each of ``procs`` (``psutil.Process``), SIGKILL to those alive after ``timeout`` s."""
    import psutil
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def stop_descendants(timeout: float = 5.0) -> None:
    """Stop every descendant of this process (its kernel and what that started)."""
    import psutil
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    stop_processes(kids, timeout)


def terminate_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM to the process group of ``pid`` (a session leader started by the runner), then
    SIGKILL to whatever of it and its descendants is left after ``timeout`` seconds."""
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        stop_processes([root], 0)  # not a group leader: signal it alone (the wait below covers it)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    stop_processes(alive, 0)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
