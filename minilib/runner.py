"""Run notebooks with papermill: sweeps, the reproduce job, and notebook tests.

A sweep spec (YAML) lists notebooks and parameter grids::

    name: anatomy-ratios
    runs:
      - notebook: notebooks/GPT2_pruning_baseline.ipynb
        parameters: {n_examples: 512}          # fixed parameters
        grid: {seed: [0, 1, 2]}                # cartesian product, one run per point

Each run executes in its own subprocess (``papermill``) into ``runs/<run id>/`` with the executed
notebook, ``params.json``, ``results.json`` (the notebook's ``results_path`` is pointed there) and a
``DONE`` marker.  A run whose ``DONE`` matches the notebook's content and parameters is skipped.
``collect`` gathers every ``results.json`` into one tidy table (``runs/<sweep>.csv``).

Command line::

    python -m minilib.runner sweep sweeps/anatomy.yaml [--force]
    python -m minilib.runner reproduce          # sweeps/reproduce*.yaml: every notebook on its defaults
    python -m minilib.runner prepare-tests build/nbtest   # small-parameter copies for nbval
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "minilib"


def expand(spec: dict) -> list[dict]:
    """The runs of a sweep spec: ``[{"notebook", "parameters"}]``."""
    if not isinstance(spec, dict) or "runs" not in spec:
        raise ValueError("a sweep spec needs a 'runs' list")
    out = []
    for r in spec["runs"]:
        if "notebook" not in r:
            raise ValueError(f"sweep run without a notebook: {r}")
        nb = ROOT / r["notebook"]
        if not nb.is_file():
            raise FileNotFoundError(f"notebook {r['notebook']} does not exist")
        fixed = dict(r.get("parameters") or {})
        grid = r.get("grid") or {}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            out.append({"notebook": nb, "parameters": {**fixed, **dict(zip(keys, values))}})
    return out


def run_id(nb: Path, params: dict) -> str:
    h = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{nb.stem}__{h}" if params else nb.stem


def _fingerprint(nb: Path, params: dict) -> str:
    return hashlib.sha256(nb.read_bytes() + json.dumps(params, sort_keys=True).encode()).hexdigest()


def run_one(nb: Path, params: dict, runs_dir: Path, force: bool = False, results_path: Path | None = None) -> Path:
    """Execute one notebook with papermill in a subprocess; returns the run directory."""
    rid = run_id(nb, params)
    out = runs_dir / rid
    done = out / "DONE"
    fp = _fingerprint(nb, params)
    if not force and done.is_file() and done.read_text() == fp:
        print(f"[runner] {rid}: already done, skipped")
        return out
    out.mkdir(parents=True, exist_ok=True)
    if done.exists():
        done.unlink()
    results = Path(results_path) if results_path else out / "results.json"
    all_params = {**params, "results_path": str(results.resolve())}
    (out / "params.json").write_text(json.dumps(all_params, indent=1))
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out / nb.name), "-k", KERNEL,
           "--cwd", str(nb.parent), "-y", yaml.safe_dump(all_params), "--no-progress-bar"]
    print(f"[runner] {rid}: running {nb.name} {params or '(defaults)'}", flush=True)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"notebook {nb.name} failed with {params}; see {out / nb.name}")
    if results_path and results.is_file():
        (out / "results.json").write_text(results.read_text())
    done.write_text(fp)
    return out


def collect(runs_dir: Path, run_dirs: list[Path] | None = None):
    """One tidy table of every run's results: the rows of ``records`` (or the scalar metrics),
    with the run id, notebook and parameters as columns."""
    import pandas as pd
    frames = []
    for d in run_dirs if run_dirs is not None else sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        f = d / "results.json"
        if not f.is_file():
            continue
        res = json.loads(f.read_text())
        params = json.loads((d / "params.json").read_text()) if (d / "params.json").is_file() else {}
        rows = res.get("records") or [{k: v for k, v in res.get("metrics", res).items()
                                       if not isinstance(v, (dict, list))}]
        df = pd.DataFrame(rows)
        df.insert(0, "run", d.name)
        df.insert(1, "notebook", res.get("notebook", d.name.split("__")[0]))
        for k, v in params.items():
            if k != "results_path" and k not in df.columns and not isinstance(v, (dict, list)):
                df[k] = v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_sweep(spec_path: str | os.PathLike, runs_dir: str | os.PathLike = ROOT / "runs", force: bool = False,
              results_dir: str | os.PathLike | None = None):
    spec = yaml.safe_load(Path(spec_path).read_text())
    runs_dir = Path(runs_dir)
    dirs = []
    for r in expand(spec):
        res = None
        if results_dir is not None and not r["parameters"]:  # defaults: keep results/<notebook>.json
            res = Path(results_dir) / f"{r['notebook'].stem}.json"
        dirs.append(run_one(r["notebook"], r["parameters"], runs_dir, force, res))
    table = collect(runs_dir, dirs)
    name = spec.get("name", Path(spec_path).stem)
    if len(table):
        table.to_csv(runs_dir / f"{name}.csv", index=False)
        print(f"[runner] {len(table)} rows -> {runs_dir / f'{name}.csv'}")
    return table


def prepare_tests(out_dir: str | os.PathLike, params_dir: str | os.PathLike = ROOT / "tests" / "notebooks") -> list[Path]:
    """Copies of the notebooks with the small test parameters of ``tests/notebooks/<stem>.yaml``
    injected (papermill's parameterisation, not executed), for ``pytest --nbval-lax``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in sorted(Path(params_dir).glob("*.yaml")):
        nb_path = ROOT / "notebooks" / f"{spec.stem}.ipynb"
        if not nb_path.is_file():
            raise FileNotFoundError(f"{spec} names notebook {nb_path.name}, which does not exist")
        params = yaml.safe_load(spec.read_text()) or {}
        params.setdefault("results_path", str((out_dir / "results" / f"{spec.stem}.json").resolve()))
        nb = load_notebook_node(str(nb_path))
        nb = parameterize_notebook(nb, params, kernel_name=KERNEL)
        target = out_dir / nb_path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.runner")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("spec")
    s.add_argument("--runs-dir", default=str(ROOT / "runs"))
    s.add_argument("--force", action="store_true")
    r = sub.add_parser("reproduce")
    r.add_argument("--force", action="store_true")
    p = sub.add_parser("prepare-tests")
    p.add_argument("out_dir")
    a = ap.parse_args(argv)
    if a.cmd == "sweep":
        run_sweep(a.spec, a.runs_dir, a.force)
    elif a.cmd == "reproduce":
        for spec in sorted((ROOT / "sweeps").glob("reproduce*.yaml")):
            run_sweep(spec, ROOT / "runs", a.force, results_dir=ROOT / "results")
    else:
        for f in prepare_tests(a.out_dir):
            print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
