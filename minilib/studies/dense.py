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


# --- the notebook's parameters and profiles (minilib.params) -----------------------------------

from minilib.params import Int, List, Str, HubOr  # noqa: E402

SPEC = {
    "model": Str(help="embedded, tiny, local folder or hub id"),
    "corpora": List(Str(), min_len=1),
    "seqlen": Int(2),
    "max_windows": Int(0, help="evaluation windows per corpus (0 = all)"),
    "mcq_sets": List(Str()),
    "mcq_n": Int(0, help="items per MCQ set (0 = the whole set)"),
}
PROFILES = {
    "test": dict(model="smollm2-135m", corpora=["wiki", "tiny"], seqlen=128, max_windows=2, mcq_sets=["arc_easy"],
                 mcq_n=8),
    "default": dict(model="smollm2-135m", corpora=["wiki", "c4", "tiny", "code", "technical"], seqlen=512,
                    max_windows=16, mcq_sets=["sciq", "arc_easy", "piqa"], mcq_n=200),
    "paper": dict(model=HubOr("facebook/opt-125m", "smollm2-135m"), corpora=["wiki", "c4", "tiny", "code", "technical"],
                  seqlen=2048, max_windows=0, mcq_sets=["sciq", "arc_easy", "arc_challenge", "piqa", "openbookqa"],
                  mcq_n=0),
}
NOTEBOOKS = {"dense_baselines": (SPEC, PROFILES)}
