"""Tables of the README from ``results/dense_baselines.json``: perplexity per corpus, MCQ accuracy,
and the verdict (which MCQ sets the model answers above chance)."""

from __future__ import annotations

from pathlib import Path

from minilib.data.tasks import LMEVAL_SPLIT
from minilib.stats import format_ci, wilson_interval
from minilib.tables.common import load


def _load(results_dir: Path) -> dict:
    return load(results_dir, "dense_baselines")


def _records(res: dict, kind: str) -> list[dict]:
    rows = [r for r in res.get("records", []) if r.get("kind") == kind]
    if not rows:
        raise ValueError(f"dense_baselines.json has no {kind!r} records")
    return rows


def _mcq_interval(r: dict, key: str) -> tuple[float, float]:
    if f"{key}_ci95_low" in r:
        return r[f"{key}_ci95_low"], r[f"{key}_ci95_high"]
    # results written before intervals were recorded: the Wilson interval of the same k out of n
    return wilson_interval(int(round(r[key] * r["n"])), int(r["n"]))


def table_perplexity(results_dir: Path) -> str:
    """Perplexity per corpus with its 95% t-interval over windows."""
    res = _load(results_dir)
    rows = _records(res, "perplexity")
    model = res["parameters"].get("model", "?")
    lines = [f"{model}, perplexity on the held-out test split of each corpus (our protocol: SparseGPT/Wanda's "
             "non-overlapping windows; 95% t-interval over windows of the mean NLL per token):", "",
             "| corpus | perplexity [95% CI] | windows x tokens | test tokens |", "|---|---|---|---|"]
    for r in rows:
        if "ppl_low" in r:
            ppl = format_ci(r["perplexity"], r["ppl_low"], r["ppl_high"], digits=2)
        else:
            ppl = f"{r['perplexity']:.2f} [no interval recorded: re-run]"
        shape = f"{r['windows']} x {r['seqlen']}" if "windows" in r else \
            f"<= {res['parameters'].get('max_windows', '?')} x {res['parameters'].get('seqlen', '?')}"
        lines.append(f"| {r['corpus']} | {ppl} | {shape} | {r['test_tokens']:,} |")
    return "\n".join(lines)


def table_mcq(results_dir: Path) -> str:
    """Zero-shot MCQ acc / acc_norm with 95% Wilson intervals, n and the split scored."""
    res = _load(results_dir)
    rows = _records(res, "mcq")
    lines = ["Zero-shot MCQ, lm-evaluation-harness prompts and metrics (`acc`, `acc_norm`), 95% Wilson intervals "
             "over items; *split* is the split we score, *lm-eval* the one lm-eval scores (its test split is not "
             "embedded for SciQ, ARC and OpenBookQA):", "",
             "| task | split (lm-eval) | n of set | acc [95% CI] | acc_norm [95% CI] | chance |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        # records without "split" come from runs before the lm-eval prompts: say so rather than pass them off
        split = r.get("split", "validation, first items, older prompts: re-run")
        lm = r.get("lmeval_split") or LMEVAL_SPLIT.get(r["task"].split(":")[0], "?")
        total = r.get("n_total")
        n = f"{r['n']:,}" + (f" of {total:,}" if total and total != r["n"] else " (whole)" if total else "")
        lines.append(f"| {r['task']} | {split} ({lm}) | {n} | {format_ci(r['acc'], *_mcq_interval(r, 'acc'))} | "
                     f"{format_ci(r['acc_norm'], *_mcq_interval(r, 'acc_norm'))} | {r['chance']:.2f} |")
    return "\n".join(lines)


def table_verdict(results_dir: Path) -> str:
    """Which MCQ sets the model answers above chance: a one-sided exact binomial test per set (the
    unit: the test item), Holm over the sets of the block, with the smallest accuracy each set's n
    could have resolved."""
    from minilib.stats import above_chance, decide
    res = _load(results_dir)
    rows = _records(res, "mcq")
    model = res["parameters"].get("model", "the model")
    tests = decide([above_chance(int(round(r["acc"] * r["n"])), int(r["n"]), r["chance"], label=r["task"],
                                 unit="items") for r in rows])
    fmt = lambda r, t: (f"{r['task']} {format_ci(r['acc'], t.low, t.high)} vs chance {r['chance']:.2f} "  # noqa: E731
                        f"(n = {t.n}, Holm p {'< 0.001' if t.p_adj < 0.001 else f'= {t.p_adj:.3f}'})")
    above = [fmt(r, t) for r, t in zip(rows, tests) if t.outcome == "a higher"]
    rest = [fmt(r, t) + (f", resolvable: above {t.mde:.3f}" if t.mde == t.mde else "")
            for r, t in zip(rows, tests) if t.outcome != "a higher"]
    head = (f"{model}, our protocol (lm-eval prompts on the embedded splits); one family of {len(tests)} one-sided "
            "exact binomial tests against chance, Holm-corrected; accuracy with its 95% Wilson interval.")
    out = [head]
    if above:
        out.append(f"**Above chance**: {'; '.join(above)}.")
    if rest:
        out.append(f"**Not resolved from chance**: {'; '.join(rest)}.")
    return " ".join(out)


TABLES = {"dense_perplexity": table_perplexity, "dense_mcq": table_mcq, "dense_verdict": table_verdict}
