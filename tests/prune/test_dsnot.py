"""DSnoT's mask refinement (``minilib.prune.dsnot``) against a row-by-row loop written from the
paper's description, its invariants, and the registry entry through ``prune_model``."""

import numpy as np
import pytest
import torch

from minilib.models import load
from minilib.prune import prune_model
from minilib.prune.dsnot import Moments, refine_dsnot
from minilib.prune.masks import mask_unstructured


def _loop(w, mask, scores, mean, var, seqlen, cycles, thr, vp):
    """One row at a time, plain Python: regrow the pruned weight of largest same-sign contribution
    (over var**vp), prune the kept weight of opposite contribution with the lowest initial score;
    stop a row at the first swap that would flip its error's sign, or once |error| <= thr."""
    w, mask = w.double().numpy(), mask.numpy().copy()
    m = mean.double().numpy() * seqlen
    v = var.double().numpy() ** vp
    out = mask.copy()
    for i in range(w.shape[0]):
        c = w[i] * m
        pruned = [j for j in range(w.shape[1]) if mask[i, j]]
        kept = [j for j in range(w.shape[1]) if not mask[i, j]]
        grow = sorted(pruned, key=lambda j: c[j] / v[j])            # ascending; stable on ties by position
        kept = sorted(kept, key=lambda j: float(scores[i, j]))
        shrink = [j for j in kept if c[j] < 0] + [j for j in kept if c[j] >= 0][::-1]
        e = sum(c[j] for j in pruned)
        s0 = np.sign(e)
        glo, ghi, plo, phi = 0, len(grow) - 1, 0, len(shrink) - 1
        for _ in range(cycles):
            if glo > ghi or plo > phi or abs(e) <= thr:
                break
            g = grow[ghi] if e > 0 else grow[glo]
            p = shrink[phi] if e < 0 else shrink[plo]
            after = e + c[p] - c[g]
            if np.sign(after) != s0:
                break
            out[i, p], out[i, g] = True, False
            if e > 0:
                ghi -= 1
            else:
                glo += 1
            if e < 0:
                phi -= 1
            else:
                plo += 1
            e = after
    return torch.from_numpy(out)


@pytest.mark.parametrize("seed,thr,vp", [(0, 0.1, 1.0), (1, 0.0, 0.5), (2, 1.0, 0.0)])
def test_refinement_matches_the_row_by_row_loop(seed, thr, vp):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, 40, generator=g)
    mean = torch.randn(40, generator=g) * 0.3 + 0.1
    var = torch.rand(40, generator=g) + 0.1
    sq = (mean ** 2 + var) * 256
    scores = w.abs() * sq.sqrt()
    mask = mask_unstructured(scores, 0.6, per="row")
    stat = Moments(sq, mean, var, seqlen=8)
    got = refine_dsnot(w, mask, scores, stat, max_cycles=30, threshold=thr, var_power=vp)
    want = _loop(w, mask, scores, mean, var, 8, 30, thr, vp)
    assert torch.equal(got, want)
    assert torch.equal(got.sum(1), mask.sum(1))           # the count per row never changes
    assert not torch.equal(got, mask)                     # something was swapped
    e0 = (w * mean * 8 * mask).sum(1)
    e1 = (w * mean * 8 * got).sum(1)
    assert bool((e1.abs() <= e0.abs() + 1e-5).all()) and bool((torch.sign(e1) * torch.sign(e0) >= 0).all())


def test_no_cycles_or_a_full_row_leave_the_mask_and_a_ragged_mask_is_refused():
    w, stat = torch.randn(4, 8), Moments(torch.ones(8), torch.ones(8), torch.ones(8), 4)
    mask = mask_unstructured(w.abs(), 0.5, per="row")
    assert torch.equal(refine_dsnot(w, mask, w.abs(), stat, max_cycles=0), mask)
    ragged = mask.clone()
    ragged[0] = True
    with pytest.raises(ValueError, match="per-row mask"):
        refine_dsnot(w, ragged, w.abs(), stat)


def test_dsnot_through_prune_model_keeps_wandas_counts_and_skips_the_ffn_by_default():
    calib = torch.randint(0, 1000, (8, 64), generator=torch.Generator().manual_seed(0))
    masks = {}
    for name, opts in [("wanda", {}), ("dsnot", {}), ("dsnot", {"skip": "none"})]:
        m, _, ad = load("tiny-llama")
        prune_model(m, name, 0.6, calib=calib, options=opts)
        masks[(name, opts.get("skip", "ffn"))] = {f"{bi}.{n}": (l.weight == 0).clone() for bi, b in enumerate(ad.blocks(m))
                                                  for n, l in ad.linear_layers(b).items()}
    wanda, default, every = masks[("wanda", "ffn")], masks[("dsnot", "ffn")], masks[("dsnot", "none")]
    for k in wanda:
        assert torch.equal(default[k].sum(1), wanda[k].sum(1)) and torch.equal(every[k].sum(1), wanda[k].sum(1))
        if k.startswith("0.mlp"):  # block 0 saw the same (dense) inputs; later blocks see other pruned outputs
            assert torch.equal(default[k], wanda[k])      # the authors' default leaves the FFN alone
    assert any(not torch.equal(default[k], wanda[k]) for k in wanda if "self_attn" in k)
    assert any(not torch.equal(every[k], wanda[k]) for k in wanda if "mlp" in k)


def test_dsnot_refuses_nm_and_bad_options():
    m = load("tiny-llama").model
    calib = torch.randint(0, 1000, (4, 32))
    with pytest.raises(ValueError, match="DSnoT refines unstructured masks only"):
        prune_model(m, "dsnot", nm="2:4", calib=calib)
    with pytest.raises(ValueError, match="method 'dsnot': initial must be one of"):
        prune_model(m, "dsnot", 0.5, calib=calib, options={"initial": "sparsegpt"})
    with pytest.raises(ValueError, match="method 'dsnot': threshold must be a finite number >= 0"):
        prune_model(m, "dsnot", 0.5, calib=calib, options={"threshold": -1})
