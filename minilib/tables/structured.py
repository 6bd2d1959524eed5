"""Tables of docs/anatomy.md and the README from ``results/<family>_pruning_strategy.json``: the
strategy against the baselines and ablations per protocol and ratio, and the verdicts.

Baselines (``minilib.studies.structured.BASELINES``): ``neuron-norm`` and ``neuron-maxprod`` (one run
each, compared over the test items), ``random`` and ``authors-random`` (several random-mask seeds,
compared over the seeds).  Results written before the rename call ``neuron-norm`` "magnitude"; they
are read as ``neuron-norm``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from minilib.studies.structured import SEEDED, canonical_methods, seed_summary


FAMILIES = {"BERT": "encoder", "GPT2": "decoder"}
STRATEGY, UNIFORM = "anatomy", "anatomy-uniform"
# the columns of the pruning table, in order (those a results file has)
METHOD_ORDER = (STRATEGY, UNIFORM, "neuron-norm", "neuron-maxprod", "authors-random", "random")
BASELINE_ORDER = ("neuron-norm", "neuron-maxprod", "authors-random", "random")
METHOD_LABEL = {STRATEGY: "anatomy strategy", UNIFORM: "anatomy, uniform budget", "neuron-norm": "neuron-norm",
                "neuron-maxprod": "neuron-maxprod", "authors-random": "authors-random", "random": "random"}


from minilib.tables.common import maybe_load as _read, missing as _missing  # noqa: E402


def _fmt_p(p: float) -> str:
    """``"= 0.042"`` / ``"< 0.001"``: what follows a ``p``."""
    return "n/a" if p is None or p != p else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def _ci(est, lo, hi, digits=3):
    from minilib.stats import format_ci
    return format_ci(est, lo, hi, digits)


def _protocols(res: dict, present) -> list[str]:
    return [x for x in ("head-only", "finetuned") if x in set(present)]


def _no_finetuned(res: dict, fam: str) -> str:
    """The sentence saying a run has no fine-tuned protocol ("" where it has one)."""
    protos = res.get("parameters", {}).get("protocols") or []
    if "finetuned" in protos:
        return ""
    return (f"No fine-tuned protocol in this run (`protocols = {protos}`): every {fam} number is the frozen "
            f"pretrained model with its logistic head, not a fine-tuned model.")


def pruning_table(results_dir: Path, fam: str) -> str:
    """The strategy against the baselines for one family: accuracy per protocol and ratio, and the
    paired tests."""
    stem = f"{fam}_pruning_strategy"
    res = _read(results_dir, stem)
    if not res or "paired_tests" not in res.get("metrics", {}):
        return _missing(stem)
    p = res["parameters"]
    df = canonical_methods(pd.DataFrame(res["records"]))
    summ = seed_summary(df)
    tests = canonical_methods(pd.DataFrame(res["metrics"]["paired_tests"]))
    present = set(df.method)
    methods = [m for m in METHOD_ORDER if m in present]
    compared = [b for b in BASELINE_ORDER if len(tests) and b in set(tests.baseline)]
    has_ppl = "perplexity" in df and pd.to_numeric(df["perplexity"], errors="coerce").notna().any()

    def seeds_of(m):
        return int(df[df.method == m]["seed"].nunique()) if "seed" in df else 1

    def head_of(m):
        if m in SEEDED:
            return f"{METHOD_LABEL[m]} (mean of {seeds_of(m)} seeds, t-interval over seeds)"
        return METHOD_LABEL[m]

    def test_head(b):
        return (f"strategy - {b} mean [paired bootstrap], paired t p" if b in SEEDED
                else f"strategy - {b} [paired bootstrap], McNemar p")
    ppl_methods = [m for m in (STRATEGY, "neuron-norm", "neuron-maxprod", "random") if m in present]
    head = ["protocol", "% FFN removed"] + [head_of(m) for m in methods] + [test_head(b) for b in compared] + \
        ([f"perplexity {' / '.join('strategy' if m == STRATEGY else m for m in ppl_methods)}"] if has_ppl else [])
    note = _no_finetuned(res, fam)
    lines = [f"`{p['model']}` on `{p['dataset']}`, n = {int(df['n_test'].max())} test examples, decision state "
             f"`{p.get('decision_state', 'residual')}`; accuracy with 95% intervals (Wilson for one run)."
             + (f" {note}" if note else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for proto in _protocols(res, summ.protocol):
        for ratio in sorted(set(summ[summ.protocol == proto].ratio)):
            def row_of(m):
                r = summ[(summ.protocol == proto) & (summ.method == m) & (summ.ratio == ratio)]
                return None if r.empty else r.iloc[0]

            def cell(m):
                r = row_of(m)
                if r is None:
                    return ""
                txt = _ci(r.acc, r.ci95_low, r.ci95_high)
                if m in SEEDED and ratio != 0:
                    txt += f" (seeds {r.acc_min:.3f}-{r.acc_max:.3f})"
                return txt
            cells = [proto, f"{100 * ratio:.0f}"] + [cell(m) for m in methods]
            for b in compared:
                t = tests[(tests.protocol == proto) & (tests.ratio == ratio) & (tests.baseline == b)]
                r = None if t.empty else t.iloc[0]
                cells.append("" if r is None else f"{_ci(r['diff'], r['diff_low'], r['diff_high'])}, p {_fmt_p(r['p'])}")
            if has_ppl:
                pp = []
                for m in ppl_methods:
                    r = row_of(m)
                    v = None if r is None else r.get("perplexity")
                    pp.append("n/a" if v is None or v != v else f"{v:.4g}")
                cells.append(" / ".join(pp))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLLAPSE_PPL = 10.0   # a model whose perplexity exceeds this multiple of the dense model's has collapsed


def _acc_rows(res: dict) -> pd.DataFrame:
    from minilib.studies.structured import attach_correct
    df = pd.DataFrame(res["records"])
    df["seed"] = [None if v is None or v != v else int(v) for v in df["seed"]] if "seed" in df else None
    return canonical_methods(attach_correct(df, res.get("correct", {})))


def _row_collapse(r, majority: float, dense_ppl: float | None) -> tuple[bool, bool]:
    """(accuracy not above the majority class, perplexity beyond ``COLLAPSE_PPL`` x dense)."""
    ppl = r.get("perplexity")
    ppl = float(ppl) if ppl is not None and ppl == ppl else None
    return bool(r.ci95_low <= majority), bool(dense_ppl and ppl is not None and ppl > COLLAPSE_PPL * dense_ppl)


def collapse_note(g: pd.DataFrame, method: str, majority: float, dense_ppl: float | None) -> str:
    """Why ``method`` at this protocol and ratio has collapsed the model ("" where it has not): its
    accuracy's Wilson interval does not lie above the majority class, or (decoders) its perplexity
    exceeds ``COLLAPSE_PPL`` x the dense model's.  A seeded method has collapsed where every seed's
    model has."""
    rows = g[g.method == method]
    if rows.empty:
        return ""
    flags = [_row_collapse(r, majority, dense_ppl) for _, r in rows.iterrows()]
    if not all(a or b for a, b in flags):
        return ""
    accs = rows.acc.to_numpy(float)
    ppls = pd.to_numeric(rows.get("perplexity"), errors="coerce") if "perplexity" in rows else None
    why = []
    if all(a for a, _ in flags):
        why.append(f"accuracy {accs.mean():.3f}" + (f" (seeds {accs.min():.3f}-{accs.max():.3f})" if len(rows) > 1 else "")
                   + f", its 95% interval not above the majority class {majority:.3f}")
    if all(b for _, b in flags):
        why.append(f"perplexity {ppls.min():,.0f}" + (f"-{ppls.max():,.0f}" if len(rows) > 1 else "")
                   + f" against dense {dense_ppl:.1f}")
    if not why:   # every seed collapsed, some by accuracy and some by perplexity
        why.append("every seed's model by accuracy or perplexity")
    return "; ".join(why)


# (a, b): "a against b", in the order the verdict prints them.  The strategy against every baseline;
# the decomposition: the strategy against its uniform-budget version (the layer budget), and that
# uniform-budget version against the weight-score baselines, which also prune a uniform budget (the
# anatomy score alone).  Not the uniform version against random: with 3 seeds a t over seeds cannot
# resolve anything in a family of this size (smallest resolvable difference > 0.5), it would only
# enlarge the family.
COMPARISONS = ((STRATEGY, "neuron-norm"), (STRATEGY, "neuron-maxprod"), (STRATEGY, "random"),
               (STRATEGY, "authors-random"), (STRATEGY, UNIFORM),
               (UNIFORM, "neuron-norm"), (UNIFORM, "neuron-maxprod"))
LABELS = {
    (STRATEGY, "neuron-norm"): "strategy vs neuron-norm",
    (STRATEGY, "neuron-maxprod"): "strategy vs neuron-maxprod",
    (STRATEGY, "random"): "strategy vs the random mean (over the random-mask seeds)",
    (STRATEGY, "authors-random"): "strategy vs the authors' random baseline (one index set in every layer; "
                                  "over its seeds)",
    (STRATEGY, UNIFORM): "strategy vs its uniform-budget ablation (same anatomy score, equal budget per layer)",
    (UNIFORM, "neuron-norm"): "the anatomy score alone (uniform budget) vs neuron-norm",
    (UNIFORM, "neuron-maxprod"): "the anatomy score alone (uniform budget) vs neuron-maxprod",
}


def block_tests(results_dir: Path) -> list[dict]:
    """Every comparison the anatomy verdict block prints, over both families, decided as one family.

    Per family, protocol and ratio, each pair of ``COMPARISONS`` present in the results: against a
    single-run baseline (``neuron-norm``, ``neuron-maxprod``, the uniform-budget ablation) the exact
    McNemar test over the test items; against a seeded baseline (``random``, ``authors-random``) a t
    over its random-mask seeds of the accuracy difference.  Each entry: ``family, model, protocol,
    ratio, a, b, what`` (``"a vs b"``), ``test`` (a decided ``minilib.stats.Test``), ``collapsed`` (why
    ``b`` has collapsed the model, "" where it has not) and ``collapsed_a`` (the same for ``a``)."""
    from minilib.stats import decide, paired_binary, paired_difference
    entries = []
    for fam in FAMILIES:
        res = _read(results_dir, f"{fam}_pruning_strategy")
        if not res or "correct" not in res:
            continue
        df = _acc_rows(res)
        majority = float(res["metrics"].get("majority", 0.5))
        model = res["parameters"]["model"]
        for proto in _protocols(res, df.protocol):
            dp = df[df.protocol == proto]
            dense = dp[dp.ratio == 0]
            dense_ppl = float(pd.to_numeric(dense.get("perplexity"), errors="coerce").mean()) if "perplexity" in dp \
                else None
            dense_ppl = dense_ppl if dense_ppl == dense_ppl else None
            for ratio in sorted(set(dp.ratio) - {0.0}):
                g = dp[dp.ratio == ratio]
                base = dict(family=fam, model=model, protocol=proto, ratio=float(ratio))
                lab = f"{fam} {proto} {100 * ratio:.0f}%"
                for a, b in COMPARISONS:
                    ra, rb = g[g.method == a], g[(g.method == b) & g.correct.notna()]
                    if ra.empty or ra.iloc[0].correct is None or rb.empty:
                        continue
                    ca = ra.iloc[0].correct.astype(float)
                    if b in SEEDED:
                        acc_b = rb.acc.to_numpy(float)
                        test = paired_difference(np.full(len(acc_b), ca.mean()), acc_b, unit="random seeds",
                                                 label=f"{lab}: {a} vs {b}",
                                                 what="t over random-mask seeds of the accuracy difference")
                    else:
                        test = paired_binary(ca, rb.iloc[0].correct.astype(float), label=f"{lab}: {a} vs {b}")
                    entries.append({**base, "a": a, "b": b, "what": f"{a} vs {b}", "test": test,
                                    "collapsed": collapse_note(g, b, majority, dense_ppl),
                                    "collapsed_a": collapse_note(g, a, majority, dense_ppl)})
    tests = decide([e["test"] for e in entries])
    for e, t in zip(entries, tests):
        e["test"] = t
    return entries


def _effects(es) -> str:
    return ", ".join(f"{100 * e['ratio']:.0f}% ({e['test'].estimate:+.3f} [{e['test'].low:+.3f}, {e['test'].high:+.3f}], "
                     f"Holm p {_fmt_p(e['test'].p_adj)})" for e in es)


def _pcts(es) -> str:
    return ", ".join(f"{100 * e['ratio']:.0f}%" for e in es)


def _evidence(es) -> tuple[list, list]:
    """(resolved a > b where b has not collapsed, resolved a < b): what supports a claim."""
    hi = [e for e in es if e["test"].outcome == "a higher" and not e["collapsed"]]
    lo = [e for e in es if e["test"].outcome == "a lower"]
    return hi, lo


def work_summary(es: list[dict]) -> str:
    """Whether the anatomy score or the layer budget does the work, in words, from one family and
    protocol's entries: the strategy against its uniform-budget ablation (the budget), the
    uniform-budget anatomy score against the uniform-budget baselines (the score)."""
    budget = [e for e in es if (e["a"], e["b"]) == (STRATEGY, UNIFORM)]
    if not budget:
        return ("**What does the work**: the uniform-budget ablation did not run, so the anatomy score and the "
                "layer budget are not separated.")
    hi, lo = _evidence(budget)
    if hi and lo:
        b_txt = f"the layer budget helps at {_pcts(hi)} and hurts at {_pcts(lo)}"
    elif hi:
        b_txt = f"the layer budget **helps** (the strategy beats its uniform-budget version at {_pcts(hi)})"
    elif lo:
        b_txt = f"the layer budget **hurts** (the strategy is below its uniform-budget version at {_pcts(lo)})"
    else:
        b_txt = "the layer budget makes no resolved difference (strategy vs its uniform-budget version)"
    s_bits, score_hi, score_lo, unresolved = [], [], [], []
    for b in ("neuron-norm", "neuron-maxprod"):
        eb = [e for e in es if (e["a"], e["b"]) == (UNIFORM, b)]
        if not eb:
            continue
        h, l_ = _evidence(eb)
        score_hi += h
        score_lo += l_
        only_collapsed = [e for e in eb if e["test"].outcome == "a higher" and e["collapsed"]]
        if only_collapsed:
            s_bits.append(f"beats only a collapsed {b} at {_pcts(only_collapsed)} (no evidence)")
        if h and l_:
            s_bits.append(f"beats {b} at {_pcts(h)} and is below it at {_pcts(l_)}")
        elif h:
            s_bits.append(f"**beats** {b} at {_pcts(h)}")
        elif l_:
            s_bits.append(f"is **below** {b} at {_pcts(l_)}")
        elif not only_collapsed:
            unresolved.append(b)
    if unresolved:
        s_bits.append("is not distinguished from " + " or ".join(unresolved))
    s_txt = ("the anatomy score alone (uniform budget) " + ", ".join(s_bits)) if s_bits else \
        "no uniform-budget baseline to compare the anatomy score alone with"
    budget_works, score_works = bool(hi) and not lo, bool(score_hi) and not score_lo
    if budget_works and score_works:
        short = "both the anatomy score and the layer budget contribute"
    elif budget_works:
        short = "the layer budget does the work, not the anatomy score"
    elif score_works:
        short = "the anatomy score does the work, not the layer budget"
    elif lo or score_lo:
        short = "neither the anatomy score nor the layer budget is shown to help; where resolved, they hurt"
    else:
        short = "neither the anatomy score nor the layer budget is shown to help at these ratios"
    return f"**What does the work**: {b_txt}; {s_txt}. In short: **{short}**."


def verdict_text(results_dir: Path) -> str:
    """The verdict sentences: one multiple-comparison family over every test printed (both families,
    every protocol, ratio and comparison); a baseline that has collapsed the model is reported as
    collapsed, not as evidence for the strategy; per family and protocol a plain sentence on whether
    the anatomy score or the layer budget does the work."""
    entries = block_tests(results_dir)
    out = []
    for fam in FAMILIES:
        if not any(e["family"] == fam for e in entries):
            out.append(f"* **{fam}**: " + _missing(f"{fam}_pruning_strategy"))
    if not entries:
        return "\n".join(out)
    n_tests = entries[0]["test"].family
    out.insert(0, f"Our protocol (no retraining after pruning). One multiple-comparison family: the {n_tests} tests "
               "below (Holm). Against neuron-norm, neuron-maxprod and the uniform-budget ablation the unit is the "
               "test item (exact McNemar); against the random baselines it is the random-mask seed (t over seeds: "
               "the strategy must beat the spread of random masks, not one draw).")
    for fam in FAMILIES:
        res = _read(results_dir, f"{fam}_pruning_strategy")
        fe = [e for e in entries if e["family"] == fam]
        if fe and res is not None and _no_finetuned(res, fam):
            out.append(f"* **{fam} (`{fe[0]['model']}`)**: " + _no_finetuned(res, fam))
        for proto in ("head-only", "finetuned"):
            es = [e for e in fe if e["protocol"] == proto]
            if not es:
                continue
            n_items = max((e["test"].n for e in es if e["test"].unit == "test items"), default=0)
            parts = []
            for key in COMPARISONS:
                ew = [e for e in es if (e["a"], e["b"]) == key]
                if not ew:
                    continue
                bits = []
                hit = [e for e in ew if e["test"].outcome == "a higher" and not e["collapsed"]]
                if hit:
                    bits.append("**better** at " + _effects(hit))
                hit = [e for e in ew if e["test"].outcome == "a higher" and e["collapsed"]]
                if hit:
                    bits.append(f"better only than a collapsed {key[1]} at " + _effects(hit) + " (no evidence for it)")
                hit = [e for e in ew if e["test"].outcome == "a lower"]
                if hit:
                    bits.append("**worse** at " + _effects(hit))
                rest = [e for e in ew if not e["test"].resolved]
                if rest:
                    mde = max((e["test"].mde for e in rest if e["test"].mde == e["test"].mde), default=float("nan"))
                    n = max(e["test"].n for e in rest)
                    bits.append("not resolved at " + _pcts(rest) + f" (n = {n} {rest[0]['test'].unit}"
                                + (f"; resolvable: a difference beyond +-{mde:.3f})" if mde == mde else ")"))
                parts.append(f"{LABELS[key]}: " + "; ".join(bits))
            collapsed = {}
            for e in es:
                for m, why in ((e["a"], e["collapsed_a"]), (e["b"], e["collapsed"])):
                    if why:
                        collapsed.setdefault(m, {})[e["ratio"]] = why
            if collapsed:
                parts.append(f"collapsed models (accuracy whose 95% interval is not above the majority class, or "
                             f"perplexity over {COLLAPSE_PPL:g}x the dense model's): " + "; ".join(
                                 f"{METHOD_LABEL.get(m, m)} at " + ", ".join(
                                     f"{100 * r:.0f}% ({why})" for r, why in sorted(collapsed[m].items()))
                                 for m in METHOD_ORDER if m in collapsed))
            model = es[0]["model"]
            out.append(f"* **{fam} (`{model}`), {proto} protocol** ({n_items} test items). " + ". ".join(
                p[0].upper() + p[1:] for p in parts) + ". " + work_summary(es))
    return "\n".join(out)


TABLES = {
    "anatomy_pruning_bert": lambda d: pruning_table(Path(d), "BERT"),
    "anatomy_pruning_gpt2": lambda d: pruning_table(Path(d), "GPT2"),
    "anatomy_verdict": lambda d: verdict_text(Path(d)),
}
