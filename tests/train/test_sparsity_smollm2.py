"""A pruned SmolLM2 stays pruned through recovery fine-tuning: SparseGPT 50% and 2:4 (calibration
from C4), then a few full fine-tuning steps on Wikipedia: every pruned weight exactly zero, the
sparsity exactly what it was, every group of 4 inputs still 2:4.

The embedded SmolLM2-135M, cut to its first ``BLOCKS`` blocks: real weights, real layer shapes,
tokenizer and corpora (its 49k-token vocabulary head included), at a cost that fits the suite.  SparseGPT
needs at least as many calibration tokens as the widest layer input (1536, the FFN down projection),
and on the whole 30-block model one prune took 235 s and two recovery steps 150-250 s on 2 shared
CPU cores (measured), so the whole model would take about 15 minutes for the two patterns.
"""

import copy

import pytest

from minilib.data import calibration_set, corpus_splits
from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.prune import prune_model
from minilib.train import finetune

BLOCKS = 2


@pytest.fixture(scope="module")
def cut_smollm2():
    """SmolLM2-135M's first ``BLOCKS`` blocks, its C4 calibration windows and its Wikipedia splits."""
    loaded = load("smollm2-135m")
    del loaded.adapter.blocks(loaded.model)[BLOCKS:]
    loaded.model.config.num_hidden_layers = BLOCKS
    calib = calibration_set(loaded.tokenizer, "c4", 4, 384, seed=0)   # 1536 tokens: the widest layer input
    return loaded, calib, corpus_splits(loaded.tokenizer, "wiki")


@pytest.mark.integration
@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["50%", "2:4"])
def test_sparsegpt_sparsity_survives_recovery(nm, cut_smollm2):
    loaded, calib, wiki = cut_smollm2
    m, ad = copy.deepcopy(loaded.model), loaded.adapter
    rep = prune_model(m, "sparsegpt", 0.5, nm=nm, calib=calib, measure_error=False, device="cpu")
    layers = {(i, n): l for i, b in enumerate(ad.blocks(m)) for n, l in ad.linear_layers(b).items()}
    before = {k: weight_oi(l).detach().clone() for k, l in layers.items()}
    params = sum(w.numel() for w in before.values())
    zeros = sum(int((w == 0).sum()) for w in before.values())
    assert len(layers) == 7 * BLOCKS and rep.overall["zeros"] == zeros
    assert zeros / params == pytest.approx(0.5, abs=1e-5)

    res = finetune(m, wiki["train"][:64 * 16], wiki["dev"], seqlen=64, batch_size=2, lr=1e-4, max_steps=3,
                   eval_every=3, dev_windows=2, verbose=False)
    assert res.steps == 3
    moved = 0
    for k, w0 in before.items():
        w1, pruned = weight_oi(layers[k]), w0 == 0
        assert (w1[pruned] == 0).all(), f"{k}: {int((w1[pruned] != 0).sum())} pruned weights moved"
        moved += int((w1[~pruned] != w0[~pruned]).sum())
        if nm:
            groups = (w1 == 0).view(w1.shape[0], -1, 4).sum(-1)
            assert (groups >= 2).all(), f"{k}: a group of 4 inputs lost its 2:4 pattern"
    assert moved > 0.5 * (params - zeros)                                # the live weights did train
    assert res.sparsity["pruned"] == res.sparsity["kept"] == zeros and res.sparsity["layers"] == len(layers)
    assert res.sparsity_before == zeros / params
    assert res.sparsity_after == sum(int((weight_oi(l) == 0).sum()) for l in layers.values()) / params
    assert res.sparsity_after >= res.sparsity_before
