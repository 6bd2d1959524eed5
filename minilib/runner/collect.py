"""The sweep's table: one row per record of every finished run, and its summary over seeds.

``collect(run_dirs)`` reads each run folder's ``results.json`` (its ``records``, or else its scalar
``metrics``) and adds the run id, the notebook and the run's parameters as columns (lists and dicts
as JSON text).  ``aggregate_over_seeds(table)`` gives, per setting, the mean and a 95% t-interval
over seeds of each metric.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from minilib.results import read_json

RUNNER_PARAMS = ("results_path", "figures_dir")
STATS = ("metric", "n_seeds", "mean", "std", "ci_lo", "ci_hi")


def _cell(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


_MISSING = "\x00<missing>"


def _as_key(v) -> str:
    """One cell as text for grouping: every kind of missing value (``None``, ``NaN``, ``pd.NA``, ``NaT``)
    is one key, distinct from any text (including ``"nan"`` and ``"None"``)."""
    import pandas as pd
    try:
        if pd.isna(v):
            return _MISSING
    except (TypeError, ValueError):  # a list or an array in a cell: not a scalar
        pass
    return str(v)


def row_keys(table, cols: list[str]):
    """One string per row naming its values in ``cols`` (a Series on the table's index; empty strings
    without ``cols``).  Robust to missing values in any column and dtype (pandas 3's ``str`` columns
    keep ``NaN`` through ``astype(str)``)."""
    import pandas as pd
    if not cols:
        return pd.Series("", index=table.index, dtype=object)
    return pd.Series(["\x1f".join(_as_key(v) for v in row) for row in table[list(cols)].itertuples(index=False)],
                     index=table.index, dtype=object)


def collect(run_dirs, runs_dir: str | os.PathLike | None = None):
    """One tidy DataFrame of the results of ``run_dirs`` (in that order; folders without a
    ``results.json`` are left out).  ``run_dirs=None``: every folder under ``runs_dir``.

    The names of the parameter columns are in ``table.attrs["parameters"]``.  A record column named like
    a parameter of its run but holding other values is renamed ``record_<name>``; the parameter keeps
    the name (a sweep's ``seed`` is never hidden by a record's own ``seed``)."""
    import pandas as pd
    if run_dirs is None:
        run_dirs = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir())
    frames, param_cols = [], []
    for d in map(Path, run_dirs):
        f = d / "results.json"
        if not f.is_file():
            continue
        stem = d.name.split("__")[0]
        rerun = (f"rerun the sweep (the run {d.name} is then stale and runs again), or rerun the {stem} notebook "
                 "with its parameters")
        res = read_json(f, rerun)
        params = read_json(d / "params.json", rerun) if (d / "params.json").is_file() else {}
        if isinstance(res, dict) and res.get("records"):
            rows = res["records"]
        else:
            metrics = res.get("metrics", res) if isinstance(res, dict) else {}
            rows = [{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}]
        df = pd.DataFrame([{k: _cell(v) for k, v in r.items()} for r in rows])
        df.insert(0, "run", d.name)
        df.insert(1, "notebook", res.get("notebook", d.name.split("__")[0]) if isinstance(res, dict) else d.name)
        for k, v in params.items():
            if k in RUNNER_PARAMS:
                continue
            if k in df.columns:
                if (df[k].map(_as_key) == _as_key(_cell(v))).all():
                    continue  # the record repeats its run's parameter
                # a record column with the parameter's name but other values (e.g. the random-mask seed of a
                # baseline record beside the sweep's seed): the parameter keeps the name, the record's
                # column becomes record_<name>
                df = df.rename(columns={k: f"record_{k}"})
            df[k] = _cell(v)
            if k not in param_cols:
                param_cols.append(k)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.attrs["parameters"] = param_cols
    return table


def seed_summary(values, confidence: float = 0.95) -> tuple[int, float, float, float, float]:
    """``(n, mean, std, lo, hi)`` of the finite values of one row's seeds: the mean with its
    Student-t interval (``minilib.stats.t_interval``), and the spread; NaN where there are too few."""
    import numpy as np

    from minilib.stats import t_interval
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    nan = float("nan")
    if x.size == 0:
        return 0, nan, nan, nan, nan
    ci = t_interval(x, confidence)
    return int(x.size), ci.estimate, float(x.std(ddof=1)) if x.size > 1 else nan, ci.low, ci.high


def infer_roles(table, seed: str = "seed") -> tuple[list[str], list[str]]:
    """``(by, metrics)`` of a collected table whose parameter columns are known
    (``table.attrs["parameters"]``, set by ``collect``).

    Runs that differ only in the seed are siblings.  A record column whose values, as a set per run,
    are the same in every sibling (a ``ratio``, a ``method``) names a row: it goes into ``by`` with the
    parameters.  A numeric column that differs between siblings (an accuracy, its interval, a
    latency) is a metric.  A non-numeric column that differs raises."""
    import pandas as pd
    params = [c for c in table.attrs.get("parameters", []) if c != seed and c in table.columns]
    if "run" not in table.columns:
        raise ValueError("the table has no 'run' column (use the table written by the sweep)")
    fixed = ["notebook", *params] if "notebook" in table.columns else params
    sib = row_keys(table, fixed)
    by, metrics = list(fixed), []
    for c in table.columns:
        if c in ("run", seed) or c in fixed:
            continue
        per_run = table.groupby("run", sort=False)[c].agg(lambda v: tuple(sorted(map(_as_key, v))))
        same = all(len(set(per_run[g.unique()])) == 1 for _, g in table.groupby(sib, sort=False)["run"])
        if same:
            by.append(c)
        elif pd.api.types.is_numeric_dtype(table[c]):
            metrics.append(c)
        else:
            raise ValueError(f"column {c!r} is not numeric but differs between runs that differ only in the seed; "
                             "pass metrics=[...] and by=[...]")
    return by, metrics


def aggregate_over_seeds(table, metrics: list[str] | str | None = None, by: list[str] | None = None,
                         seed: str = "seed", confidence: float = 0.95):
    """Mean and t-interval over seeds of each metric, per setting; a long DataFrame with the ``by``
    columns and ``metric, n_seeds, mean, std, ci_lo, ci_hi`` (``n_seeds``: the seeds with a finite value).

    ``metrics``: the columns to aggregate; ``by``: the columns that name a setting.  When neither is
    given and the table comes from ``collect`` (its parameter columns are known), both are inferred
    by ``infer_roles``.  Otherwise ``metrics`` defaults to the float columns and ``by`` to every other
    column but ``run`` and ``seed``.  A setting with the same seed twice means the two are ambiguous
    (a column that names a row was taken as a metric) and raises; so does a table where every
    setting has one seed although there are several (a column that varies with the seed was taken
    as part of the setting).
    """
    import pandas as pd
    if seed not in table.columns:
        raise ValueError(f"the table has no {seed!r} column; run the sweep with `seeds: [...]`")
    table = table[table[seed].notna()]
    params = set(table.attrs.get("parameters", []))
    if metrics is None and by is None and params:
        by, metrics = infer_roles(table, seed)
        if not metrics:
            raise ValueError("no column differs between seeds; nothing to aggregate")
    if metrics is None:
        metrics = [c for c in table.columns if c not in params and c not in ("run", seed)
                   and pd.api.types.is_float_dtype(table[c])]
        if not metrics:
            raise ValueError("no float metric columns found; pass metrics=[...]")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for m in metrics:
        if m not in table.columns:
            raise ValueError(f"metric {m!r} is not a column of the table ({', '.join(map(str, table.columns))})")
        if not pd.api.types.is_numeric_dtype(table[m]):
            raise ValueError(f"metric {m!r} is not numeric")
    if by is None:
        by = [c for c in table.columns if c not in ("run", seed, *metrics)]
    by = list(by)
    missing = [c for c in by if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} of `by` are not in the table")
    clash = sorted(set(by) & set(STATS))
    if clash:
        raise ValueError(f"setting columns {clash} have the names of the summary's own columns {list(STATS)}")
    keys = row_keys(table, by)
    dup = table.assign(_k=keys).duplicated(["_k", seed], keep=False)
    if dup.any():
        row = table[dup].iloc[0]
        raise ValueError(f"setting {dict(row[by]) if by else '(all)'} has seed {row[seed]!r} more than once: a column "
                         f"that names a row is among the metrics {metrics}; pass metrics=[...] or by=[...]")
    n_seeds = table[seed].nunique()
    if n_seeds > 1 and keys.nunique() == len(table):
        floats = [c for c in by if pd.api.types.is_float_dtype(table[c])]
        raise ValueError(f"every setting has a single seed although the table has {n_seeds}: some column in "
                         f"`by` varies with the seed (float columns in it: {floats}); add it to metrics or pass by=[...]")
    rows = []
    for _, g in table.assign(_k=keys).groupby("_k", sort=False):
        first = g.iloc[0]
        for m in metrics:
            n, mean, std, lo, hi = seed_summary(g[m], confidence)
            rows.append({**{c: first[c] for c in by}, "metric": m, "n_seeds": n,
                         "mean": mean, "std": std, "ci_lo": lo, "ci_hi": hi})
    return pd.DataFrame(rows)
