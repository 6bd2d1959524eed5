"""Contextual pruning on the embedded decoder (SmolLM2-135M) and TinyStories: the authors' neuron
rule, and every stage scored on the same test text (bits per byte)."""

import pandas as pd
import pytest
import torch

from minilib.data import corpus_splits, eval_windows
from minilib.eval import perplexity
from minilib.eval.bytes import agree_perplexity, bpb_difference, score_text, text_chunks
from minilib.studies.contextual import (AUTHORS_THRESHOLDS, domain_stats, prune_neurons, prune_vocabulary, split_text,
                                        vocab_coverage)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_splits(smollm2):
    return corpus_splits(smollm2.tokenizer, "tiny")


@pytest.fixture(scope="module")
def stats(smollm2, tiny_splits):
    return domain_stats(smollm2.model, tiny_splits["calib"], n_windows=8, seqlen=128)


@pytest.fixture(scope="module")
def test_text(smollm2, tiny_splits):
    """6 chunks of at most 512 bytes of the test split, and the dense model's score on them."""
    chunks = text_chunks(split_text(smollm2.tokenizer, tiny_splits["test"]), 512, 6)
    return chunks, score_text(smollm2.model, smollm2.tokenizer, chunks, seqlen=256)


def fresh():
    from minilib.models import load
    return load("smollm2-135m").model


def test_authors_rule_removes_early_blocks(smollm2, stats):
    """On the absolute scale the early blocks, whose activations are smallest, lose most: at ε = 0.05,
    measured 6.0% of all FFN neurons (8 x 128 calibration tokens), 99% of them in blocks 0-4."""
    assert stats.scale == "absolute"
    from minilib.prune import mask_threshold, score_neurons_l1
    removed = [int(m.sum()) for m in mask_threshold(score_neurons_l1(smollm2.model, stats), 0.05)]
    total = sum(removed) / sum(f.numel() for f in stats.ffn)
    assert 0.03 < total < 0.10
    assert sum(removed[:5]) >= 0.95 * sum(removed) and sum(removed[8:]) <= 0.01 * sum(removed)  # measured 99.2%, 0.4%
    # the attention-sink neuron: block 11, neuron 1229 is huge at the first position only (measured mean
    # 25.7 over every position of 128-token windows, 2.85 without the first, layer median 0.093)
    sink = stats.mean_abs_ffn[11]
    assert int(sink.argmax()) == 1229
    assert sink[1229] > 4 * stats.mean_abs_ffn_rest[11][1229] > 100 * sink.median()


def test_neuron_pruning_on_the_same_text(smollm2, stats, test_text):
    """ε = 0.05 (authors' rule) before fine-tuning: measured +0.16 [0.14, 0.19] bits per byte (dense 1.00)."""
    chunks, dense = test_text
    model = fresh()
    rep = prune_neurons(model, stats, 0.05, verbose=False)
    assert rep.after["sizes"]["ffn"] < rep.before["sizes"]["ffn"]
    s = score_text(model, smollm2.tokenizer, chunks, seqlen=256)
    d = bpb_difference(s, dense, n_resamples=2000)
    assert 0 < d.low and d.high < 0.4 * dense.bpb


def test_vocabulary_from_calib_on_the_same_text(smollm2, tiny_splits, test_text):
    """Vocabulary kept from the calib split only: the test text's unseen tokens (measured 6.4%) are
    spelt in byte tokens the model never saw in that role, and the same text costs far more bits
    (measured +1.09 [0.90, 1.29] bits per byte on 24 chunks); even where both tokenizations agree the
    disturbed context costs (measured token perplexity x1.13 [1.07, 1.21])."""
    chunks, dense = test_text
    model = fresh()
    rtok, rep = prune_vocabulary(model, smollm2.tokenizer, tiny_splits["calib"], verbose=False)
    assert rtok.vmap.fallback == "bytes" and rep.after["vocab"] < 5000
    s = score_text(model, rtok, chunks, seqlen=256)
    assert 0.02 < s.fallback_rate < 0.12 and s.tokens.sum() > dense.tokens.sum()
    d = bpb_difference(s, dense, n_resamples=2000)
    assert d.low > 0.3
    ag = agree_perplexity(s, dense, n_resamples=2000)
    assert ag["share"] > 0.85 and ag["ratio"].low > 1.0


def test_embedding_pruning_alone(smollm2, tiny_splits):
    sp = tiny_splits
    model = fresh()
    rtok, rep = prune_vocabulary(model, smollm2.tokenizer, torch.cat([sp["calib"], sp["train"]]), verbose=False)
    # the embedding is ~21% of SmolLM2; TinyStories uses ~3k of its 49,152 tokens
    assert rep.after["vocab"] < 5000
    assert rep.params_after < 0.82 * rep.params_before
    # on test windows made only of kept tokens, perplexity cannot rise (softmax over a subset)
    ids = sp["test"][: 8 * 128]
    kept = rtok.vmap.old_to_new[ids] >= 0
    assert kept.float().mean() > 0.9  # measured 0.963: most test tokens were seen in calib + train
    only_kept = eval_windows(ids[kept], 128, 4)  # the test text with its few unseen tokens dropped
    new = rtok.vmap.old_to_new[only_kept]
    dense, pruned = perplexity(smollm2.model, only_kept), perplexity(model, new)
    # measured: 24.00 -> 21.35; the 46k removed tokens held ~11% of the probability mass per token
    assert pruned <= dense + 1e-4
    assert pruned >= dense * 0.75


def test_authors_small_thresholds_remove_nothing(smollm2, stats):
    """The authors' grid (tval2/contextual-pruning evaluation.py: 1e-5, 1e-3, 1e-1) on SmolLM2's absolute
    scale: the small ones remove no FFN neuron (measured 0 of 46,080 on wiki and TinyStories with 16 x 128
    calibration tokens), so the neuron-only settings at those ε are the dense model; 1e-1 removes about
    half (measured 47% on both)."""
    from minilib.prune import mask_threshold, score_neurons_l1
    scores = score_neurons_l1(smollm2.model, stats)
    removed = {e: sum(int(m.sum()) for m in mask_threshold(scores, e)) for e in AUTHORS_THRESHOLDS}
    total = sum(f.numel() for f in stats.ffn)
    assert removed[1e-5] == removed[1e-3] == 0
    assert 0.35 < removed[1e-1] / total < 0.6


def test_vocabulary_coverage_on_tinystories(smollm2, tiny_splits, test_text):
    """Kept vocabulary against calibration text (prefixes of calib): measured on 32 test chunks, 517 tokens
    kept from 1,000 calib tokens (35% of the test tokens spelt in bytes) and 2,530 from the whole split of
    31,186 tokens (6.1%); min_count = 4 keeps 1,234 (11.9%)."""
    chunks, dense = test_text
    rows = pd.DataFrame(vocab_coverage(smollm2.model, smollm2.tokenizer, tiny_splits["calib"], dense.base_ids,
                                       [1000, 4000, 16000, 10 ** 7], [1, 4]))
    for mc, g in rows.groupby("min_count"):
        g = g.sort_values("calib_tokens")
        assert g.vocab.is_monotonic_increasing and g.test_fallback_rate.is_monotonic_decreasing
    one = rows[rows.min_count == 1].set_index("calib_tokens")
    whole = len(tiny_splits["calib"])
    assert one.loc[whole, "vocab"] == 2530 and one.loc[1000, "vocab"] == 517
    assert one.loc[1000, "test_fallback_rate"] > 0.25 and one.loc[whole, "test_fallback_rate"] < 0.12
    assert 75 < one.loc[whole, "size_pct"] < 85  # the embedding is ~21% of SmolLM2
