"""Tables of docs/sparsegpt.md and the README from ``results/SparseGPT_one_shot.json``: perplexity per
method and setting (over calibration seeds), the paired comparisons at both levels of replication,
layer errors, the calibration-budget sweep, the verdicts (one Holm family), and the composition."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from minilib.prune.methods import METHODS
from minilib.stats import describe, format_p, wilson_interval
from minilib.studies.sparsegpt import (NOTEBOOK, OWL_CLAIM_SPARSITY, allocation_summary, budget_summary,
                                       error_summary, is_calibrated, method_label, setting_label, setting_summary, split_method, verdict_block)
from minilib.tables.common import ResultsMissing, ci, load, num, or_missing

label = method_label
_calibrated = is_calibrated


def run_methods(res: dict, runs: pd.DataFrame) -> list[str]:
    """The methods of a results file, dense excluded: solvers first, then the other calibrated methods,
    then those without calibration, each group in the notebook's order (its ``methods`` parameter;
    files written before it: registry order)."""
    present = [m for m in dict.fromkeys(runs.method) if m != "dense"]
    order = list(res["parameters"].get("methods") or METHODS)
    found = [m for m in order if m in present] + [m for m in present if m not in order]
    def key(m):
        base, alloc = split_method(m)
        return not (base in METHODS and METHODS[base].solver), not _calibrated(base), alloc != "uniform"
    return sorted(found, key=key)


def _records(res: dict, kind: str, need: tuple = ()) -> pd.DataFrame:
    df = pd.DataFrame([r for r in res.get("records", []) if r.get("kind") == kind])
    missing = [c for c in need if c not in df]
    if not len(df) or missing:
        raise ResultsMissing(f"{NOTEBOOK}.json has no {kind!r} records with {list(need)} (missing {missing}); it was "
                             "written by an older notebook: re-run make reproduce")
    return df


def _runs(res: dict) -> pd.DataFrame:
    runs = _records(res, "run", ("perplexity", "ppl_low", "ppl_high", "nll"))
    if "seed" not in runs:   # written before the comparison ran over seeds: one calibration draw
        runs["seed"] = [None if m == "dense" or not _calibrated(m) else res["parameters"].get("seed", 0)
                        for m in runs.method]
    return runs


def _budget(res: dict) -> pd.DataFrame | None:
    try:
        return _records(res, "budget", ("seed", "budget", "tokens", "method", "perplexity", "nll"))
    except ResultsMissing:
        return None


def _seeds_of(runs: pd.DataFrame) -> list[int]:
    return sorted({int(s) for s, m in zip(runs.seed, runs.method) if m != "dense" and _calibrated(m) and s == s
                   and s is not None})


def sizes(res: dict, runs: pd.DataFrame) -> str:
    """The sizes every table of this study states: calibration, seeds, evaluation."""
    p = res["parameters"]
    seeds = _seeds_of(runs)
    return (f"{p['model']}, our protocol: calibration {p['nsamples']} x {p['seqlen']} tokens of {p['calib_corpus']} "
            f"per draw, {len(seeds)} calibration seed(s) ({', '.join(map(str, seeds))}); perplexity on "
            f"{int(runs.eval_windows.iloc[0])} x {int(runs.eval_seqlen.iloc[0])} held-out {p['eval_corpus']} test "
            "tokens")


@or_missing(NOTEBOOK)
def table_runs(results_dir: Path) -> str:
    """Perplexity per method and setting: geometric mean over calibration seeds with its t-interval
    (a single run: its t-interval over windows)."""
    res = load(results_dir, NOTEBOOK)
    runs = _runs(res)
    p = res["parameters"]
    summ = setting_summary(runs)
    meths = run_methods(res, runs)
    uncal = [label(m) for m in meths if not _calibrated(m)] + ["dense"]
    lines = [sizes(res, runs) + ". Perplexity: geometric mean over calibration seeds with its 95% t-interval "
             f"over seeds ({' and '.join(uncal)} need no calibration: one run, 95% t-interval over windows).", "",
             "| setting | " + " | ".join(label(m) for m in meths) + " |", "|---|" + "---|" * len(meths)]
    d = summ[summ.method == "dense"].iloc[0]
    lines.append(f"| dense | {ci(d.ppl, d.low, d.high)} |" + " |" * (len(meths) - 1))
    for (s, nm), g in summ[summ.method != "dense"].groupby(["sparsity", "nm"], sort=True):
        cells = []
        for meth in meths:
            r = g[g.method == meth]
            cells.append(ci(r.ppl.iloc[0], r.low.iloc[0], r.high.iloc[0]) if len(r) else "")
        lines.append(f"| {setting_label(s, nm)} | " + " | ".join(cells) + " |")
    if "acc" in runs:
        m = runs[runs.acc.notna()]
        lines += ["", f"Zero-shot {p['mcq_set']} accuracy of the detailed runs ({int(m.mcq_n.iloc[0])} items, one "
                  "calibration draw, 95% Wilson interval):", "", "| model | acc |", "|---|---|"]
        for r in m.itertuples():
            lo, hi = wilson_interval(round(r.acc * r.mcq_n), int(r.mcq_n))
            name = "dense" if r.method == "dense" else f"{r.sparsity:.0%} {r.method}"
            lines.append(f"| {name} | {ci(r.acc, lo, hi, 3)} |")
    return "\n".join(lines)


def _outcome_words(e: dict) -> str:
    a, b = label(e["a"]), label(e["b"])
    return {"a lower": f"{a} lower", "a higher": f"{b} lower", "not resolved": "not resolved",
            "too few to test": "too few to test"}[e["outcome"]]


def _entries(res: dict) -> list[dict]:
    return verdict_block(_runs(res), _budget(res))


@or_missing(NOTEBOOK)
def table_order(results_dir: Path) -> str:
    """Every comparison of the verdict block with both levels of replication and the joint outcome."""
    res = load(results_dir, NOTEBOOK)
    lines = ["| comparison | over calibration seeds (t, log ratio) | over evaluation windows (paired t) | "
             "Holm p (seeds / windows) | outcome |", "|---|---|---|---|---|"]
    for e in _entries(res):
        s, w = e["seeds"], e["windows"]
        lines.append(f"| {e['setting']}: {label(e['a'])} / {label(e['b'])} | {ci(s.estimate, s.low, s.high, 3)} "
                     f"(n = {s.n}) | {ci(w.estimate, w.low, w.high, 3)} (n = {w.n}) | {num(s.p_adj, 3)} / "
                     f"{num(w.p_adj, 3)} | {_outcome_words(e)} |")
    return "\n".join(lines)


@or_missing(NOTEBOOK)
def table_errors(results_dir: Path) -> str:
    """In-sample and held-out relative reconstruction error per method (mean over layers, bootstrap
    interval over layers) and each method's error relative to SparseGPT's."""
    res = load(results_dir, NOTEBOOK)
    layers = _records(res, "layer", ("rel_error", "heldout_rel_error", "method"))
    es = error_summary(layers)
    lines = ["One calibration draw (the detailed runs); intervals over layers describe the layer-to-layer spread, "
             "not a replication.", "",
             "| method | in-sample error | held-out error | in-sample / SparseGPT | held-out / SparseGPT |",
             "|---|---|---|---|---|"]
    for r in es.to_dict("records"):
        rel = [(ci(r[f"{k}_vs_sgpt"], r[f"{k}_vs_sgpt_low"], r[f"{k}_vs_sgpt_high"]) if f"{k}_vs_sgpt" in r
                and r[f"{k}_vs_sgpt"] == r[f"{k}_vs_sgpt"] else "1") for k in ("in_sample", "heldout")]
        lines.append(f"| {r['method']} | {ci(r['in_sample'], r['in_sample_low'], r['in_sample_high'], 4)} | "
                     f"{ci(r['heldout'], r['heldout_low'], r['heldout_high'], 4)} | {rel[0]} | {rel[1]} |")
    return "\n".join(lines)


@or_missing(NOTEBOOK)
def table_budget(results_dir: Path) -> str:
    """Perplexity over calibration budgets (geometric mean over seeds, t-interval), SparseGPT / Wanda
    at both levels of replication, and the outcome (decided in the verdict block's family)."""
    res = load(results_dir, NOTEBOOK)
    b = _budget(res)
    if b is None:
        raise ResultsMissing("no budget records")
    s = budget_summary(b)
    seqlen = int(b.tokens.iloc[0] // b.budget.iloc[0])
    lines = [f"Budgets of {seqlen}-token windows of `{res['parameters']['budget_corpus']}` (shorter than the paper's "
             "2,048 on CPU), nested per seed; perplexity on the same windows as above.", "",
             "| budget (windows x tokens) | seeds | SparseGPT | Wanda | SparseGPT / Wanda over seeds | over eval "
             "windows | seeds SparseGPT lower | outcome |", "|---|---|---|---|---|---|---|---|"]
    for e in [e for e in _entries(res) if e["block"] == "budget"]:
        bud = e["key"]["budget"]
        cells = []
        for meth in ("sparsegpt", "wanda"):
            x = s[(s.budget == bud) & (s.method == meth)].iloc[0]
            cells.append(ci(x.ppl, x.low, x.high))
        sd, w = e["seeds"], e["windows"]
        lines.append(f"| {bud} x {seqlen} = {bud * seqlen:,} | {sd.n} | {cells[0]} | {cells[1]} | "
                     f"{ci(sd.estimate, sd.low, sd.high, 3)} | {ci(w.estimate, w.low, w.high, 3)} | "
                     f"{e['a_wins']} of {sd.n} | {_outcome_words(e)} |")
    return "\n".join(lines)


def _sentence(e: dict) -> str:
    a, b = label(e["a"]), label(e["b"])
    where = f"{e['setting']}" if e["block"] == "setting" else f"{e['setting']} (budget sweep, 50% unstructured)"
    claim = {"a lower": f"**{a} has a lower perplexity than {b}**", "a higher": f"**{b} has a lower perplexity than {a}**",
             "not resolved": f"{a} and {b} are **not resolved** apart",
             "too few to test": f"{a} against {b}: **too few to test**"}[e["outcome"]]
    return (f"* {where}: {claim}. Over calibration seeds: {describe(e['seeds'])}. Over evaluation windows: "
            f"{describe(e['windows'])}.")


def _owl_sentence(entries: list[dict]) -> str:
    """One line on OWL against uniform sparsity (``allocation_summary``), and whether the paper's 70%
    claim holds here, method by method; '' when no OWL run was compared."""
    summary = allocation_summary(entries)
    if not summary:
        return ""
    parts, claims = [], []
    for d in summary:
        name = label(f"{d['method']}+owl")
        said = [f"{k} at {', '.join(f'{s:.0%}' for s in d[k])}"
                for k in ("lower", "higher", "not resolved", "too few to test") if d[k]]
        parts.append(f"{name} is {'; '.join(said)}")
        claims.append(f"{d['claim']} for {label(d['method'])}")
    return (f"* **In short, OWL against uniform sparsity** (same method, same calibration draws; 'lower' = OWL has "
            f"the lower perplexity): {'. '.join(parts)}. OWL's claim on LLaMA-7B, lower perplexity at "
            f"{OWL_CLAIM_SPARSITY:.0%} for Wanda and SparseGPT: {', '.join(claims)} on this model and protocol.")


@or_missing(NOTEBOOK)
def table_verdict(results_dir: Path) -> str:
    """The conclusions the evidence supports: every comparison at both levels of replication, one
    Holm family over the block; a comparison is resolved only where both levels resolve it."""
    res = load(results_dir, NOTEBOOK)
    runs = _runs(res)
    entries = _entries(res)
    fam = entries[0]["seeds"].family if entries else 0
    out = [f"{sizes(res, runs)}. One multiple-comparison family: the {fam} tests below (Holm); a comparison counts "
           "as resolved only where the calibration seeds and the evaluation windows both resolve it in the same "
           "direction; 'resolvable' is the smallest effect each test would detect with 80% power at the "
           "family's Bonferroni level."]
    out += [_sentence(e) for e in entries]
    owl = _owl_sentence(entries)
    if owl:
        out.append(owl)
    try:
        layers = _records(res, "layer", ("rel_error", "heldout_rel_error"))
    except ResultsMissing:
        layers = None
    if layers is not None:
        es = error_summary(layers).set_index("method")
        if "wanda" in es.index and "in_sample_vs_sgpt" in es:
            w = es.loc["wanda"]
            out.append(f"* Described, not tested (one calibration draw): Wanda's layer error is "
                       f"{ci(w.in_sample_vs_sgpt, w.in_sample_vs_sgpt_low, w.in_sample_vs_sgpt_high)} x SparseGPT's "
                       f"on the calibration inputs (in-sample, what SparseGPT minimises) and "
                       f"{ci(w.heldout_vs_sgpt, w.heldout_vs_sgpt_low, w.heldout_vs_sgpt_high)} x on held-out "
                       "inputs (geometric mean over layers, bootstrap over layers).")
    return "\n".join(out)


@or_missing(NOTEBOOK)
def table_composition(results_dir: Path) -> str:
    """Joint quantization and composition with structured FFN pruning (one calibration draw)."""
    res = load(results_dir, NOTEBOOK)
    c = _records(res, "composition", ("setting", "perplexity", "ppl_low", "ppl_high"))
    lines = ["| setting | params | nonzeros | perplexity (one calibration draw, t-interval over windows) |",
             "|---|---|---|---|"]
    for r in c.itertuples():
        lines.append(f"| {r.setting} | {r.params:,} | {r.nonzeros:,} | {ci(r.perplexity, r.ppl_low, r.ppl_high)} |")
    return "\n".join(lines)


def table_methods(results_dir: Path | None = None) -> str:
    """The one-shot methods of the registry (``minilib.prune.methods``): not a result, the same for
    every results folder."""
    lines = ["| method | statistic | pruned by | options (default) | scores | reference |", "|---|---|---|---|---|---|"]
    for m in METHODS.values():
        how = "OBS solver (reconstructs)" if m.solver else f"lowest per {m.compare}"
        opts = ", ".join(f"`{k}` ({o.default!r}): {o.help}" for k, o in m.options.items()) or "none"
        stat = f"`{m.statistic}`" + (" (by its options: `statistic_for`)" if m.statistic_of else "")
        lines.append(f"| `{m.name}` ({m.label}) | {stat} | {how} | {opts} | {m.summary.replace('|', chr(92) + '|')} "
                     f"| {m.reference} |")
    return "\n".join(lines)


# --- the same protocol across runs --------------------------------------------------------------

HISTORY = f"{NOTEBOOK}_history"   # results/SparseGPT_one_shot_history.json (tools/results_history.py)
PROTOCOL = ("model", "nsamples", "seqlen", "calib_corpus", "eval_corpus")  # what makes two runs comparable


def protocol(res: dict) -> dict:
    """What two runs must share for their verdicts to be the same claim: the parameters ``PROTOCOL``,
    the calibration seeds and the evaluation windows."""
    runs = _runs(res)
    p = res["parameters"]
    return {**{k: p.get(k) for k in PROTOCOL}, "seeds": _seeds_of(runs),
            "eval_windows": int(runs.eval_windows.iloc[0]), "eval_seqlen": int(runs.eval_seqlen.iloc[0])}


def _test_dict(t) -> dict:
    return {k: float(getattr(t, k)) for k in ("estimate", "low", "high", "p_adj")} | {"n": int(t.n),
                                                                                     "family": int(t.family)}


def run_summary(res: dict) -> dict:
    """One run of the notebook reduced to what the across-runs table prints, analysed with the current
    code: its protocol, the host (``numerics``), every verdict entry at both levels, and the perplexity
    per method and setting."""
    runs = _runs(res)
    num_ = res.get("numerics") or {}
    entries = [{"setting": e["setting"], "block": e["block"], "a": e["a"], "b": e["b"], "outcome": e["outcome"],
                "seeds": _test_dict(e["seeds"]), "windows": _test_dict(e["windows"])} for e in _entries(res)]
    ppl = [{"method": r["method"], "setting": "dense" if r["method"] == "dense" else setting_label(r["sparsity"], r["nm"]),
            "ppl": float(r["ppl"]), "low": float(r["low"]), "high": float(r["high"]), "runs": int(r["runs"])}
           for r in setting_summary(runs).to_dict("records")]
    return {"protocol": protocol(res), "cpu": num_.get("cpu"), "threads": num_.get("threads"), "entries": entries,
            "perplexity": ppl}


def _entry_key(e: dict) -> tuple:
    return e["block"], e["setting"], e["a"], e["b"]


def _history(results_dir: Path) -> tuple[dict, list[dict]]:
    """The current results and the recorded runs of the same protocol (oldest first); the current run is
    the history's last entry when it was recorded, else it is appended."""
    res = load(results_dir, NOTEBOOK)
    hist = load(results_dir, HISTORY)
    now = run_summary(res)
    runs = [r for r in hist.get("runs", []) if r["summary"]["protocol"] == now["protocol"]]
    if not runs or runs[-1]["summary"] != now:
        runs.append({"commit": "this results file", "date": "", "summary": now})
    return res, runs


@or_missing(HISTORY)
def table_across_runs(results_dir: Path) -> str:
    """Every recorded run of the current protocol (``tools/results_history.py`` reads them from git),
    re-analysed with the current code: per comparison, the seed-level ratio, its Holm p in that run's
    family, and the joint outcome; then, per comparison, whether the outcome held in every run; and the
    perplexities that need no calibration, which should agree across hosts."""
    res, runs = _history(results_dir)
    keys = list(dict.fromkeys(_entry_key(e) for r in runs for e in r["summary"]["entries"]))
    host = [f"{r['date']} {r['commit']}".strip() + f" ({r['summary']['cpu'] or 'host not recorded'})" for r in runs]
    out = [f"{sizes(res, _runs(res))}. {len(runs)} run(s) of this protocol recorded in git "
           f"(`results/{HISTORY}.json`), each re-analysed with the current code in its own family; a cell is the "
           "ratio over calibration seeds, its Holm p, and the joint outcome (both levels).", "",
           "| comparison | " + " | ".join(host) + " |", "|---|" + "---|" * len(runs)]
    held = []
    for k in keys:
        cells, outcomes = [], []
        for r in runs:
            e = next((e for e in r["summary"]["entries"] if _entry_key(e) == k), None)
            if e is None:
                cells.append("not run")
                continue
            s = e["seeds"]
            outcomes.append(_outcome_words(e))
            cells.append(f"{num(s['estimate'], 3)} (p {format_p(s['p_adj'])} of {s['family']}): {outcomes[-1]}")
        name = f"{k[1]}{' (budget sweep)' if k[0] == 'budget' else ''}: {label(k[2])} / {label(k[3])}"
        out.append(f"| {name} | " + " | ".join(cells) + " |")
        same = len(set(outcomes)) == 1
        held.append(f"* {name}: " + (f"**{outcomes[0]} in all {len(outcomes)} run(s)**" if same else
                    "**the outcome differs between runs** (" + ", ".join(
                        f"{o}: {outcomes.count(o)}" for o in dict.fromkeys(outcomes)) + "): read it as not resolved"))
    out += ["", *held]
    fixed = {}
    for r in runs:
        for x in r["summary"]["perplexity"]:
            if not _calibrated(x["method"]):
                fixed.setdefault((x["method"], x["setting"]), []).append(x["ppl"])
    if fixed:
        agree = [f"{m if m == 'dense' else f'{label(m)} {st}'} " + (
                 "ran in one run only" if len(vals) == 1 else f"agrees to the printed digits in {len(vals)} runs"
                 if len({num(v) for v in vals}) == 1 else "differs: " + ", ".join(num(v) for v in vals))
                 for (m, st), vals in fixed.items()]
        out.append("* Without calibration (no calibration pass, deterministic): " + "; ".join(agree) + ".")
    return "\n".join(out)


TABLES = {"prune_methods": table_methods, "sparsegpt_runs": table_runs, "sparsegpt_order": table_order, "sparsegpt_errors": table_errors,
          "sparsegpt_budget": table_budget, "sparsegpt_verdict": table_verdict,
          "sparsegpt_composition": table_composition,
          "sparsegpt_across_runs": table_across_runs}
