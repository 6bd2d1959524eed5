"""Contextual pruning on the embedded decoder (SmolLM2-135M)."""

import pytest
import torch

from minilib.studies.contextual import domain_stats, prune_neurons, prune_vocabulary
from minilib.data import corpus_splits, eval_windows
from minilib.eval import perplexity

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_splits(smollm2):
    return corpus_splits(smollm2.tokenizer, "tiny")


def fresh(smollm2):
    from minilib.models import load
    return load("smollm2-135m").model


def test_small_eps_keeps_perplexity(smollm2, tiny_splits):
    sp = tiny_splits
    test = eval_windows(sp["test"], 128, 4)
    dense = perplexity(smollm2.model, test)
    model = fresh(smollm2)
    st = domain_stats(model, sp["calib"], n_windows=8, seqlen=128)
    rep = prune_neurons(model, st, 1e-2, verbose=False)
    removed = rep.ffn_ratio
    ppl = perplexity(model, test)
    # measured (4 windows x 128): dense 18.06; ε=1e-2 removes 7.3% of FFN neurons -> 21.96 (+22%); bound +35%
    assert 0.03 < removed < 0.15
    assert dense < ppl <= dense * 1.35
    assert rep.after["sizes"]["ffn"] < rep.before["sizes"]["ffn"]


def test_embedding_pruning_alone(smollm2, tiny_splits):
    sp = tiny_splits
    model = fresh(smollm2)
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
