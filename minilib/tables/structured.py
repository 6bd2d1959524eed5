"""Tables of docs/anatomy.md and the README from ``results/<family>_pruning_strategy.json``: the
strategy against the baselines and ablations per protocol and ratio, and the verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from minilib.studies.structured import seed_summary


FAMILIES = {"BERT": "encoder", "GPT2": "decoder"}


def _read(results_dir: Path, stem: str) -> dict | None:
    import json
    f = Path(results_dir) / f"{stem}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _missing(stem: str) -> str:
    return (f"_No results in the current format yet: run `make reproduce` (or the `{stem}` notebook on its "
            f"default profile) to write `results/{stem}.json`._")


def _fmt_p(p: float) -> str:
    """``"= 0.042"`` / ``"< 0.001"``: what follows a ``p``."""
    return "n/a" if p is None or p != p else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def _ci(est, lo, hi, digits=3):
    from minilib.stats import format_ci
    return format_ci(est, lo, hi, digits)


def pruning_table(results_dir: Path, fam: str) -> str:
    """The strategy against the baselines for one family: accuracy per protocol and ratio, and the
    paired tests."""
    stem = f"{fam}_pruning_strategy"
    res = _read(results_dir, stem)
    if not res or "paired_tests" not in res.get("metrics", {}):
        return _missing(stem)
    p = res["parameters"]
    df = pd.DataFrame(res["records"])
    summ = seed_summary(df)
    tests = pd.DataFrame(res["metrics"]["paired_tests"])
    has_uniform = "anatomy-uniform" in set(df.method)
    has_ppl = "perplexity" in df and pd.to_numeric(df["perplexity"], errors="coerce").notna().any()
    k = int(df[df.method == "random"]["seed"].nunique()) if "seed" in df else 1
    head = ["protocol", "% FFN removed", "anatomy strategy"] + (["anatomy, uniform budget"] if has_uniform else []) + \
        ["magnitude", f"random (mean of {k} seeds, t-interval over seeds)", "strategy - magnitude [paired bootstrap], McNemar p",
         "strategy - random mean [paired bootstrap], paired t p"] + \
        (["perplexity strategy / magnitude / random"] if has_ppl else [])
    lines = [f"`{p['model']}` on `{p['dataset']}`, n = {int(df['n_test'].max())} test examples, decision state "
             f"`{p.get('decision_state', 'residual')}`; accuracy with 95% intervals (Wilson for one run).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for proto in [x for x in ("head-only", "finetuned") if x in set(summ.protocol)]:
        for ratio in sorted(set(summ[summ.protocol == proto].ratio)):
            def cell(m):
                r = summ[(summ.protocol == proto) & (summ.method == m) & (summ.ratio == ratio)]
                return "" if r.empty else _ci(r.iloc[0].acc, r.iloc[0].ci95_low, r.iloc[0].ci95_high)
            rr = summ[(summ.protocol == proto) & (summ.method == "random") & (summ.ratio == ratio)]
            rng_txt = "" if rr.empty or ratio == 0 else f" (seeds {rr.iloc[0].acc_min:.3f}-{rr.iloc[0].acc_max:.3f})"
            cells = [proto, f"{100 * ratio:.0f}", cell("anatomy")] + ([cell("anatomy-uniform")] if has_uniform else []) + \
                [cell("magnitude"), cell("random") + rng_txt]
            for b in ("magnitude", "random"):
                t = tests[(tests.protocol == proto) & (tests.ratio == ratio) & (tests.baseline == b)] if len(tests) else tests
                r = None if t.empty else t.iloc[0]
                cells.append("" if r is None else f"{_ci(r['diff'], r['diff_low'], r['diff_high'])}, p {_fmt_p(r['p'])}")
            if has_ppl:
                pp = []
                for m in ("anatomy", "magnitude", "random"):
                    r = summ[(summ.protocol == proto) & (summ.method == m) & (summ.ratio == ratio)]
                    v = None if r.empty else r.iloc[0].get("perplexity")
                    pp.append("n/a" if v is None or v != v else f"{v:.4g}")
                cells.append(" / ".join(pp))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLLAPSE_PPL = 10.0   # a baseline whose perplexity exceeds this multiple of the dense model's has collapsed


def _acc_rows(res: dict) -> pd.DataFrame:
    from minilib.studies.structured import attach_correct
    df = pd.DataFrame(res["records"])
    df["seed"] = [None if v is None or v != v else int(v) for v in df["seed"]] if "seed" in df else None
    return attach_correct(df, res.get("correct", {}))


def collapse_note(g: pd.DataFrame, method: str, majority: float, dense_ppl: float | None) -> str:
    """Why ``method`` at this protocol and ratio has collapsed the model ("" where it has not): its
    accuracy's Wilson interval does not lie above the majority class, or (decoders) its perplexity
    exceeds ``COLLAPSE_PPL`` x the dense model's."""
    r = g[g.method == method]
    if r.empty:
        return ""
    r = r.iloc[0]
    why = []
    if r.ci95_low <= majority:
        why.append(f"accuracy {r.acc:.3f} not above the majority class {majority:.3f}")
    ppl = r.get("perplexity")
    if dense_ppl and ppl == ppl and ppl is not None and ppl > COLLAPSE_PPL * dense_ppl:
        why.append(f"perplexity {ppl:,.0f} against dense {dense_ppl:.1f}")
    return "; ".join(why)


def block_tests(results_dir: Path) -> list[dict]:
    """Every comparison the anatomy verdict block prints, over both families, decided as one family.

    Per family, protocol and ratio: the strategy against magnitude (exact McNemar over the test
    items), against the random baseline at the level where it varies (t over the random-mask seeds of
    the accuracy difference), and where the uniform-budget ablation ran, the decomposition: strategy
    against its uniform-budget version (does the layer budget help?) and the uniform version against
    magnitude (does the anatomy score alone beat magnitude?).  Each entry: ``family, model, protocol,
    ratio, what, test`` (a decided ``minilib.stats.Test``) and ``collapsed`` (why the baseline, where
    one is compared, has collapsed the model)."""
    from minilib.stats import decide, paired_binary, paired_difference
    entries = []
    for fam in FAMILIES:
        res = _read(results_dir, f"{fam}_pruning_strategy")
        if not res or "correct" not in res:
            continue
        df = _acc_rows(res)
        majority = float(res["metrics"].get("majority", 0.5))
        model = res["parameters"]["model"]
        for proto in [x for x in ("head-only", "finetuned") if x in set(df.protocol)]:
            dp = df[df.protocol == proto]
            dense = dp[dp.ratio == 0]
            dense_ppl = float(pd.to_numeric(dense.get("perplexity"), errors="coerce").mean()) if "perplexity" in dp \
                else None
            dense_ppl = dense_ppl if dense_ppl == dense_ppl else None
            for ratio in sorted(set(dp.ratio) - {0.0}):
                g = dp[dp.ratio == ratio]
                s = g[g.method == "anatomy"]
                if s.empty or s.iloc[0].correct is None:
                    continue
                cs = s.iloc[0].correct.astype(float)
                base = dict(family=fam, model=model, protocol=proto, ratio=float(ratio))
                lab = f"{fam} {proto} {100 * ratio:.0f}%"
                for m, what in (("magnitude", "vs magnitude"), ("anatomy-uniform", "vs uniform budget")):
                    r = g[g.method == m]
                    if len(r) and r.iloc[0].correct is not None:
                        entries.append({**base, "what": what, "collapsed": collapse_note(g, m, majority, dense_ppl)
                                        if m == "magnitude" else "",
                                        "test": paired_binary(cs, r.iloc[0].correct.astype(float),
                                                              label=f"{lab}: strategy {what}")})
                rnd = g[g.method == "random"]
                if len(rnd):
                    acc_r = rnd.acc.to_numpy(float)
                    entries.append({**base, "what": "vs random", "collapsed": "",
                                    "test": paired_difference(np.full(len(acc_r), cs.mean()), acc_r,
                                                              unit="random seeds", label=f"{lab}: strategy vs random",
                                                              what="t over random-mask seeds of the accuracy "
                                                                   "difference")})
                u, m = g[g.method == "anatomy-uniform"], g[g.method == "magnitude"]
                if len(u) and len(m) and u.iloc[0].correct is not None and m.iloc[0].correct is not None:
                    entries.append({**base, "what": "uniform vs magnitude",
                                    "collapsed": collapse_note(g, "magnitude", majority, dense_ppl),
                                    "test": paired_binary(u.iloc[0].correct.astype(float),
                                                          m.iloc[0].correct.astype(float),
                                                          label=f"{lab}: uniform-budget anatomy vs magnitude")})
    tests = decide([e["test"] for e in entries])
    for e, t in zip(entries, tests):
        e["test"] = t
    return entries


WHAT = {"vs magnitude": "strategy vs magnitude", "vs random": "strategy vs the random mean (over the random-mask seeds)",
        "vs uniform budget": "strategy vs its uniform-budget ablation (same anatomy score, equal budget per layer)",
        "uniform vs magnitude": "the anatomy score alone (uniform budget) vs magnitude"}


def verdict_text(results_dir: Path) -> str:
    """The verdict sentences: one multiple-comparison family over every test printed (both families,
    both protocols, every ratio and comparison); a baseline that has collapsed the model is reported
    as collapsed, not as evidence for the strategy; the ablation says whether the score or the layer
    budget does the work."""
    entries = block_tests(results_dir)
    out = []
    for fam in FAMILIES:
        if not any(e["family"] == fam for e in entries):
            out.append(f"* **{fam}**: " + _missing(f"{fam}_pruning_strategy"))
    if not entries:
        return "\n".join(out)
    n_tests = entries[0]["test"].family
    out.insert(0, f"Our protocol (no retraining after pruning). One multiple-comparison family: the {n_tests} tests "
               "below (Holm). Against magnitude and the ablation the unit is the test item (exact McNemar); against "
               "the random baseline it is the random-mask seed (t over seeds: the strategy must beat the spread of "
               "random masks, not one draw).")
    for fam in FAMILIES:
        for proto in ("head-only", "finetuned"):
            es = [e for e in entries if e["family"] == fam and e["protocol"] == proto]
            if not es:
                continue
            n_items = max((e["test"].n for e in es if e["test"].unit == "test items"), default=0)
            parts = []
            for what, label in WHAT.items():
                ew = [e for e in es if e["what"] == what]
                if not ew:
                    continue
                bits = []
                for outcome, word in (("a higher", "**better**"), ("a lower", "**worse**")):
                    hit = [e for e in ew if e["test"].outcome == outcome]
                    if hit:
                        bits.append(f"{word} at " + ", ".join(
                            f"{100 * e['ratio']:.0f}% ({e['test'].estimate:+.3f} [{e['test'].low:+.3f}, "
                            f"{e['test'].high:+.3f}], Holm p {_fmt_p(e['test'].p_adj)})" for e in hit))
                rest = [e for e in ew if not e["test"].resolved]
                if rest:
                    mde = max((e["test"].mde for e in rest if e["test"].mde == e["test"].mde), default=float("nan"))
                    n = max(e["test"].n for e in rest)
                    bits.append("not resolved at " + ", ".join(f"{100 * e['ratio']:.0f}%" for e in rest)
                                + f" (n = {n} {rest[0]['test'].unit}"
                                + (f"; resolvable: a difference beyond +-{mde:.3f})" if mde == mde else ")"))
                coll = [e for e in ew if e["collapsed"]]
                if coll:
                    bits.append("but magnitude **collapses the model** at " + ", ".join(
                        f"{100 * e['ratio']:.0f}% ({e['collapsed']})" for e in coll)
                        + ", so being better than it is no evidence for the strategy")
                parts.append(f"{label}: " + "; ".join(bits))
            model = es[0]["model"]
            out.append(f"* **{fam} (`{model}`), {proto} protocol** ({n_items} test items). " + ". ".join(
                p[0].upper() + p[1:] for p in parts) + ".")
    return "\n".join(out)


TABLES = {
    "anatomy_pruning_bert": lambda d: pruning_table(Path(d), "BERT"),
    "anatomy_pruning_gpt2": lambda d: pruning_table(Path(d), "GPT2"),
    "anatomy_verdict": lambda d: verdict_text(Path(d)),
}
