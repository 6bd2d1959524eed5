"""The SparseGPT study: one-shot pruning (the methods of ``minilib.prune.methods``: magnitude, Wanda,
RIA, SparseGPT), uniform or OWL per-block sparsity, N:M, joint quantization, composition with
structured FFN-neuron removal, held-out reconstruction errors and a calibration-budget sweep.

A run's ``method`` is the registry name, with ``+owl`` appended when its per-block sparsities came from
OWL's allocation (``run_setting(..., allocation="owl")``): ``wanda+owl`` is Wanda's score at OWL's
sparsities.

* ``run_setting`` is one experiment -- load, (shrink FFNs), prune, evaluate -> one tidy row with the
  perplexity, its 95% t-interval over the evaluation windows and the NLL of every window (so
  that two rows on the same windows can be compared paired).
* ``calibration_pool`` / ``budget_windows``: calibration text from one or several embedded corpora
  (``"c4"``, ``"c4+wiki"``), cut into non-overlapping windows; a seed picks a random order of the
  windows and a budget of ``n`` takes the first ``n`` (budgets are nested for one seed).
* ``budget_sweep``: SparseGPT and Wanda at one sparsity over calibration budgets and seeds, every run
  scored on the same evaluation windows; runs already made (same seed, budget, method) are reused.
* Analysis (pure functions of the records, tested on synthetic data): ``setting_summary``,
  ``comparison_tests``, ``budget_tests``, ``verdict_block``, ``error_summary``, ``budget_summary``.
  The tables of docs/sparsegpt.md are ``minilib.tables.sparsegpt``.

Replication.  A calibration-based method's result depends on the calibration draw, so SparseGPT and
Wanda are compared over calibration seeds (t over seeds of the log perplexity ratio) *and* over the
evaluation windows (t over windows of the per-window NLL difference averaged over seeds); a
comparison is resolved only where both levels resolve it, Holm-corrected over every comparison the
verdict block prints (``minilib.stats.decide``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from minilib.device import Timer, resolve_device
from minilib.eval import count_parameters, mcq_accuracy
from minilib.eval.perplexity import perplexity_ci
from minilib.models import load
from minilib.models.adapters import Adapter, adapter_for
from minilib.prune.apply import remove_neurons
from minilib.prune.masks import parse_nm
from minilib.prune.allocation import owl_sparsities
from minilib.prune.methods import METHODS
from minilib.prune.oneshot import prune_model
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_maxprod
from minilib.stats import bootstrap_ci, t_interval

NOTEBOOK = "SparseGPT_one_shot"
ALLOCATIONS = ("uniform", "owl")


def split_method(name: str) -> tuple[str, str]:
    """``"wanda+owl"`` -> ``("wanda", "owl")``; ``"wanda"`` -> ``("wanda", "uniform")``."""
    base, _, alloc = str(name).partition("+")
    return base, alloc or "uniform"


def method_label(name: str) -> str:
    """A run's method for tables and figures: the registry's label, ``+ OWL`` for OWL allocations."""
    base, alloc = split_method(name)
    lab = METHODS[base].label if base in METHODS else base
    return lab if alloc == "uniform" else f"{lab} + {alloc.upper()}"


def is_calibrated(name: str) -> bool:
    """Whether a run's method needs calibration (so that it is replicated over calibration seeds)."""
    base, alloc = split_method(name)
    if base == "dense":
        return False
    return alloc != "uniform" or (METHODS[base].calibrated if base in METHODS else base != "magnitude")


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
                allocation: str = "uniform", owl_m: float = 5.0, owl_lambda: float = 0.08,
                **prune_kwargs) -> tuple[dict, PruneReport | None]:
    """Prune a fresh copy of ``model_name`` with ``method`` (``None``: dense) and evaluate it.

    ``allocation="owl"``: the per-block sparsities of OWL (``minilib.prune.owl_sparsities`` with
    ``owl_m``, ``owl_lambda``, on the same calibration windows, timed with the pruning) for the target
    ``sparsity``; the row's method is then ``<method>+owl`` and it records ``layer_sparsity``.

    Returns a row ``{method, sparsity, nm, wbits, ffn_keep, perplexity, ppl_low, ppl_high, nll (per
    window), eval_windows, eval_seqlen, achieved_sparsity, mean_rel_error, [mean_heldout_rel_error],
    params, nonzeros, prune_s, [acc, acc_norm, mcq_n]}`` and the ``PruneReport``.  Extra keyword
    arguments go to ``prune_model`` (e.g. ``heldout=``, ``measure_error=``, ``forward_dtype=``)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    nm = parse_nm(nm)
    if allocation != "uniform" and (not method or nm or calib is None):
        raise ValueError(f"allocation={allocation!r} needs a method, calibration windows and unstructured sparsity "
                         f"(got method={method!r}, nm={nm}, calib={'given' if calib is not None else None})")
    model, tokenizer, _ = load(model_name, device=device)
    row = {"method": (method if allocation == "uniform" else f"{method}+{allocation}") if method else "dense", "sparsity": (nm[0] / nm[1] if nm else sparsity) if method else 0.0,
           "nm": f"{nm[0]}:{nm[1]}" if nm and method else "", "wbits": wbits if method else 16,
           "ffn_keep": ffn_keep or 1.0}
    if ffn_keep:
        shrink_ffns(model, ffn_keep)
    report = None
    timer = Timer(resolve_device(device))
    with timer("prune_s"):
        if method:
            target = None if nm else sparsity
            if allocation == "owl":
                alloc = owl_sparsities(model, calib, sparsity, m=owl_m, lam=owl_lambda, device=device,
                                       forward_dtype=prune_kwargs.get("forward_dtype"))
                target = alloc.sparsities
                row.update(layer_sparsity=alloc.sparsities, outlier_ratios=alloc.outlier_ratios)
            report = prune_model(model, method, target, nm=nm, wbits=wbits, calib=calib, device=device,
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


def recover(model_name: str, method: str, calib: torch.Tensor, train_ids: torch.Tensor, dev_ids: torch.Tensor,
            chunks: list[str], sparsity: float = 0.5, steps: int = 40, ft_method: str = "full", seqlen: int = 128,
            batch_size: int = 4, lr: float | None = None, seed: int = 0, device: str = "auto",
            allocation: str = "uniform", owl_m: float = 5.0, owl_lambda: float = 0.08, **prune_kwargs) -> dict:
    """Recovery fine-tuning after one-shot pruning: prune a fresh ``model_name`` with ``method`` at
    ``sparsity`` (``allocation="owl"``: at OWL's per-block sparsities for that target, ``owl_m`` and
    ``owl_lambda``, on the same ``calib``, as ``run_setting`` prunes them; the row's method is then
    ``<method>+owl``), score bits per byte on the held-out ``chunks`` (``minilib.eval.bytes``), fine-tune
    ``steps`` steps on ``train_ids`` (``ft_method`` "full" or "lora"; every pruned zero kept:
    ``keep_sparsity=True``, ``SparsityLostError`` otherwise), score the same chunks again.

    Returns ``{method, sparsity, steps, ft_method, bpb_before, bpb_after, *_low/_high, gain (before -
    after, paired bootstrap over chunks), gain_low, gain_high, chunks, sparsity_before, sparsity_after,
    finetune_s, [layer_sparsity]}``; one calibration draw and one fine-tuning seed (the intervals are over the text)."""
    from minilib.eval.bytes import bits_per_byte, bpb_difference, score_text
    from minilib.train import FinetuneConfig, finetune
    ft_cfg = FinetuneConfig(seqlen=seqlen, batch_size=batch_size, lr=lr, max_steps=steps, eval_every=max(1, steps),
                            seed=seed, method=ft_method, keep_sparsity=True)   # checked before any work
    if allocation not in ALLOCATIONS:
        raise ValueError(f"recover: allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    model, tokenizer, _ = load(model_name, device=device)
    target = sparsity
    if allocation == "owl":
        target = owl_sparsities(model, calib, sparsity, m=owl_m, lam=owl_lambda, device=device,
                                forward_dtype=prune_kwargs.get("forward_dtype")).sparsities
    prune_model(model, method, target, calib=calib, device=device, **{"measure_error": False, **prune_kwargs})
    before = score_text(model, tokenizer, chunks, seqlen=seqlen)
    timer = Timer(resolve_device(device))
    with timer("finetune_s"):
        ft = finetune(model, train_ids, dev_ids, ft_cfg, verbose=False)
    after = score_text(model, tokenizer, chunks, seqlen=seqlen)
    b, a_, gain = bits_per_byte(before), bits_per_byte(after), bpb_difference(before, after)
    del model
    return {"method": method if allocation == "uniform" else f"{method}+{allocation}", "sparsity": float(sparsity),
            "steps": int(ft.steps), "ft_method": ft_method,
            "bpb_before": b.estimate, "bpb_before_low": b.low, "bpb_before_high": b.high,
            "bpb_after": a_.estimate, "bpb_after_low": a_.low, "bpb_after_high": a_.high,
            "gain": gain.estimate, "gain_low": gain.low, "gain_high": gain.high, "chunks": len(chunks),
            "sparsity_before": ft.sparsity_before, "sparsity_after": ft.sparsity_after,
            "finetune_s": timer.totals["finetune_s"], **({"layer_sparsity": list(target)} if allocation == "owl" else {})}


def budget_sweep(model_name: str, test_ids: torch.Tensor, pool: torch.Tensor, budgets: list[int], seeds: list[int],
                 methods=("sparsegpt", "wanda"), sparsity: float = 0.5, eval_seqlen: int = 512,
                 eval_windows: int | None = 8, device: str = "auto", progress: bool = True, reuse=None,
                 **prune_kwargs) -> list[dict]:
    """Every method at ``sparsity`` for every calibration budget (windows of ``pool``) and seed, each
    run on a fresh model and scored on the same evaluation windows.  One record per run: ``seed,
    budget (windows), tokens, method, perplexity, ppl_low, ppl_high, nll (per window), prune_s``.
    No layer errors are measured (``measure_error=False``) unless ``prune_kwargs`` asks for them.

    ``reuse``: run rows made elsewhere on the same pool and evaluation windows (with ``seed``,
    ``budget``, ``method``; e.g. the method comparison's runs at its own budget), taken as they are
    instead of pruning again (their record says ``reused=True``)."""
    from tqdm.auto import tqdm
    if not budgets or not seeds:
        raise ValueError(f"budget_sweep needs at least one budget and one seed, got budgets={budgets}, seeds={seeds}")
    for b in budgets:
        budget_windows(pool, b, 0)  # every budget fits the pool, checked before any compute
    done = {(int(r["seed"]), int(r["budget"]), r["method"]): r for r in (reuse or [])}
    runs = [(s, b, m) for s in seeds for b in sorted(budgets) for m in methods]
    out = []
    for seed, b, meth in tqdm(runs, desc="budget sweep", disable=not progress):
        calib = budget_windows(pool, b, seed)
        if (seed, b, meth) in done:
            row = {k: v for k, v in done[(seed, b, meth)].items() if k not in ("seed", "budget", "tokens")}
            row["reused"] = True
        else:
            row, _ = run_setting(model_name, meth, test_ids, calib=calib, sparsity=sparsity, eval_seqlen=eval_seqlen,
                                 eval_windows=eval_windows, device=device, **{"measure_error": False, **prune_kwargs})
            row["reused"] = False
        out.append({"seed": seed, "budget": b, "tokens": int(calib.numel()), **row})
    return out


# --- analysis (pure functions of the records) -----------------------------------------------------

def window_nll(row) -> np.ndarray:
    """Mean NLL per predicted token of each evaluation window of one run (natural log)."""
    return np.asarray(row["nll"], float) / (int(row["eval_seqlen"]) - 1)


def setting_label(sparsity: float, nm: str) -> str:
    return nm if nm else f"{sparsity:.0%} unstructured"


def setting_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and setting: the perplexity over calibration seeds (geometric mean, i.e. the mean
    log perplexity, with its t-interval over seeds; a single run keeps its own interval over
    windows), and the number of seeds."""
    rows = []
    for (meth, s, nm), g in runs.groupby(["method", "sparsity", "nm"], sort=True):
        logs = np.log(g["perplexity"].to_numpy(float))
        if len(g) > 1:
            ci = t_interval(logs)
            est, lo, hi = math.exp(ci.estimate), math.exp(ci.low), math.exp(ci.high)
            level = f"t-interval over {len(g)} calibration seeds"
        else:
            r = g.iloc[0]
            est, lo, hi = float(r.perplexity), float(r.ppl_low), float(r.ppl_high)
            level = "one run: t-interval over windows"
        rows.append({"method": meth, "sparsity": float(s), "nm": nm, "runs": len(g), "ppl": est, "low": lo,
                     "high": hi, "level": level})
    return pd.DataFrame(rows)


def _by_seed(g: pd.DataFrame) -> dict:
    return {(None if s is None or s != s else int(s)): r for s, r in
            zip(g["seed"] if "seed" in g else [None] * len(g), g.to_dict("records"))}


def comparison_tests(runs: pd.DataFrame, a: str, b: str, by=("sparsity", "nm"), what: str = "") -> list[dict]:
    """``a`` against ``b`` per setting, at both levels of replication of a calibration-based method:

    * over **calibration seeds**: ``ppl(a) / ppl(b)`` per seed (both pruned from the same calibration
      draw; a method without calibration -- magnitude -- is the same run for every seed), t over seeds
      of the log ratio;
    * over **evaluation windows**: the per-window NLL difference averaged over the seeds, t over
      windows (the text's own variation).

    Returns one dict per setting: ``{"setting", "key", "seeds": Test, "windows": Test}``
    (``minilib.stats.Test``, not yet decided: ``minilib.stats.decide`` runs over the whole block)."""
    from minilib.stats import nll_ratio, paired_difference
    out = []
    for key, g in runs.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ga, gb = _by_seed(g[g.method == a]), _by_seed(g[g.method == b])
        if not ga or not gb:
            continue
        if set(gb) == {None}:
            gb = {s: gb[None] for s in ga}
        if set(ga) == {None}:
            ga = {s: ga[None] for s in gb}
        seeds = sorted(set(ga) & set(gb), key=lambda s: -1 if s is None else s)
        if not seeds:
            continue
        label = setting_label(*key) if tuple(by) == ("sparsity", "nm") else what.format(*key)
        t_seed = paired_difference([ga[s]["perplexity"] for s in seeds], [gb[s]["perplexity"] for s in seeds],
                                   unit="calibration seeds", log=True, label=f"{label}: {a} / {b}, over seeds",
                                   what="t over calibration seeds of the log perplexity ratio")
        wa = np.mean([window_nll(ga[s]) for s in seeds], axis=0)
        wb = np.mean([window_nll(gb[s]) for s in seeds], axis=0)
        t_win = nll_ratio(wa, wb, unit="windows", label=f"{label}: {a} / {b}, over windows",
                          what=f"paired t over evaluation windows (NLL averaged over {len(seeds)} seed(s))")
        out.append({"setting": label, "key": dict(zip(by, key)), "a": a, "b": b, "seeds": t_seed, "windows": t_win,
                    "a_wins": int(sum(ga[s]["perplexity"] < gb[s]["perplexity"] for s in seeds))})
    return out


def joint_outcome(seeds, windows) -> str:
    """A method comparison is resolved only where both levels resolve it in the same direction."""
    if "too few to test" in (seeds.outcome, windows.outcome):
        return "too few to test"
    if seeds.outcome == windows.outcome and seeds.resolved:
        return seeds.outcome
    return "not resolved"


def budget_tests(budget: pd.DataFrame, a: str = "sparsegpt", b: str = "wanda") -> list[dict]:
    """``comparison_tests`` per calibration budget (the sweep's records)."""
    return comparison_tests(budget, a, b, by=("budget",), what="{} calibration windows")


def error_summary(layers: pd.DataFrame, methods=("sparsegpt", "wanda", "magnitude")) -> pd.DataFrame:
    """Per method: mean relative reconstruction error over layers on the calibration inputs (in-sample)
    and on held-out inputs, each with a bootstrap interval over layers; and the ratio of each method's
    error to SparseGPT's (paired over the same layers, geometric mean of per-layer ratios).  One
    calibration draw: the intervals describe the spread over layers, not a replication."""
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
    perplexity, with its t-interval over seeds)."""
    rows = []
    for (b, meth), g in budget.groupby(["budget", "method"], sort=True):
        ci = t_interval(np.log(g["perplexity"].to_numpy(float)))
        rows.append({"budget": int(b), "tokens": int(g["tokens"].iloc[0]), "method": meth, "seeds": len(g),
                     "ppl": math.exp(ci.estimate), "low": math.exp(ci.low) if ci.low == ci.low else float("nan"),
                     "high": math.exp(ci.high) if ci.high == ci.high else float("nan")})
    return pd.DataFrame(rows)


# the comparisons of the verdict block, ``(a, b)`` = "a against b", each made where both methods ran: the
# solver against the best score method, the score methods against the one without calibration, RIA
# against the method it refines, OWL's allocation against the uniform one for the same method
COMPARISONS = (("sparsegpt", "wanda"), ("wanda", "magnitude"), ("ria", "wanda"), ("wanda+owl", "wanda"),
               ("sparsegpt+owl", "sparsegpt"))


OWL_CLAIM_SPARSITY = 0.7   # OWL's headline (LLaMA-7B at 70%: Wanda 85.8 -> 24.6, SparseGPT 26.3 -> 19.5)


def allocation_summary(entries: list[dict]) -> list[dict]:
    """What the decided ``verdict_block`` entries say of OWL against uniform sparsity, per method: one
    dict ``{"method", "lower", "higher", "not resolved", "too few to test"}`` (each a sorted list of the
    sparsities with that outcome; "lower" = the OWL run has the lower perplexity) and ``"claim"``: the
    outcome at ``OWL_CLAIM_SPARSITY`` ("holds", "contradicted", "not resolved", "too few to test", or
    "not run"), in the order the methods first appear."""
    out: dict[str, dict] = {}
    for e in entries:
        base, alloc = split_method(e["a"])
        if e.get("block") != "setting" or alloc != "owl" or e["b"] != base or e["key"].get("nm"):
            continue
        d = out.setdefault(base, {"method": base, "lower": [], "higher": [], "not resolved": [],
                                  "too few to test": [], "claim": "not run"})
        sp = float(e["key"]["sparsity"])
        kind = {"a lower": "lower", "a higher": "higher"}.get(e["outcome"], e["outcome"])
        d[kind].append(sp)
        if math.isclose(sp, OWL_CLAIM_SPARSITY):
            d["claim"] = {"lower": "holds", "higher": "contradicted"}.get(kind, kind)
    for d in out.values():
        for k in ("lower", "higher", "not resolved", "too few to test"):
            d[k].sort()
    return list(out.values())


def verdict_block(runs: pd.DataFrame, budget: pd.DataFrame | None = None) -> list[dict]:
    """Every method comparison the SparseGPT verdicts print, decided as one family (Holm over all of
    their tests): the ``COMPARISONS`` per setting (where both methods ran), SparseGPT / Wanda per
    calibration budget.  Each entry: the ``comparison_tests`` dict with decided tests and ``outcome``."""
    from minilib.stats import decide
    runs = runs[runs.method != "dense"]
    entries = [dict(e, block="setting") for a, b in COMPARISONS for e in comparison_tests(runs, a, b)]
    if budget is not None and len(budget):
        entries += [dict(e, block="budget") for e in budget_tests(budget)]
    tests = decide([t for e in entries for t in (e["seeds"], e["windows"])])
    for i, e in enumerate(entries):
        e["seeds"], e["windows"] = tests[2 * i], tests[2 * i + 1]
        e["outcome"] = joint_outcome(e["seeds"], e["windows"])
    return entries
