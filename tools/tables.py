"""Fill the generated tables of README.md and docs/*.md from results/*.json.

Every module of ``minilib.tables`` exposes ``TABLES``: a dict ``name -> function(results
dir) -> markdown``.  A document holds a block per table::

    <!-- table:dense_perplexity -->
    (whatever the function prints: never typed by hand)
    <!-- /table -->

    python -m tools.tables            # rewrite every stale block (README.md, docs/*.md)
    python -m tools.tables --check    # exit 1 listing stale or broken blocks; change nothing
    python -m tools.tables --list     # the table names and the modules that define them

A block naming no known table, a table function that fails (e.g. its results JSON is missing), an
unclosed or nested block are errors that name the file, the line and the table; in rewrite mode
such blocks are left as they are and the command exits 1.  tests/test_tables.py runs ``--check`` on
the repository, so a table that no longer matches its JSON fails ``make test``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from minilib.tables.common import ResultsMissing

ROOT = Path(__file__).resolve().parent.parent
OPEN = re.compile(r"<!--\s*table:([A-Za-z0-9_.:-]+)\s*-->")
CLOSE = re.compile(r"<!--\s*/table\s*-->")


class TableError(Exception):
    """A block that cannot be filled (unknown table, failing function, malformed markers)."""


@dataclass
class Block:
    name: str
    line: int      # 1-based line of the opening marker
    start: int     # offset just after the opening marker
    end: int       # offset of the closing marker


def collect_tables(package: str = "minilib.tables") -> dict[str, Callable[[Path], str]]:
    """Every ``TABLES`` entry of every module in ``package``; a name defined twice is an error."""
    pkg = importlib.import_module(package)
    found: dict[str, Callable] = {}
    where: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{package}.{info.name}")
        for name, fn in getattr(mod, "TABLES", {}).items():
            if name in found:
                raise TableError(f"table {name!r} is defined by both {where[name]} and {mod.__name__}")
            if not callable(fn):
                raise TableError(f"{mod.__name__}.TABLES[{name!r}] is not callable")
            found[name], where[name] = fn, mod.__name__
    return found


def find_blocks(text: str, source: str = "<text>") -> list[Block]:
    """The table blocks of ``text``, in order; malformed markers raise ``TableError``."""
    blocks, pos = [], 0
    while True:
        m = OPEN.search(text, pos)
        stray = CLOSE.search(text, pos)
        if stray and (not m or stray.start() < m.start()):
            raise TableError(f"{source}:{text.count(chr(10), 0, stray.start()) + 1}: '<!-- /table -->' "
                             f"without an opening '<!-- table:NAME -->'")
        if not m:
            return blocks
        line = text.count("\n", 0, m.start()) + 1
        close = CLOSE.search(text, m.end())
        if not close:
            raise TableError(f"{source}:{line}: block 'table:{m.group(1)}' is not closed by '<!-- /table -->'")
        inner = OPEN.search(text, m.end(), close.start())
        if inner:
            raise TableError(f"{source}:{line}: block 'table:{m.group(1)}' contains another block "
                             f"'table:{inner.group(1)}' before its '<!-- /table -->'")
        blocks.append(Block(m.group(1), line, m.end(), close.start()))
        pos = close.end()


def render(fn: Callable[[Path], str], name: str, results_dir: Path) -> str:
    try:
        out = fn(Path(results_dir))
    except (FileNotFoundError, ResultsMissing) as e:
        raise TableError(f"table {name!r}: its results JSON is missing or unreadable ({e})") from None
    except Exception as e:  # a table function that fails is named, not hidden
        raise TableError(f"table {name!r} failed: {type(e).__name__}: {e}") from None
    if not isinstance(out, str):
        raise TableError(f"table {name!r} returned {type(out).__name__}, not a markdown string")
    return out.strip("\n")


def fill(text: str, tables: dict[str, Callable[[Path], str]], results_dir: Path,
         source: str = "<text>") -> tuple[str, list[str], list[str]]:
    """``(new text, stale block descriptions, errors)``: every block's body replaced by
    ``"\\n" + table + "\\n"``; a block with an error keeps its old body."""
    stale, errors, out, pos = [], [], [], 0
    try:
        blocks = find_blocks(text, source)
    except TableError as e:
        return text, [], [str(e)]
    for b in blocks:
        out.append(text[pos:b.start])
        body = text[b.start:b.end]
        if b.name not in tables:
            errors.append(f"{source}:{b.line}: no table named {b.name!r} (known: {', '.join(sorted(tables))})")
            out.append(body)
        else:
            try:
                new = "\n" + render(tables[b.name], b.name, results_dir) + "\n"
            except TableError as e:
                errors.append(f"{source}:{b.line}: {e}")
                new = body
            if new != body:
                stale.append(f"{source}:{b.line}: table {b.name!r} does not match its results")
            out.append(new)
        pos = b.end
    out.append(text[pos:])
    return "".join(out), stale, errors


def documents(root: Path = ROOT) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def run(paths: list[Path], results_dir: Path, check: bool, tables=None) -> tuple[list[str], list[str]]:
    """Fill (or with ``check`` only inspect) ``paths``; returns (stale, errors)."""
    from minilib.io import write_text
    tables = collect_tables() if tables is None else tables
    all_stale, all_errors = [], []
    for p in paths:
        text = p.read_text(encoding="utf-8")
        try:
            rel = str(p.relative_to(ROOT))
        except ValueError:
            rel = str(p)
        new, stale, errors = fill(text, tables, results_dir, rel)
        all_stale += stale
        all_errors += errors
        if not check and new != text:
            write_text(p, new)
    return all_stale, all_errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="documents (default: README.md and docs/*.md)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a block is stale or broken; write nothing")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="results folder (default: results/)")
    ap.add_argument("--list", action="store_true", help="list the table names and exit")
    a = ap.parse_args(argv)
    tables = collect_tables()
    if a.list:
        for name, fn in sorted(tables.items()):
            print(f"{name}\t{fn.__module__}")
        return 0
    stale, errors = run(a.files or documents(), a.results, a.check, tables)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if a.check:
        for s in stale:
            print(f"stale: {s}", file=sys.stderr)
        if stale:
            print("run `python -m tools.tables` to regenerate them", file=sys.stderr)
        return 1 if stale or errors else 0
    for s in stale:
        print(f"updated: {s.replace(' does not match its results', '')}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
