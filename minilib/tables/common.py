"""What every table module shares: reading a notebook's results JSON, the sentence for missing
results, and number formats."""

from __future__ import annotations

import math
from pathlib import Path

from minilib.results import read_results
from minilib.stats import format_ci


class ResultsMissing(LookupError):
    """No results JSON, or one written by an older notebook: tables say so instead of failing."""


def results_file(results_dir: Path, stem: str) -> Path:
    """``<results_dir>/<stem>.json``, or ``results_dir`` itself when it is a file."""
    p = Path(results_dir)
    return p if p.is_file() else p / f"{stem}.json"


def load(results_dir: Path, stem: str) -> dict:
    """The results JSON of notebook ``stem``; ``ResultsMissing`` naming the file when absent or not
    JSON."""
    p = results_file(results_dir, stem)
    if not p.is_file():
        raise ResultsMissing(f"{p} is missing: run `make reproduce` (or the {stem} notebook) to create it")
    try:
        return read_results(p)
    except ValueError as e:
        raise ResultsMissing(f"{p} is not valid JSON ({e}); re-run the {stem} notebook to rewrite it") from None


def maybe_load(results_dir: Path, stem: str) -> dict | None:
    try:
        return load(results_dir, stem)
    except ResultsMissing:
        return None


def missing(stem: str) -> str:
    return (f"_No results in the current format yet: run `make reproduce` (or the `{stem}` notebook on its "
            f"default profile) to write `results/{stem}.json`._")


def or_missing(stem: str):
    """Decorator: a table function that prints ``missing(stem)`` when its results are absent or old."""
    def wrap(fn):
        def table(results_dir: Path) -> str:
            try:
                return fn(results_dir)
            except ResultsMissing:
                return missing(stem)
        table.__doc__, table.__name__ = fn.__doc__, fn.__name__
        return table
    return wrap


def num(x, digits: int = 2) -> str:
    if x is None or x != x:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ci(est, lo, hi, digits: int = 2) -> str:
    return f"{num(est, digits)} [{num(lo, digits)}, {num(hi, digits)}]"


def ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


__all__ = ["ResultsMissing", "results_file", "load", "maybe_load", "missing", "or_missing", "num", "ci", "ok",
           "format_ci"]
