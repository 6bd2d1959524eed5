"""Record every committed version of ``results/SparseGPT_one_shot.json`` into
``results/SparseGPT_one_shot_history.json``, so that the across-runs table of the README
(``sparsegpt_across_runs``) is generated from data, not typed:

    .venv/bin/python -m tools.results_history            # (re)write the history from git
    .venv/bin/python -m tools.results_history --check    # exit 1 if it is stale; change nothing

Each version is read with ``git show <commit>:results/SparseGPT_one_shot.json`` and reduced by
``minilib.tables.sparsegpt.run_summary`` (the current analysis code); versions whose protocol differs
from the current file's, or that the current code cannot read (written by an older notebook), are
left out and listed on stderr.  The working tree's file is recorded as well when it differs from the
last commit's, under ``"commit": "uncommitted"``.  Needs the git history (not a shallow clone).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from minilib.io import write_text
from minilib.tables.common import ResultsMissing
from minilib.tables.sparsegpt import HISTORY, NOTEBOOK, protocol, run_summary

ROOT = Path(__file__).resolve().parent.parent
RESULTS = f"results/{NOTEBOOK}.json"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def versions() -> list[tuple[str, str, dict]]:
    """(short commit, commit date, results dict) of every commit that changed the results file, oldest
    first."""
    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        raise SystemExit("tools.results_history: this clone is shallow; the history needs `git fetch --unshallow`")
    out = []
    for line in reversed(_git("log", "--format=%h %ad", "--date=short", "--", RESULTS).splitlines()):
        commit, date = line.split()
        out.append((commit, date, json.loads(_git("show", f"{commit}:{RESULTS}"))))
    return out


def build() -> dict:
    current = json.loads((ROOT / RESULTS).read_text())
    want = protocol(current)
    found = versions()
    if not found or found[-1][2] != current:
        found.append(("uncommitted", "", current))
    runs = []
    for commit, date, res in found:
        try:
            if protocol(res) != want:
                print(f"{commit}: another protocol ({protocol(res)}), left out", file=sys.stderr)
                continue
            runs.append({"commit": commit, "date": date, "summary": run_summary(res)})
        except (ResultsMissing, KeyError) as e:
            print(f"{commit}: written by an older notebook ({type(e).__name__}: {e}), left out", file=sys.stderr)
    return {"notebook": NOTEBOOK, "source": RESULTS, "protocol": want, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.results_history", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the history file is stale; write nothing")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=1, sort_keys=True) + "\n"
    path = ROOT / "results" / f"{HISTORY}.json"
    if args.check:
        if not path.is_file() or path.read_text() != text:
            print(f"{path.relative_to(ROOT)} is stale: run .venv/bin/python -m tools.results_history", file=sys.stderr)
            return 1
        return 0
    write_text(path, text)
    print(f"wrote {path.relative_to(ROOT)} ({len(json.loads(text)['runs'])} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
