"""Per-block sparsity lists and OWL's outlier-weighted allocation (``minilib.prune.allocation``)."""

import pytest
import torch

from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.prune import (SparsityError, check_layer_sparsities, implied_sparsity, owl_from_ratios, owl_sparsities,
                           prune_model)
from minilib.prune.allocation import block_params


def _calib(n=4, seqlen=32, seed=0):
    return torch.randint(0, 1000, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_owl_from_ratios_by_hand():
    assert owl_from_ratios([1.0, 2.0, 3.0], 0.5, 0.1) == pytest.approx([0.6, 0.5, 0.4])   # more outliers, less pruned
    assert owl_from_ratios([4.0, 1.0], 0.7, 0.08) == pytest.approx([0.62, 0.78])
    assert owl_from_ratios([2.0, 2.0, 2.0], 0.6, 0.08) == pytest.approx([0.6] * 3)         # no spread: uniform
    s = owl_from_ratios([0.3, 5.0, 1.2, 0.9], 0.7, 0.05)
    assert sum(s) / 4 == pytest.approx(0.7) and max(s) - min(s) == pytest.approx(0.1)


def test_owl_outlier_ratios_match_an_independent_computation_and_leave_the_model_alone():
    m, _, ad = load("tiny-llama")
    calib = _calib()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    alloc = owl_sparsities(m, calib, 0.6, m=2.0, lam=0.05, device="cpu")
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    # the same ratios from one full forward of the dense model with hooks on every linear layer
    sq, hooks = {}, []
    for bi, block in enumerate(ad.blocks(m)):
        for name, layer in ad.linear_layers(block).items():
            def hook(mod, inp, out, k=(bi, name)):
                x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                sq[k] = sq.get(k, 0) + (x ** 2).sum(0)
            hooks.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        m(calib)
    for h in hooks:
        h.remove()
    want = []
    for bi, block in enumerate(ad.blocks(m)):
        scores = torch.cat([(weight_oi(layer).double().abs() * sq[(bi, name)].sqrt()[None, :]).flatten()
                            for name, layer in ad.linear_layers(block).items()])
        want.append(float((scores > 2.0 * scores.mean()).double().mean()) * 100)
    assert alloc.outlier_ratios == pytest.approx(want, abs=0.05)   # a score at the threshold may flip in fp32
    assert alloc.sparsities == pytest.approx(owl_from_ratios(alloc.outlier_ratios, 0.6, 0.05))
    assert sum(alloc.sparsities) / len(alloc.sparsities) == pytest.approx(0.6)
    assert alloc.as_dict()["m"] == 2.0 and alloc.implied == pytest.approx(0.6)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_a_per_block_list_prunes_each_block_to_its_own_sparsity(method):
    m, _, ad = load("tiny-llama")
    sp = [0.25, 0.75]
    rep = prune_model(m, method, sp, calib=_calib(8, 64))
    assert rep.target["layer_sparsity"] == sp
    assert rep.target["sparsity"] == pytest.approx(implied_sparsity(m, sp)) == pytest.approx(0.5)
    for bi, block in enumerate(ad.blocks(m)):
        for name, layer in ad.linear_layers(block).items():
            w = weight_oi(layer)
            assert float((w == 0).float().mean()) == pytest.approx(sp[bi], abs=1 / w.shape[1]), (bi, name)


def test_implied_sparsity_weighs_blocks_by_their_weights():
    m, _, _ = load("tiny-gpt2")
    sizes = block_params(m)
    assert implied_sparsity(m, [0.2, 0.6]) == pytest.approx((0.2 * sizes[0] + 0.6 * sizes[1]) / sum(sizes))


@pytest.mark.parametrize("bad,match", [
    ([0.5], "has 1 entries, the model has 2 blocks"),
    ([0.5, 0.5, 0.5], "has 3 entries"),
    ([0.5, 1.0], r"block 1: sparsity must lie in \[0, 1\)"),
    ([0.5, "x"], r"block 1: sparsity must be a number"),
])
def test_bad_lists_are_refused_before_anything_runs(bad, match):
    m, _, _ = load("tiny-llama")
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(SparsityError, match=match):
        prune_model(m, "wanda", bad, calib=_calib())
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    with pytest.raises(SparsityError, match=match):
        check_layer_sparsities(bad, 2)


def test_a_list_with_nm_and_bad_owl_arguments_are_refused():
    m, _, _ = load("tiny-llama")
    with pytest.raises(SparsityError, match="cannot be combined with nm=2:4"):
        prune_model(m, "wanda", [0.5, 0.5], nm="2:4", calib=_calib())
    with pytest.raises(SparsityError, match=r"would give blocks sparsities in \[0.88, 1.04\]"):
        owl_sparsities(m, _calib(), 0.96, lam=0.08)
    with pytest.raises(SparsityError, match="m .* must be a finite number > 0"):
        owl_sparsities(m, _calib(), 0.5, m=0)
    with pytest.raises(SparsityError, match="lam .* must be a finite number >= 0"):
        owl_sparsities(m, _calib(), 0.5, lam=-0.1)
