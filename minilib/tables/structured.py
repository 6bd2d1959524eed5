"""Tables of docs/anatomy.md and the README from ``results/<family>_pruning_strategy.json``: the
strategy against the baselines and ablations per protocol and ratio, and the verdicts."""

from __future__ import annotations

from pathlib import Path

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


def verdict_text(results_dir: Path) -> str:
    """The verdict sentences: per family and protocol, where the strategy is significantly better or
    worse than each baseline (Holm-adjusted p < 0.05 and the paired interval excluding 0), and where
    the data show no difference."""
    out = []
    for fam in FAMILIES:
        stem = f"{fam}_pruning_strategy"
        res = _read(results_dir, stem)
        if not res or "paired_tests" not in res.get("metrics", {}):
            out.append(f"* **{fam}**: " + _missing(stem))
            continue
        tests = pd.DataFrame(res["metrics"]["paired_tests"])
        model = res["parameters"]["model"]
        for proto in [x for x in ("head-only", "finetuned") if x in set(tests.protocol)]:
            parts = []
            for b, label in (("magnitude", "magnitude"), ("random", "the random mean")):
                t = tests[(tests.protocol == proto) & (tests.baseline == b)].sort_values("ratio")
                if t.empty:
                    continue
                bits = []
                for v in ("better", "worse"):
                    tv = t[t.verdict == v]
                    if len(tv):
                        bits.append(f"**{v}** than {label} at " + ", ".join(
                            f"{100 * r.ratio:.0f}% ({r.diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}], "
                            f"Holm p {_fmt_p(r.p_holm)})" for r in tv.itertuples()))
                nd = t[t.verdict == "no difference"]
                if len(nd):
                    why = "Holm p >= 0.05, the paired interval includes 0, or the strategy lies within the range of " \
                        "the random seeds" if b == "random" else "Holm p >= 0.05 or the paired interval includes 0"
                    bits.append(f"not distinguishable from {label} at " + ", ".join(f"{100 * r:.0f}%" for r in nd.ratio)
                                + f" ({why})")
                parts.append("; ".join(bits))
            out.append(f"* **{fam} (`{model}`), {proto} protocol**: the strategy is " + "; ".join(parts) + ".")
    return "\n".join(out)


TABLES = {
    "anatomy_pruning_bert": lambda d: pruning_table(Path(d), "BERT"),
    "anatomy_pruning_gpt2": lambda d: pruning_table(Path(d), "GPT2"),
    "anatomy_verdict": lambda d: verdict_text(Path(d)),
}
