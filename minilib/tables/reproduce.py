"""The wall times of the last ``make reproduce`` runs (``<results>/reproduce_runs.json``, written by
``minilib.runner.reproduce.write_timings``) as the README's timing tables."""

from __future__ import annotations

from pathlib import Path

from minilib.runner.reproduce import TIMINGS


def table_timings(results_dir: Path) -> str:
    """Markdown: the wall time of each notebook's last ``make reproduce`` run, their sum, and the
    wall clock of the call that ran them all (when one call did)."""
    from minilib.results import read_json
    path = Path(results_dir) / TIMINGS
    if not path.exists():
        raise ValueError(f"{path.name} is missing: run `make reproduce` (it writes the wall times of its runs)")
    d = read_json(path, "re-run `make reproduce` to rewrite it")
    if not isinstance(d, dict) or "runs" not in d:
        raise ValueError(f"{path.name} is in an older format: re-run `make reproduce`")
    cpu_known = any(isinstance(r.get("cpu_seconds"), (int, float)) for r in d["runs"])
    cpu_head = " CPU time (min) | share of its cores |" if cpu_known else ""
    named = any(r.get("cpu") for r in d["runs"])  # the CPU of each run (older files lack it)
    lines = ["| notebook | status |" + (" CPU |" if named else "") + " wall time (min) | threads | "
             "1-min load at start / end |" + cpu_head,
             "|---|---|---|---|---|" + ("---|" if named else "") + ("---|---|" if cpu_known else "")]
    total = cpu_total = 0.0
    blank = " | |" if cpu_known else ""

    def load(r):
        a, b = r.get("load_start"), r.get("load_end")
        return "" if a is None and b is None else f"{'?' if a is None else f'{a:.1f}'} / {'?' if b is None else f'{b:.1f}'}"

    def cpu(r):
        c, sec, th = r.get("cpu_seconds"), r.get("seconds"), r.get("threads") or 1
        if not cpu_known:
            return ""
        if not isinstance(c, (int, float)):
            return " | |"
        share = f"{c / (sec * th):.0%}" if sec else ""
        return f" {c / 60:.1f} | {share} |"

    for r in d["runs"]:
        sec = r.get("seconds")
        total += sec or 0.0
        cpu_total += r.get("cpu_seconds") or 0.0
        host = f" {r.get('cpu') or 'not recorded'} |" if named else ""
        lines.append(f"| `{r['notebook']}` | {r['status']} |{host} {'' if sec is None else f'{sec / 60:.1f}'} | "
                     f"{r.get('threads') or ''} | {load(r)} |{cpu(r)}")
    dev = "a CUDA GPU" if d.get("cuda") else f"{d.get('cpu_count')} CPU cores"
    pad = " |" if named else ""
    lines.append(f"| **sum of the notebooks' times** | |{pad} **{total / 60:.0f}** | | |"
                 + (f" **{cpu_total / 60:.0f}** | |" if cpu_known else ""))
    span, inv = wall_clock(d), d.get("invocation") or {}
    where = f" ({inv['where']})" if inv.get("where") else ""
    if span is not None:
        lines.append(f"| **`make reproduce`, first start to last finish**{where} | |{pad} **{span / 60:.0f}** | | |"
                     + blank)
    elif inv.get("ran") and inv["ran"] < len(d["runs"]):
        lines += ["", f"The last invocation ran {inv['ran']} of these {len(d['runs'])} notebooks (`reproduce --only`, "
                  f"{inv.get('where', '')}); the other rows are kept from earlier invocations, so no single wall "
                  "clock is shown."]
    cpu_note = (" CPU time is the notebook process's and its kernel's (user + system); its share of the run's "
                "threads x wall time below about 90% means the run waited for a core (a shared machine)."
                if cpu_known else "")
    return (f"Wall times of the last `make reproduce` runs (profile `{d['profile']}`, {dev}; fine-tuned models and "
            f"anatomy statistics come from the cache when present, so a first run on a fresh machine takes "
            f"longer).{cpu_note}\n\n" + "\n".join(lines))


def wall_clock(timings: dict) -> float | None:
    """Seconds from the first notebook's start to the last one's finish, when that measures one
    ``make reproduce``: every notebook done, and either one call ran them all (``invocation``) or
    the notebooks overlapped (the span is below the sum of their times, so no idle gap between calls
    is inside it).  None otherwise."""
    runs = timings.get("runs") or []
    if not runs or any(r.get("status") != "done" or r.get("started") is None or r.get("finished") is None
                       for r in runs):
        return None
    span = max(r["finished"] for r in runs) - min(r["started"] for r in runs)
    inv = timings.get("invocation") or {}
    one_call = inv.get("ran") == len(runs)
    return span if one_call or span < sum(r.get("seconds") or 0.0 for r in runs) else None


TABLES = {"reproduce_timings": table_timings,
          "reproduce_timings_test": lambda results_dir: table_timings(Path(results_dir) / "test")}
