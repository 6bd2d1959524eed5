"""The process that executes one notebook: ``python -m minilib.runner.child`` (started by
``minilib.runner.execute``, one per run, in its own session / process group).

It runs papermill in-process and makes sure that nothing outlives it:

* on SIGTERM or SIGINT it stops the notebook's kernel (and anything else it started) and exits 143;
* a watchdog thread does the same when the process that started it dies (a Dask worker killed with
  SIGKILL cannot clean up after itself), so a lost worker never leaves a notebook running.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from minilib.runner.procs import stop_descendants


def _terminated(signum, frame):
    print(f"[runner] notebook process {os.getpid()}: got signal {signum}, stopping the kernel", flush=True)
    stop_descendants()
    os._exit(143)


def _watch_parent(parent: int, every: float = 1.0) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            print(f"[runner] notebook process {os.getpid()}: its runner {parent} is gone; stopping",
                  flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def encrypted_kernel_manager():
    """jupyter_client's ``AsyncKernelManager`` with ``transport_encryption="auto"``: it provisions
    CurveZMQ keys for a kernel whose kernelspec declares them (ipykernel's does), so the kernel's
    sockets are encrypted -- and it does not warn on every run that it "is running over TCP without
    encryption", which is what the default ("disabled") gives."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class EncryptedKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _default_encryption(self):
            return "auto"

    return EncryptedKernelManager


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.runner.child")
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("--parameters", required=True, help="YAML file of parameters")
    ap.add_argument("--kernel", default="minilib")
    ap.add_argument("--cwd", default=None)
    ap.add_argument("--parent", type=int, default=None, help="pid whose death stops this process")
    ap.add_argument("--usage", default=None, help="JSON file to write the CPU seconds of this process and its "
                                                    "kernel to, when the run ends")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _terminated)
    if a.parent is not None:
        if os.getppid() != a.parent:  # died between fork and here
            return 143
        threading.Thread(target=_watch_parent, args=(a.parent,), daemon=True).start()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    # jsonschema (under nbformat) imports rfc3987_syntax when it is installed (JupyterLab brings it) and
    # that builds a grammar for ~1.5 s of CPU; it only adds an "iri" format check, which notebooks do
    # not use, and jsonschema imports it optionally.
    sys.modules.setdefault("rfc3987_syntax", None)
    import papermill
    import yaml
    with open(a.parameters) as f:
        params = yaml.safe_load(f) or {}
    try:
        papermill.execute_notebook(a.notebook, a.output, parameters=params, kernel_name=a.kernel,
                                   cwd=a.cwd, progress_bar=False, log_output=True,
                                   kernel_manager_class=encrypted_kernel_manager())
    except papermill.PapermillExecutionError as e:
        print(f"[runner] the notebook raised {e.ename}: {e.evalue} (cell {e.exec_count})", flush=True)
        return 1
    finally:
        stop_descendants()
        if a.usage:
            write_usage(a.usage)
    return 0


def write_usage(path: str) -> None:
    """CPU seconds (user + system) of this process and of its reaped children, the kernel that ran the
    notebook among them: with the wall time, how much of a core the run had (a shared machine shows as
    CPU time well below the wall time at one thread)."""
    import json
    import resource
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    with open(path, "w") as f:
        json.dump({"cpu_seconds": round(cpu, 3)}, f)


if __name__ == "__main__":
    raise SystemExit(main())
