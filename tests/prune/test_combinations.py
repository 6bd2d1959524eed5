"""Criteria from one study with the machinery of another, now that they share one toolkit."""

import numpy as np
import torch

from minilib.calib import Hessian, calibrate, ffn_keys
from minilib.models import ffn_widths, load
from minilib.models.linear import in_features, weight_oi
from minilib.prune import (mask_neuron_weights, mask_neurons, prune_model, reconstruction_stats, remove_neurons,
                           score_neurons_anatomy, score_neurons_l1)
from minilib.studies.anatomy import collect_anatomy
from minilib.studies.contextual import collect_l1_stats


def _windows(n=8, t=32, seed=0):
    return torch.randint(0, 1000, (n, t), generator=torch.Generator().manual_seed(seed))


def test_contextual_l1_scores_as_masks_for_sparsegpt():
    """Mini-GPTs' L1 neuron scores choose which FFN neurons go; SparseGPT's block-by-block pass
    reconstructs the rest of up/gate/down around them, and prunes every other layer to 50%."""
    m, _, ad = load("tiny-llama")
    calib = _windows()
    neuron = mask_neurons(score_neurons_l1(m, collect_l1_stats(m, calib)), 0.25)
    fixed = mask_neuron_weights(m, neuron)
    # the error of just zeroing those weights, on the dense model's block-1 down-projection inputs
    down1 = ffn_keys(ad, 1)["down"]
    h = calibrate(m, calib, {down1: Hessian(in_features(ad.ffn(ad.blocks(m)[1]).down))})[down1]
    w0 = weight_oi(ad.ffn(ad.blocks(m)[1]).down).clone()
    zeroed_err = reconstruction_stats("down", w0, w0.masked_fill(fixed[down1], 0), h.H, h.tokens)["error"]

    rep = prune_model(m, "sparsegpt", 0.5, calib=calib, masks=fixed)
    for k, mask in fixed.items():  # exactly the neurons the L1 scores chose are gone
        blk, path = k.split(".", 1)
        w = weight_oi(ad.blocks(m)[int(blk)].get_submodule(path))
        assert torch.equal(w == 0, mask)
    rows = rep.layers.set_index(["block", "layer"])
    others = rows[~rows.index.get_level_values("layer").str.startswith("mlp")]
    assert np.allclose(others["sparsity"], 0.5, atol=1e-3)  # the other layers: 50% by OBS
    # OBS beat plain zeroing on block 1's down projection (its inputs differ slightly after block 0
    # was pruned, so compare with margin)
    assert rows.loc[(1, "mlp.down_proj"), "error"] < zeroed_err
    assert rep.target["fixed_masks"] == len(fixed)


def test_anatomy_scores_then_wanda(reviews):
    """The anatomy study's neuron scores remove FFN neurons physically; Wanda then prunes the shrunk
    model one-shot.  The parameter and nonzero counts compose."""
    m, tok, ad = load("tiny-gpt2")
    an = collect_anatomy(m, tok, reviews, batch_size=3)
    rep1 = remove_neurons(m, mask_neurons(score_neurons_anatomy(m, an), 0.5), method="anatomy", target={"ratio": 0.5})
    assert ffn_widths(m) == [64, 64]
    rep2 = prune_model(m, "wanda", 0.5, calib=_windows())
    both = rep1.merge(rep2)
    assert both.before["ffn_widths"] == [128, 128] and both.after["ffn_widths"] == [64, 64]
    removed_params = both.before["sizes"]["ffn"] - both.after["sizes"]["ffn"]
    assert removed_params == rep1.params_before - rep1.params_after > 0
    gone = both.before["sizes"]["nonzeros"] - both.after["sizes"]["nonzeros"]
    assert gone >= removed_params + 0.49 * rep2.overall["params"]  # removal, then half of what is left
    assert abs(rep2.overall["sparsity"] - 0.5) < 1e-3
    assert (rep2.layers[rep2.layers.layer == "mlp.c_proj"]["in"] == 64).all()
