"""Dense baselines: perplexity on the held-out test split of each corpus (SparseGPT protocol, with a
95% t-interval over windows) and zero-shot MCQ accuracy (lm-evaluation-harness prompts and
``acc``/``acc_norm``, 95% Wilson intervals).  Every pruning study compares against these numbers.

``minilib.tables.dense`` turns ``results/dense_baselines.json`` into the README's tables and verdict
(``python -m tools.tables``)."""

from __future__ import annotations


import pandas as pd

from minilib.data import corpus_splits, load_mcq
from minilib.data.tasks import LMEVAL_SPLIT, default_mcq_split
from minilib.eval import mcq_accuracy, perplexity_ci


def perplexity_table(model, tokenizer, corpora: list[str], seqlen: int = 512,
                     max_windows: int | None = None) -> pd.DataFrame:
    """One row per corpus: ``corpus, test_tokens, windows, seqlen, perplexity, ppl_low, ppl_high, nll``
    (all windows of the test split unless ``max_windows``; ``nll``: summed NLL per window, for paired
    comparisons with ``minilib.eval.perplexity_ratio_ci``)."""
    rows = []
    for c in corpora:
        sp = corpus_splits(tokenizer, c)
        r = perplexity_ci(model, sp["test"], seqlen, max_windows=max_windows)
        rows.append({"corpus": c, "test_tokens": len(sp["test"]), "windows": r["windows"], "seqlen": r["seqlen"],
                     "perplexity": r["ppl"], "ppl_low": r["ci95_low"], "ppl_high": r["ci95_high"], "nll": r["nll"]})
    return pd.DataFrame(rows)


def mcq_table(model, tokenizer, tasks: list[str], n: int | None = None, seed: int = 0,
              method: str = "auto") -> pd.DataFrame:
    """One row per MCQ task with 95% Wilson intervals: ``task, split, lmeval_split, n, n_total, acc,
    acc_ci95_low, acc_ci95_high, acc_norm, acc_norm_ci95_low, acc_norm_ci95_high, chance, method``.
    ``n=None``: the whole set; else a seeded random subset of ``n`` items when the set is larger."""
    rows = []
    for t in tasks:
        items = load_mcq(t)
        total = len(items)
        if n is not None and n < total:
            items = load_mcq(t, n=n, seed=seed)
        r = mcq_accuracy(model, tokenizer, items, method=method)
        base = t.split(":")[0]
        rows.append({"task": t, "split": default_mcq_split(t), "lmeval_split": LMEVAL_SPLIT.get(base, ""),
                     "n_total": total, **{k: v for k, v in r.items() if not k.endswith("_stderr")}})
    return pd.DataFrame(rows)


# --- tables for README/docs (tools.tables) ---------------------------------------------------------
