"""The SparseGPT study: one-shot pruning (magnitude, Wanda, SparseGPT), N:M, joint quantization,
composition with structured FFN-neuron removal, held-out reconstruction errors and a
calibration-budget sweep.

* ``run_setting`` is one experiment -- load, (shrink FFNs), prune, evaluate -> one tidy row with the
  perplexity, its 95% bootstrap interval over the evaluation windows and the NLL of every window (so
  that two rows on the same windows can be compared paired).
* ``calibration_pool`` / ``budget_windows``: calibration text from one or several embedded corpora
  (``"c4"``, ``"c4+wiki"``), cut into non-overlapping windows; a seed picks a random order of the
  windows and a budget of ``n`` takes the first ``n`` (budgets are nested for one seed).
* ``budget_sweep``: SparseGPT and Wanda at one sparsity over calibration budgets and seeds, every run
  scored on the same evaluation windows.
* Analysis (pure functions of the records, tested on synthetic data): ``pairwise``,
  ``error_summary``, ``budget_summary``, ``budget_verdicts``; ``TABLES`` turns the results JSON of the
  notebook into the markdown tables of docs/sparsegpt.md (``python -m tools.tables``).

Uncertainty: perplexities carry a percentile bootstrap over evaluation windows; comparisons between
methods of one calibration set are paired over the same windows; comparisons across calibration
samples use a Student-t interval over seeds of the paired log-perplexity difference
(``minilib.stats``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from minilib.device import Timer, resolve_device
from minilib.eval import count_parameters, mcq_accuracy
from minilib.eval.perplexity import perplexity_ci, perplexity_ratio_ci
from minilib.models import load
from minilib.models.adapters import Adapter, adapter_for
from minilib.prune.apply import remove_neurons
from minilib.prune.masks import parse_nm
from minilib.prune.oneshot import prune_model
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_maxprod
from minilib.stats import bootstrap_ci, t_interval, wilson_interval

NOTEBOOK = "SparseGPT_one_shot"


@torch.no_grad()
def shrink_ffns(model: nn.Module, keep_fraction: float, multiple_of: int = 8,
                adapter: Adapter | None = None) -> PruneReport:
    """Keep the top ``keep_fraction`` FFN neurons of every block (by ``score_neurons_maxprod``),
    rounded to a multiple of ``multiple_of`` so that N:M patterns still fit the down projection."""
    if isinstance(keep_fraction, bool) or not 0 < float(keep_fraction) <= 1:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    adapter = adapter or adapter_for(model)
    masks = []
    for s in score_neurons_maxprod(model):
        width = len(s)
        keep_n = min(width, max(multiple_of, int(round(width * keep_fraction / multiple_of)) * multiple_of))
        prune = torch.ones(width, dtype=torch.bool)
        prune[torch.topk(s, keep_n).indices] = False
        masks.append(prune)
    return remove_neurons(model, masks, method="ffn-maxprod", target={"keep_fraction": float(keep_fraction)})


# --- calibration text ----------------------------------------------------------------------------

_SPLITS: dict = {}  # (id(tokenizer), corpus) -> (tokenizer, TokenSplits): tokenize each corpus once per process


def corpus_part(tokenizer, corpora: str, split: str = "calib") -> torch.Tensor:
    """The ``split`` part (``minilib.data.corpus_splits``) of one corpus, or of several joined by
    ``+`` (``"c4+wiki"``), concatenated in the order given.  Each corpus is tokenized once per
    tokenizer and process."""
    from minilib.data import corpus_splits
    names = [c.strip() for c in str(corpora).split("+")]
    if not all(names):
        raise ValueError(f"corpora must name one corpus or several joined by '+', e.g. 'c4+wiki'; got {corpora!r}")
    parts = []
    for c in names:
        hit = _SPLITS.get((id(tokenizer), c))
        if hit is None or hit[0] is not tokenizer:
            hit = _SPLITS[(id(tokenizer), c)] = (tokenizer, corpus_splits(tokenizer, c))
        parts.append(hit[1][split])
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def calibration_pool(tokenizer, corpora: str = "c4", seqlen: int = 256) -> torch.Tensor:
    """Every non-overlapping window ``[slots, seqlen]`` of the calibration split of ``corpora``."""
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise ValueError(f"seqlen must be an integer >= 2, got {seqlen!r}")
    ids = corpus_part(tokenizer, corpora, "calib")
    slots = len(ids) // seqlen
    if slots < 1:
        raise ValueError(f"the calib split of {corpora!r} has {len(ids)} tokens, too short for one window of {seqlen}")
    return ids[: slots * seqlen].view(slots, seqlen)


def budget_windows(pool: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct windows of ``pool`` (``calibration_pool``): the first ``n`` of a random order
    fixed by ``seed``, so that for one seed a smaller budget is a subset of a larger one."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"budget n must be an integer >= 1 window, got {n!r}")
    if n > len(pool):
        raise ValueError(f"a budget of {n} windows needs {n} non-overlapping windows of {pool.shape[1]} tokens, "
                         f"but the calibration text holds only {len(pool)}; join more corpora (e.g. "
                         f"budget_corpus='c4+wiki') or use shorter windows")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed)))
    return pool[order[:n]]


# --- one experiment -------------------------------------------------------------------------------

def run_setting(model_name: str, method: str | None, test_ids: torch.Tensor, calib: torch.Tensor | None = None,
                sparsity: float = 0.5, nm: str | tuple | None = None, wbits: int = 16, ffn_keep: float | None = None,
                eval_seqlen: int = 512, eval_windows: int | None = 8, mcq_items=None, device: str = "auto",
                **prune_kwargs) -> tuple[dict, PruneReport | None]:
    """Prune a fresh copy of ``model_name`` with ``method`` (``None``: dense) and evaluate it.

    Returns a row ``{method, sparsity, nm, wbits, ffn_keep, perplexity, ppl_low, ppl_high, nll (per
    window), eval_windows, eval_seqlen, achieved_sparsity, mean_rel_error, [mean_heldout_rel_error],
    params, nonzeros, prune_s, [acc, acc_norm, mcq_n]}`` and the ``PruneReport``.  Extra keyword
    arguments go to ``prune_model`` (e.g. ``heldout=``, ``measure_error=``, ``forward_dtype=``)."""
    model, tokenizer, _ = load(model_name, device=device)
    nm = parse_nm(nm)
    row = {"method": method or "dense", "sparsity": (nm[0] / nm[1] if nm else sparsity) if method else 0.0,
           "nm": f"{nm[0]}:{nm[1]}" if nm and method else "", "wbits": wbits if method else 16,
           "ffn_keep": ffn_keep or 1.0}
    if ffn_keep:
        shrink_ffns(model, ffn_keep)
    report = None
    timer = Timer(resolve_device(device))
    with timer("prune_s"):
        if method:
            report = prune_model(model, method, sparsity, nm=nm, wbits=wbits, calib=calib, device=device,
                                 **prune_kwargs)
    if report is not None:
        row.update(achieved_sparsity=report.overall["sparsity"], mean_rel_error=report.overall["mean_rel_error"])
        if "heldout_rel_error" in report.layers:
            row["mean_heldout_rel_error"] = float(report.layers["heldout_rel_error"].mean())
    row["prune_s"] = timer.totals["prune_s"]
    params, nonzeros = count_parameters(model)
    ppl = perplexity_ci(model, test_ids, eval_seqlen, max_windows=eval_windows or None)
    row.update(params=params, nonzeros=nonzeros, perplexity=ppl["ppl"], ppl_low=ppl["ci95_low"],
               ppl_high=ppl["ci95_high"], eval_windows=ppl["windows"], eval_seqlen=ppl["seqlen"], nll=ppl["nll"])
    if mcq_items:
        acc = mcq_accuracy(model, tokenizer, mcq_items)
        row.update(acc=acc["acc"], acc_norm=acc["acc_norm"], mcq_n=acc["n"])
    del model
    return row, report


def budget_sweep(model_name: str, test_ids: torch.Tensor, pool: torch.Tensor, budgets: list[int], seeds: list[int],
                 methods=("sparsegpt", "wanda"), sparsity: float = 0.5, eval_seqlen: int = 512,
                 eval_windows: int | None = 8, device: str = "auto", progress: bool = True,
                 **prune_kwargs) -> list[dict]:
    """Every method at ``sparsity`` for every calibration budget (windows of ``pool``) and seed, each
    run on a fresh model and scored on the same evaluation windows.  One record per run: ``seed,
    budget (windows), tokens, method, perplexity, ppl_low, ppl_high, nll (per window), prune_s``.
    No layer errors are measured (``measure_error=False``) unless ``prune_kwargs`` asks for them."""
    from tqdm.auto import tqdm
    if not budgets or not seeds:
        raise ValueError(f"budget_sweep needs at least one budget and one seed, got budgets={budgets}, seeds={seeds}")
    for b in budgets:
        budget_windows(pool, b, 0)  # every budget fits the pool, checked before any compute
    runs = [(s, b, m) for s in seeds for b in sorted(budgets) for m in methods]
    out = []
    for seed, b, meth in tqdm(runs, desc="budget sweep", disable=not progress):
        calib = budget_windows(pool, b, seed)
        row, _ = run_setting(model_name, meth, test_ids, calib=calib, sparsity=sparsity, eval_seqlen=eval_seqlen,
                             eval_windows=eval_windows, device=device, **{"measure_error": False, **prune_kwargs})
        out.append({"seed": seed, "budget": b, "tokens": int(calib.numel()), **row})
    return out


# --- analysis (pure functions of the records) -----------------------------------------------------

def _per_window(row: dict) -> np.ndarray:
    return np.asarray(row["nll"], float) / (int(row["eval_seqlen"]) - 1)


def pairwise(runs: pd.DataFrame, a: str, b: str, by=("sparsity", "nm")) -> pd.DataFrame:
    """``ppl(a) / ppl(b)`` per setting (``by``) with a paired bootstrap interval over the evaluation
    windows both were scored on (same calibration set); ``verdict`` says which is lower where the
    interval excludes 1."""
    rows = []
    for key, g in runs.groupby(list(by), sort=True):
        ra, rb = g[g.method == a], g[g.method == b]
        if not len(ra) or not len(rb):
            continue
        ra, rb = ra.iloc[0].to_dict(), rb.iloc[0].to_dict()
        ci = perplexity_ratio_ci({"nll": ra["nll"], "seqlen": int(ra["eval_seqlen"])},
                                 {"nll": rb["nll"], "seqlen": int(rb["eval_seqlen"])})
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "a": a, "b": b,
                     "ratio": ci.estimate, "low": ci.low, "high": ci.high, "verdict": _verdict(a, b, ci.low, ci.high)})
    return pd.DataFrame(rows)


def _verdict(a: str, b: str, low: float, high: float, one: float = 1.0) -> str:
    if high < one:
        return f"{a} lower"
    if low > one:
        return f"{b} lower"
    return "not resolved"


def error_summary(layers: pd.DataFrame, methods=("sparsegpt", "wanda", "magnitude")) -> pd.DataFrame:
    """Per method: mean relative reconstruction error over layers on the calibration inputs (in-sample)
    and on held-out inputs, each with a bootstrap interval over layers; and the ratio of each method's
    error to SparseGPT's (paired over the same layers, geometric mean of per-layer ratios)."""
    rows = []
    ref = layers[layers.method == "sparsegpt"].set_index(["block", "layer"])
    for meth in methods:
        g = layers[layers.method == meth].set_index(["block", "layer"])
        if not len(g):
            continue
        row = {"method": meth, "layers": len(g)}
        for col, name in (("rel_error", "in_sample"), ("heldout_rel_error", "heldout")):
            if col not in g or g[col].isna().all():
                continue
            ci = bootstrap_ci(g[col].to_numpy(float))
            row.update({name: ci.estimate, f"{name}_low": ci.low, f"{name}_high": ci.high})
            if meth != "sparsegpt" and col in ref and ref[col].notna().all():
                j = g[[col]].join(ref[[col]], rsuffix="_ref", how="inner")
                lr = bootstrap_ci(np.log(j[col].to_numpy(float)), paired=np.log(j[col + "_ref"].to_numpy(float)))
                row.update({f"{name}_vs_sgpt": math.exp(lr.estimate), f"{name}_vs_sgpt_low": math.exp(lr.low),
                            f"{name}_vs_sgpt_high": math.exp(lr.high)})
        rows.append(row)
    return pd.DataFrame(rows)


def budget_summary(budget: pd.DataFrame) -> pd.DataFrame:
    """Per budget and method: the perplexity over seeds (geometric mean, i.e. the mean of log
    perplexity, with its t-interval over seeds), and the mean width of the per-run window intervals."""
    rows = []
    for (b, meth), g in budget.groupby(["budget", "method"], sort=True):
        ci = t_interval(np.log(g["perplexity"].to_numpy(float)))
        rows.append({"budget": int(b), "tokens": int(g["tokens"].iloc[0]), "method": meth, "seeds": len(g),
                     "ppl": math.exp(ci.estimate), "low": math.exp(ci.low) if ci.low == ci.low else float("nan"),
                     "high": math.exp(ci.high) if ci.high == ci.high else float("nan")})
    return pd.DataFrame(rows)


def budget_verdicts(budget: pd.DataFrame, a: str = "sparsegpt", b: str = "wanda") -> pd.DataFrame:
    """Per budget: ``ppl(a) / ppl(b)`` paired within each seed (same calibration windows, same
    evaluation windows); the estimate and its t-interval over seeds of the log ratio; the pooled
    paired bootstrap over evaluation windows (per-window NLL averaged over seeds) for the text's own
    variation; and the verdict from the interval over seeds."""
    rows = []
    for bud, g in budget.groupby("budget", sort=True):
        ga, gb = g[g.method == a].set_index("seed"), g[g.method == b].set_index("seed")
        seeds = sorted(set(ga.index) & set(gb.index))
        if not seeds:
            continue
        logr = np.array([math.log(ga.loc[s, "perplexity"] / gb.loc[s, "perplexity"]) for s in seeds])
        ci = t_interval(logr)
        wa = np.mean([_per_window(ga.loc[s]) for s in seeds], axis=0)
        wb = np.mean([_per_window(gb.loc[s]) for s in seeds], axis=0)
        w = bootstrap_ci(wa, paired=wb)
        lo, hi = (math.exp(ci.low), math.exp(ci.high)) if len(seeds) > 1 else (float("nan"), float("nan"))
        rows.append({"budget": int(bud), "tokens": int(g["tokens"].iloc[0]), "seeds": len(seeds),
                     "ratio": math.exp(ci.estimate), "low": lo, "high": hi,
                     "window_low": math.exp(w.low), "window_high": math.exp(w.high),
                     "a_wins": int((logr < 0).sum()),
                     "verdict": _verdict(a, b, lo, hi) if len(seeds) > 1 else "one seed: no interval"})
    return pd.DataFrame(rows)


# --- tables for the docs (python -m tools.tables) --------------------------------------------------

def _load(results_dir: Path) -> dict:
    p = Path(results_dir) / f"{NOTEBOOK}.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: run the notebook (make reproduce) to create it")
    return json.loads(p.read_text())


def _records(res: dict, kind: str, need: tuple = ()) -> pd.DataFrame:
    df = pd.DataFrame([r for r in res.get("records", []) if r.get("kind") == kind])
    missing = [c for c in need if c not in df]
    if not len(df) or missing:
        raise ValueError(f"{NOTEBOOK}.json has no {kind!r} records with {list(need)} (missing {missing}); it was "
                         "written by an older notebook: re-run make reproduce")
    return df


def _num(x: float, digits: int = 2) -> str:
    if x is None or x != x:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _ci(est, lo, hi, digits: int = 2) -> str:
    return f"{_num(est, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _setting(r) -> str:
    if r["method"] == "dense":
        return "dense"
    return r["nm"] if r["nm"] else f"{r['sparsity']:.0%}"


def table_runs(results_dir: Path) -> str:
    """Perplexity (95% bootstrap interval over the evaluation windows) per method and setting."""
    res = _load(results_dir)
    runs = _records(res, "run", ("perplexity", "ppl_low", "ppl_high", "nll"))
    p = res["parameters"]
    lines = [f"{p['model']}, calibration {p['nsamples']} x {p['seqlen']} tokens of {p['calib_corpus']} (seed "
             f"{p['seed']}); perplexity on {int(runs.eval_windows.iloc[0])} x {int(runs.eval_seqlen.iloc[0])} "
             f"held-out {p['eval_corpus']} test tokens, 95% bootstrap interval over windows.", "",
             "| setting | SparseGPT | Wanda | magnitude |", "|---|---|---|---|"]
    dense = runs[runs.method == "dense"].iloc[0]
    lines.append(f"| dense | {_ci(dense.perplexity, dense.ppl_low, dense.ppl_high)} | | |")
    for (s, nm), g in runs[runs.method != "dense"].groupby(["sparsity", "nm"], sort=True):
        cells = []
        for meth in ("sparsegpt", "wanda", "magnitude"):
            r = g[g.method == meth]
            cells.append(_ci(r.perplexity.iloc[0], r.ppl_low.iloc[0], r.ppl_high.iloc[0]) if len(r) else "")
        lines.append(f"| {nm or f'{s:.0%} unstructured'} | " + " | ".join(cells) + " |")
    if "acc" in runs:
        m = runs[runs.acc.notna()]
        lines += ["", f"Zero-shot {p['mcq_set']} accuracy ({int(m.mcq_n.iloc[0])} items, 95% Wilson interval):", "",
                  "| model | acc |", "|---|---|"]
        for r in m.itertuples():
            lo, hi = wilson_interval(round(r.acc * r.mcq_n), int(r.mcq_n))
            lines.append(f"| {_setting(r._asdict())} {r.method if r.method != 'dense' else ''} | "
                         f"{_ci(r.acc, lo, hi, 3)} |".replace("  ", " "))
    return "\n".join(lines)


def table_order(results_dir: Path) -> str:
    """Paired perplexity ratios between the methods per setting, with the verdict each interval supports."""
    runs = _records(_load(results_dir), "run", ("nll",))
    runs = runs[runs.method != "dense"]
    lines = ["| setting | SparseGPT / Wanda | verdict | Wanda / magnitude | verdict |", "|---|---|---|---|---|"]
    sw, wm = pairwise(runs, "sparsegpt", "wanda"), pairwise(runs, "wanda", "magnitude")
    for r in sw.itertuples():
        m = wm[(wm.sparsity == r.sparsity) & (wm.nm == r.nm)]
        right = (f"{_ci(m.ratio.iloc[0], m.low.iloc[0], m.high.iloc[0], 3)} | {m.verdict.iloc[0]}" if len(m)
                 else " | ")
        lines.append(f"| {r.nm or f'{r.sparsity:.0%} unstructured'} | {_ci(r.ratio, r.low, r.high, 3)} | "
                     f"{r.verdict} | {right} |")
    return "\n".join(lines)


def table_errors(results_dir: Path) -> str:
    """In-sample and held-out relative reconstruction error per method (mean over layers, bootstrap
    interval over layers) and each method's error relative to SparseGPT's."""
    res = _load(results_dir)
    layers = _records(res, "layer", ("rel_error", "heldout_rel_error", "method"))
    es = error_summary(layers)
    lines = ["| method | in-sample error | held-out error | in-sample / SparseGPT | held-out / SparseGPT |",
             "|---|---|---|---|---|"]
    for r in es.to_dict("records"):
        rel = [(_ci(r[f"{k}_vs_sgpt"], r[f"{k}_vs_sgpt_low"], r[f"{k}_vs_sgpt_high"]) if f"{k}_vs_sgpt" in r
                and r[f"{k}_vs_sgpt"] == r[f"{k}_vs_sgpt"] else "1") for k in ("in_sample", "heldout")]
        lines.append(f"| {r['method']} | {_ci(r['in_sample'], r['in_sample_low'], r['in_sample_high'], 4)} | "
                     f"{_ci(r['heldout'], r['heldout_low'], r['heldout_high'], 4)} | {rel[0]} | {rel[1]} |")
    return "\n".join(lines)


def table_budget(results_dir: Path) -> str:
    """Perplexity over calibration budgets (geometric mean over seeds, t-interval), SparseGPT / Wanda
    paired within seeds (t-interval over seeds; and the bootstrap over evaluation windows), verdict."""
    res = _load(results_dir)
    b = _records(res, "budget", ("seed", "budget", "tokens", "method", "perplexity", "nll"))
    s, v = budget_summary(b), budget_verdicts(b)
    lines = ["| budget (windows x tokens) | SparseGPT | Wanda | SparseGPT / Wanda (over seeds) | "
             "(over eval windows) | seeds SparseGPT better | verdict |", "|---|---|---|---|---|---|---|"]
    seqlen = int(b.tokens.iloc[0] // b.budget.iloc[0])
    for r in v.itertuples():
        cells = []
        for meth in ("sparsegpt", "wanda"):
            x = s[(s.budget == r.budget) & (s.method == meth)].iloc[0]
            cells.append(_ci(x.ppl, x.low, x.high))
        lines.append(f"| {r.budget} x {seqlen} = {r.tokens:,} | {cells[0]} | {cells[1]} | "
                     f"{_ci(r.ratio, r.low, r.high, 3)} | [{_num(r.window_low, 3)}, {_num(r.window_high, 3)}] | "
                     f"{r.a_wins} of {r.seeds} | {r.verdict} |")
    return "\n".join(lines)


def table_verdict(results_dir: Path) -> str:
    """The conclusions the intervals support, as sentences."""
    res = _load(results_dir)
    runs = _records(res, "run", ("nll",))
    out = []
    sw = pairwise(runs[runs.method != "dense"], "sparsegpt", "wanda")
    for r in sw.itertuples():
        setting = r.nm or f"{r.sparsity:.0%} unstructured"
        claim = {"sparsegpt lower": "SparseGPT has the lower perplexity",
                 "wanda lower": "Wanda has the lower perplexity",
                 "not resolved": "the evaluation windows do not resolve SparseGPT from Wanda"}[r.verdict]
        out.append(f"* {setting} (one calibration set): {claim} (ratio {_ci(r.ratio, r.low, r.high, 3)}, "
                   "paired bootstrap over windows).")
    try:
        b = _records(res, "budget", ("seed", "budget", "nll"))
    except ValueError:
        b = None
    if b is not None:
        seqlen = int(b.tokens.iloc[0] // b.budget.iloc[0])
        for r in budget_verdicts(b).itertuples():
            claim = {"sparsegpt lower": "SparseGPT beats Wanda", "wanda lower": "Wanda beats SparseGPT",
                     "not resolved": "no difference between SparseGPT and Wanda is resolved"}.get(r.verdict, r.verdict)
            out.append(f"* {r.budget} x {seqlen} calibration tokens, {r.seeds} seeds: {claim} (ratio "
                       f"{_ci(r.ratio, r.low, r.high, 3)}, t-interval over seeds).")
    try:
        layers = _records(res, "layer", ("rel_error", "heldout_rel_error"))
    except ValueError:
        layers = None
    if layers is not None:
        es = error_summary(layers).set_index("method")
        if "wanda" in es.index and "in_sample_vs_sgpt" in es:
            w = es.loc["wanda"]
            out.append(f"* Wanda's layer error is {_ci(w.in_sample_vs_sgpt, w.in_sample_vs_sgpt_low, w.in_sample_vs_sgpt_high)}"
                       f" x SparseGPT's on the calibration inputs (in-sample, what SparseGPT minimises) and "
                       f"{_ci(w.heldout_vs_sgpt, w.heldout_vs_sgpt_low, w.heldout_vs_sgpt_high)} x on held-out "
                       "inputs (geometric mean over layers, paired bootstrap over layers).")
    return "\n".join(out)


def table_composition(results_dir: Path) -> str:
    """Joint quantization and composition with structured FFN pruning."""
    res = _load(results_dir)
    c = _records(res, "composition", ("setting", "perplexity", "ppl_low", "ppl_high"))
    lines = ["| setting | params | nonzeros | perplexity |", "|---|---|---|---|"]
    for r in c.itertuples():
        lines.append(f"| {r.setting} | {r.params:,} | {r.nonzeros:,} | {_ci(r.perplexity, r.ppl_low, r.ppl_high)} |")
    return "\n".join(lines)


TABLES = {"sparsegpt_runs": table_runs, "sparsegpt_order": table_order, "sparsegpt_errors": table_errors,
          "sparsegpt_budget": table_budget, "sparsegpt_verdict": table_verdict,
          "sparsegpt_composition": table_composition}
