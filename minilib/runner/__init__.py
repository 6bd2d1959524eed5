"""Run notebooks with papermill on Dask: sweeps, ``make reproduce``, and the nbval copies.

A sweep spec (YAML, ``sweeps/*.yaml``; the full format is in docs/sweeps.md)::

    name: anatomy-grid
    seeds: [0, 1, 2]                                   # a first-class axis (parameter ``seed``)
    runs:
      - notebook: notebooks/BERT_pruning_baseline.ipynb
        parameters: {n_test: 600}                      # fixed values
        grid: {ppl_windows: [2, 4]}                    # cartesian product, one run per point

Every run executes ``python -m minilib.runner.child`` (papermill in its own process group) on a Dask
worker into ``runs/sweeps/<sweep>/<run id>/``: the executed notebook, ``log.txt``, ``params.yaml``,
``results.json`` (the notebook's ``results_path``), ``figures/`` (its ``figures_dir``), ``run.json``
and, once the results are checked, ``DONE`` -- the fingerprint of the notebook, the parameters and
the library's sources.  Finished runs whose fingerprint still matches are skipped; the table of every
finished run goes to ``runs/sweeps/<sweep>/table.csv`` (and ``summary.csv``, mean and 95%
t-interval over seeds).

    python -m minilib.runner sweep sweeps/anatomy-grid.yaml [--dry-run] [--keep-going] [--workers 2]
    python -m minilib.runner sweep SPEC --scheduler tcp://host:8786      # any Dask cluster
    python -m minilib.runner reproduce --profile default                 # = make reproduce PROFILE=default
    python -m minilib.runner prepare-tests build/nbtest                  # small-parameter copies for nbval
    python -m minilib.runner summary runs/sweeps/<sweep>/table.csv --metrics acc

Modules: ``spec`` (loading, validation, expansion), ``state`` (fingerprints, DONE, the run lock),
``execute`` (one run, on a worker), ``child`` (the notebook process), ``cluster`` (LocalCluster /
scheduler), ``sweep`` (planning, the Dask loop, progress, the table), ``collect`` (table, seeds),
``reproduce`` (profiles, HTML export), ``nbtest`` (prepare-tests).
"""

from .collect import aggregate_over_seeds, collect, seed_summary
from .execute import RunFailed, RunOutcome, RunTask, execute_run
from .nbtest import KERNEL, prepare_tests
from .reproduce import export_html, plan_reproduce, reproduce
from .spec import ROOT, RunSpec, SpecError, expand, load_spec, notebook_parameters, run_id
from .state import RunLock, RunLocked, fingerprint, library_hash
from .sweep import ExecuteOptions, Plan, SweepResult, execute_plan, plan_sweep, print_plan, run_sweep

__all__ = [
           "ExecuteOptions",
           "KERNEL",
           "ROOT",
           "Plan",
           "RunFailed",
           "RunLock",
           "RunLocked",
           "RunOutcome",
           "RunSpec",
           "RunTask",
           "SpecError",
           "SweepResult",
           "aggregate_over_seeds",
           "collect",
           "execute_plan",
           "execute_run",
           "expand",
           "export_html",
           "fingerprint",
           "library_hash",
           "load_spec",
           "notebook_parameters",
           "plan_reproduce",
           "plan_sweep",
           "prepare_tests",
           "print_plan",
           "reproduce",
           "run_id",
           "run_sweep",
           "seed_summary",
]
