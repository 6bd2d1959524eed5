"""Contextual pruning on the embedded decoder (SmolLM2-135M) and TinyStories: the authors' neuron
rule, and every stage scored on the same test text (bits per byte)."""

import pytest
import torch

from minilib.data import corpus_splits, eval_windows
from minilib.eval import perplexity
from minilib.eval.bytes import agree_perplexity, bpb_difference, score_text, text_chunks
from minilib.studies.contextual import domain_stats, prune_neurons, prune_vocabulary, split_text

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
