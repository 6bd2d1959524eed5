"""The ``dense_baselines`` notebook's parameters and profiles (``minilib.params``); the experiment is
``minilib.studies.dense``."""

from __future__ import annotations

from minilib.params import HubOr, Int, List, Str

SPEC = {
    "model": Str(help="embedded, tiny, local folder or hub id"),
    "corpora": List(Str(), min_len=1),
    "seqlen": Int(2),
    "max_windows": Int(0, help="evaluation windows per corpus (0 = every window of the test split)"),
    "mcq_sets": List(Str()),
    "mcq_n": Int(0, help="at most this many items per MCQ set, a seeded random subset (0 = the whole set)"),
    "mcq_method": Str(("auto", "batched", "shared"), help="MCQ scoring path (auto: by device and lengths)"),
    "seed": Int(0, help="seed of the MCQ subsets (0: the one subset every notebook scores)"),
}
PROFILES = {
    "test": dict(model="smollm2-135m", corpora=["wiki", "tiny"], seqlen=128, max_windows=2, mcq_sets=["arc_easy"],
                 mcq_n=8, mcq_method="auto", seed=0),
    # default (2 CPU cores, 2 threads: batched MCQ path).  Every test window of every corpus would be
    # 263 x 512 = 135k tokens, the whole MCQ sets 705k question+choice tokens (sciq 426k, piqa 133k,
    # arc_easy 72k, arc_challenge 44k, openbookqa 30k): ~25 min at ~480 tokens/s (SmolLM2-135M on the 2-core
    # CPU, benchmarks/bench_eval.py).
    # CPU budget: 32 windows of 128 tokens per corpus (32 windows: the t-interval's unit; every corpus's
    # test split holds at least 48 such windows, where at 512 tokens tiny and technical hold only 12 and
    # 14), ~20k tokens in all; the same windows as SparseGPT_one_shot's evaluation on wiki, so the two
    # notebooks' dense perplexities agree.  60 items per MCQ set, the same seeded subset the other
    # notebooks score (SciQ's long support paragraphs make it the costliest: ~1k scored tokens per item)
    "default": dict(model="smollm2-135m", corpora=["wiki", "c4", "tiny", "code", "technical"], seqlen=128,
                    max_windows=32, mcq_sets=["sciq", "arc_easy", "arc_challenge", "openbookqa", "piqa"],
                    mcq_n=60, mcq_method="auto", seed=0),
    "paper": dict(model=HubOr("facebook/opt-125m", "smollm2-135m"), corpora=["wiki", "c4", "tiny", "code", "technical"],
                  seqlen=2048, max_windows=0,
                  mcq_sets=["sciq", "arc_easy", "arc_challenge", "piqa", "openbookqa", "hellaswag"],
                  mcq_n=0, mcq_method="auto", seed=0),
}
NOTEBOOKS = {"dense_baselines": (SPEC, PROFILES)}
