"""Tables of docs/contextual.md and the README from ``results/contextual_pruning.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from minilib.stats import format_ci
from minilib.studies.contextual import NOTEBOOK, SCALE_LABELS, best_reduction, verdict


class ResultsMissing(LookupError):
    """No results JSON, or one written by an older notebook: the tables say so instead of failing."""


def _missing() -> str:
    return (f"_No results in the current format yet: run `make reproduce` (or the `{NOTEBOOK}` notebook on its "
            f"default profile) to write `results/{NOTEBOOK}.json`._")


def _load(results_dir: Path) -> dict:
    """The results JSON: ``<results_dir>/contextual_pruning.json``, or ``results_dir`` itself when it is a file."""
    p = Path(results_dir)
    p = p if p.is_file() else p / f"{NOTEBOOK}.json"
    if not p.is_file():
        raise ResultsMissing(f"{p} is missing")
    return json.loads(p.read_text())


def _records(res: dict, need=("bpb", "d_bpb_low", "d_bpb_high")) -> pd.DataFrame:
    df = pd.DataFrame(res.get("records", []))
    if not len(df) or any(c not in df for c in need):
        raise ResultsMissing(f"{NOTEBOOK}.json was written by an older notebook")
    return df


def _table(fn):
    """A table function that prints ``_missing()`` when there are no results in the current format."""
    def table(results_dir: Path) -> str:
        try:
            return fn(results_dir)
        except ResultsMissing:
            return _missing()
    table.__doc__, table.__name__ = fn.__doc__, fn.__name__
    return table


def _eps(e) -> str:
    return "—" if e is None or (isinstance(e, float) and math.isnan(e)) else f"{e:g}"


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


@_table
def table_results(results_dir: Path) -> str:
    """Every domain x ε x stage: size, vocabulary, FFN removed, bits per byte on the same test text
    with its interval, Δ vs dense (paired interval), share of test tokens spelt in bytes, MCQ acc."""
    df = _records(_load(results_dir))
    lines = ["| domain | ε | stage | size % | vocab | FFN removed % | bits/byte [95% CI] | Δ vs dense [paired 95% CI] "
             "| bytes-spelt test tokens | MCQ acc [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        acc = format_ci(r["acc"], r["acc_low"], r["acc_high"]) if _ok(r.get("acc")) else ""
        d = "0" if r["stage"] == "dense" else format_ci(r["d_bpb"], r["d_bpb_low"], r["d_bpb_high"], 4)
        lines.append(f"| {r['domain']} | {_eps(r['eps'])} | {r['stage']} | {_pct(r['size_pct'])} | {int(r['vocab']):,} | "
                     f"{_pct(r['ffn_removed_pct'])} | {format_ci(r['bpb'], r['bpb_low'], r['bpb_high'], 4)} | {d} | "
                     f"{100 * r['fallback_rate']:.1f}% | {acc} |")
    return "\n".join(lines)


@_table
def table_tokens(results_dir: Path) -> str:
    """Token perplexities that are comparable: per base-tokenizer token over the same text, and over
    the positions where the pruned and dense tokenizations agree (paired ratio)."""
    df = _records(_load(results_dir), ("ppl_base", "agree_ratio"))
    lines = ["| domain | ε | stage | perplexity per base token [95% CI] | where tokenizations agree: model / dense "
             "[paired 95% CI] | share of tokens |", "|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        ag = (f"{r['ppl_agree']:.2f} / {r['dense_ppl_agree']:.2f} = "
              f"{format_ci(r['agree_ratio'], r['agree_ratio_low'], r['agree_ratio_high'])}"
              if _ok(r.get("agree_ratio")) else "")
        share = f"{100 * r['agree_share']:.1f}%" if _ok(r.get("agree_share")) else ""
        lines.append(f"| {r['domain']} | {_eps(r['eps'])} | {r['stage']} | "
                     f"{format_ci(r['ppl_base'], r['ppl_base_low'], r['ppl_base_high'], 2)} | {ag} | {share} |")
    return "\n".join(lines)


@_table
def table_recovery(results_dir: Path) -> str:
    """Fine-tuning: dev bits per byte before and at the best step against the dense target."""
    df = _records(_load(results_dir), ("best_dev_bpb", "target_dev_bpb"))
    df = df[df.stage == "finetuned"]
    lines = ["| domain | ε | train tokens spelt in bytes | dev bits/byte: pruned -> best (step) | dense target | "
             "steps | stopped |", "|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        lines.append(f"| {r['domain']} | {_eps(r['eps'])} | {100 * r['train_fallback_rate']:.1f}% | "
                     f"{r['dev_bpb_start']:.4f} -> {r['best_dev_bpb']:.4f} ({int(r['best_step'])}) | "
                     f"{r['target_dev_bpb']:.4f} | {int(r['ft_steps'])} | {r['stopped']} |")
    return "\n".join(lines)


@_table
def table_layers(results_dir: Path) -> str:
    """Share of FFN neurons removed per group of blocks, for each ε (authors' absolute rule) and for
    the median-normalized rule at the ε that removes as many neurons in total (first domain)."""
    res = _load(results_dir)
    lay = pd.DataFrame(res.get("layers", []))
    if not len(lay) or "fraction" not in lay:
        raise ResultsMissing(f"{NOTEBOOK}.json has no 'layers' table")
    lay = lay[lay.domain == lay.domain.iloc[0]]
    nb = int(lay.block.max()) + 1
    size = max(1, math.ceil(nb / 6))
    groups = [(a, min(nb, a + size) - 1) for a in range(0, nb, size)]
    head = "| rule | ε | total | " + " | ".join(f"blocks {a}-{b}" if b > a else f"block {a}" for a, b in groups) + " |"
    lines = [f"Domain `{lay.domain.iloc[0]}`; % of FFN neurons removed.", "", head, "|" + "---|" * (3 + len(groups))]
    for (rule, eps), g in lay.groupby(["rule", "eps"], sort=False):
        cells = []
        for a, b in groups:
            s = g[(g.block >= a) & (g.block <= b)]
            cells.append(f"{100 * s.removed.sum() / s.width.sum():.1f}")
        label = f"{eps:g}" if rule == lay.rule.iloc[0] else f"matched to {eps:g} (threshold {g.threshold.iloc[0]:.3g})"
        lines.append(f"| {SCALE_LABELS.get(rule, rule)} | {label} | {100 * g.total_fraction.iloc[0]:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


@_table
def table_verdict(results_dir: Path) -> str:
    """The conclusions the intervals support, one line per domain, and the comparison with the paper."""
    res = _load(results_dir)
    df = _records(res)
    out = []
    recs = df.to_dict("records")
    for d in dict.fromkeys(df.domain):
        rs = [r for r in recs if r["domain"] == d]
        ft = [r for r in rs if r["stage"] == "finetuned"]
        best = best_reduction(recs, d)
        worst = [r for r in ft if verdict(r["d_bpb_low"], r["d_bpb_high"]) == "worse than dense"]
        if best is None:
            out.append(f"* **{d}**: every fine-tuned setting is worse than dense on the same test text (smallest "
                       f"Δ bits/byte {format_ci(*min((r['d_bpb'], r['d_bpb_low'], r['d_bpb_high']) for r in ft), 4)}, "
                       "paired bootstrap over text chunks): no size reduction at dense quality.")
        else:
            out.append(f"* **{d}**: the smallest fine-tuned model not detectably worse than dense keeps "
                       f"{best['size_pct']:.1f}% of the parameters (ε = {best['eps']:g}; Δ bits/byte "
                       f"{format_ci(best['d_bpb'], best['d_bpb_low'], best['d_bpb_high'], 4)}: "
                       f"{verdict(best['d_bpb_low'], best['d_bpb_high'])}); {len(worst)} of {len(ft)} settings are worse.")
        v0 = [r for r in rs if r["stage"] == "pruned" and r["eps"] == 0]
        if v0:
            r = v0[0]
            out.append(f"  Vocabulary pruning alone (kept vocabulary from calib only, {int(r['vocab']):,} tokens, "
                       f"{r['size_pct']:.1f}% of the parameters): Δ bits/byte before fine-tuning "
                       f"{format_ci(r['d_bpb'], r['d_bpb_low'], r['d_bpb_high'], 4)} "
                       f"({verdict(r['d_bpb_low'], r['d_bpb_high'])}); {100 * r['fallback_rate']:.1f}% of the test "
                       f"tokens are spelt in bytes.")
        mc = [r for r in ft if _ok(r.get("mcq_p"))]
        if mc:
            r = min(mc, key=lambda r: r["mcq_p"])
            out.append(f"  MCQ ({r['mcq']}, n = {int(r['mcq_n'])}): the largest change after fine-tuning has "
                       f"McNemar p = {r['mcq_p']:.3g} (ε = {r['eps']:g}: acc "
                       f"{format_ci(r['acc'], r['acc_low'], r['acc_high'])} vs dense "
                       f"{rs[0]['acc']:.3f})" + ("." if r["mcq_p"] < 0.05 else "; no accuracy change is resolved."))
    n_best = [best_reduction(recs, d) for d in dict.fromkeys(df.domain)]
    red = [100 - b["size_pct"] for b in n_best if b is not None]
    out.append(f"* The paper reports up to ~42% smaller models at equal or better perplexity (Phi-1.5, same data for "
               f"calibration, fine-tuning and test). On our protocol the largest reduction not detectably worse than "
               f"dense is {f'{max(red):.1f}%' if red else 'none'}.")
    return "\n".join(out)


TABLES = {"contextual_results": table_results, "contextual_tokens": table_tokens,
          "contextual_recovery": table_recovery, "contextual_layers": table_layers,
          "contextual_verdict": table_verdict}
