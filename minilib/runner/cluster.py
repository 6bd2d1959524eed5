"""Where runs execute: a Dask ``LocalCluster`` (one worker per GPU, or N CPU workers with a thread
budget each), or any running Dask scheduler (``tcp://host:8786``, a scheduler file, a
``dask-jobqueue`` cluster passed as a ``Client``).

Each worker runs one notebook at a time (one Dask thread); the notebook's own thread budget is set
through ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` by the run itself.
GPU workers get ``CUDA_VISIBLE_DEVICES`` set to their own GPU and the Dask resource ``GPU=1``.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Placement:
    """What the local cluster will look like (or, for a remote scheduler, what we know of it)."""

    workers: int
    threads: int | None           # thread budget per run (None: leave the workers' environment alone)
    gpus: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)   # what every run asks for

    def describe(self) -> str:
        if self.gpus:
            return (f"{self.workers} GPU worker(s) (CUDA_VISIBLE_DEVICES {', '.join(self.gpus)}), "
                    f"{self.threads} CPU thread(s) per run")
        return f"{self.workers} CPU worker(s), {self.threads} thread(s) per run"


def detect_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        ids = [v.strip() for v in vis.split(",") if v.strip()]
        return [] if not ids or ids[0].startswith("-") else ids
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001  (no torch, broken driver: no GPU)
        return []


def plan_placement(workers: int | None = None, threads: int | None = None, gpus: str | list | None = None,
                   cores: int | None = None) -> Placement:
    """Defaults: with GPUs, one worker per GPU and ``cores // n_gpus`` threads per run; on CPU,
    ``threads`` (default 2) per run and ``cores // threads`` workers.  Either number may be given."""
    cores = cores or os.cpu_count() or 1
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if gpus is None:
        ids = detect_gpus()
    elif isinstance(gpus, str):
        ids = [] if gpus.strip().lower() in ("", "none", "cpu") else [g.strip() for g in gpus.split(",") if g.strip()]
    else:
        ids = [str(g) for g in gpus]
    if ids:
        if workers is not None and workers != len(ids):
            raise ValueError(f"{len(ids)} GPU(s) ({', '.join(ids)}) give {len(ids)} workers, not {workers}; "
                             "choose the GPUs with --gpus (or --gpus none for CPU workers)")
        return Placement(len(ids), threads or max(1, cores // len(ids)), ids, {"GPU": 1})
    if workers is None:
        threads = threads or min(2, cores)
        workers = max(1, cores // threads)
    threads = threads or max(1, cores // workers)
    return Placement(workers, threads)


def make_local_cluster(placement: Placement, dashboard: str | None = ":8787", allowed_failures: int = 3):
    """A LocalCluster (CPU) or a SpecCluster of nannies pinned to one GPU each."""
    import dask
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster
    dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures})
    # worker logs only for crashes: a failed run is reported by the sweep with its notebook's log
    # without a dashboard the scheduler still serves /health and /metrics: on a free port, not 8787
    sched = {"dashboard": dashboard is not None, "dashboard_address": dashboard or ":0"}
    if not placement.gpus:
        return LocalCluster(n_workers=placement.workers, threads_per_worker=1, processes=True, memory_limit=0,
                            silence_logs=logging.CRITICAL, dashboard_address=sched["dashboard_address"],
                            scheduler_kwargs={"dashboard": sched["dashboard"]})
    workers = {f"gpu-{g}": {"cls": Nanny, "options": {
        "nthreads": 1, "memory_limit": 0, "resources": {"GPU": 1}, "silence_logs": logging.CRITICAL,
        "host": "127.0.0.1", "env": {"CUDA_VISIBLE_DEVICES": g}}} for g in placement.gpus}
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {**sched, "host": "127.0.0.1"}},
                       silence_logs=logging.CRITICAL)


@contextmanager
def connect(client=None, scheduler: str | None = None, scheduler_file: str | None = None,
            workers: int | None = None, threads: int | None = None, gpus=None, dashboard: str | None = ":8787",
            allowed_failures: int = 3):
    """Yield ``(client, placement, owned)``: the given client, a client of a running scheduler, or a
    fresh local cluster (closed on exit)."""
    from distributed import Client
    if client is not None:
        yield client, Placement(len(client.nthreads()), threads), False
        return
    if scheduler or scheduler_file:
        c = Client(scheduler, timeout="30s") if scheduler else Client(scheduler_file=scheduler_file, timeout="30s")
        try:
            yield c, Placement(len(c.nthreads()), threads), True
        finally:
            c.close()
        return
    placement = plan_placement(workers, threads, gpus)
    cluster = make_local_cluster(placement, dashboard, allowed_failures)
    c = Client(cluster)
    try:
        yield c, placement, True
    finally:
        c.close()
        cluster.close()
