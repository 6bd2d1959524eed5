"""Dense baselines: perplexity on the held-out test split of each corpus (SparseGPT protocol) and
zero-shot MCQ accuracy (lm-evaluation-harness ``acc``/``acc_norm``).  Every pruning study compares
against these numbers."""

from __future__ import annotations

import pandas as pd

from minilib.data import corpus_splits, load_mcq
from minilib.eval import mcq_accuracy, perplexity


def perplexity_table(model, tokenizer, corpora: list[str], seqlen: int = 512, max_windows: int = 16) -> pd.DataFrame:
    """One row per corpus: ``corpus, test_tokens, perplexity`` on its test split."""
    rows = []
    for c in corpora:
        sp = corpus_splits(tokenizer, c)
        rows.append({"corpus": c, "test_tokens": len(sp["test"]),
                     "perplexity": perplexity(model, sp["test"], seqlen, max_windows=max_windows)})
    return pd.DataFrame(rows)


def mcq_table(model, tokenizer, tasks: list[str], n: int | None = 200) -> pd.DataFrame:
    """One row per MCQ task: ``task, acc, acc_norm, acc_stderr, acc_norm_stderr, n, chance``."""
    return pd.DataFrame([{"task": t, **mcq_accuracy(model, tokenizer, load_mcq(t, n=n))} for t in tasks])
