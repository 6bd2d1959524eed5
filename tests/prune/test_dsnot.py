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


def _layer(seed, rows, cols):
    """A random layer, its input moments over 8-token windows and Wanda's scores."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mean = torch.randn(cols, generator=g) * 0.3 + 0.1
    var = torch.rand(cols, generator=g) + 0.1
    sq = (mean ** 2 + var) * 256
    return w, mean, var, w.abs() * sq.sqrt(), Moments(sq, mean, var, seqlen=8)


@pytest.mark.parametrize("seed,thr,vp", [(0, 0.1, 1.0), (1, 0.0, 0.5), (2, 1.0, 0.0)])
def test_refinement_matches_the_row_by_row_loop(seed, thr, vp):
    w, mean, var, scores, stat = _layer(seed, 12, 40)
    mask = mask_unstructured(scores, 0.6, per="row")
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


def test_dsnot_refuses_bad_options():
    m = load("tiny-llama").model
    calib = torch.randint(0, 1000, (4, 32))
    with pytest.raises(ValueError, match="method 'dsnot': initial must be one of"):
        prune_model(m, "dsnot", 0.5, calib=calib, options={"initial": "obs"})
    with pytest.raises(ValueError, match="method 'dsnot': threshold must be a finite number >= 0"):
        prune_model(m, "dsnot", 0.5, calib=calib, options={"threshold": -1})


def _loop_nm(w, mask, scores, mean, var, seqlen, n, m, cycles, thr, vp):
    """N:M, one row at a time: regrow as in the unstructured loop; prune, in the regrown weight's group
    of m, the kept weight (never pruned or regrown before) of lowest initial score; stop a row at a
    sign flip, once |error| <= thr, or when that group has nothing left to give."""
    w, mask = w.double().numpy(), mask.numpy().copy()
    mu = mean.double().numpy() * seqlen
    v = var.double().numpy() ** vp
    out = mask.copy()
    for i in range(w.shape[0]):
        c = w[i] * mu
        pruned = [j for j in range(w.shape[1]) if mask[i, j]]
        grow = sorted(pruned, key=lambda j: c[j] / v[j])
        touched = set(pruned)        # initially pruned (so also every regrown one) and pruned by a swap
        e = sum(c[j] for j in pruned)
        s0 = np.sign(e)
        glo, ghi = 0, len(grow) - 1
        for _ in range(cycles):
            if glo > ghi or abs(e) <= thr:
                break
            g = grow[ghi] if e > 0 else grow[glo]
            start = g - g % m
            cand = [j for j in range(start, start + m) if j not in touched]
            if not cand:
                break
            p = min(cand, key=lambda j: (float(scores[i, j]), j))
            after = e + c[p] - c[g]
            if np.sign(after) != s0:
                break
            out[i, p], out[i, g] = True, False
            touched.add(p)
            if e > 0:
                ghi -= 1
            else:
                glo += 1
            e = after
    return torch.from_numpy(out)


@pytest.mark.parametrize("seed,nm,thr", [(0, (2, 4), 0.1), (1, (2, 4), 0.0), (2, (4, 8), 0.05)])
def test_nm_refinement_matches_the_row_by_row_loop_and_keeps_the_pattern(seed, nm, thr):
    from minilib.prune.masks import is_nm, mask_nm
    w, mean, var, scores, stat = _layer(seed, 10, 32)
    mask = mask_nm(scores, *nm)
    got = refine_dsnot(w, mask, scores, stat, max_cycles=20, threshold=thr, var_power=1.0, nm=nm)
    assert torch.equal(got, _loop_nm(w, mask, scores, mean, var, 8, *nm, 20, thr, 1.0))
    assert not torch.equal(got, mask)
    assert is_nm(w.masked_fill(got, 0), *nm)   # every group still prunes exactly n
    with pytest.raises(ValueError, match="needs an 2:4 mask"):
        refine_dsnot(w, mask_unstructured(scores, 0.5, per="row"), scores, stat, nm=(2, 4))


def test_dsnot_nm_and_the_sparsegpt_start_through_prune_model():
    from minilib.prune.masks import is_nm
    from minilib.prune.methods import get_method
    from minilib.prune.scores import score_obs
    from minilib.prune.dsnot import obs_diagonal
    calib = torch.randint(0, 1000, (8, 64), generator=torch.Generator().manual_seed(0))
    m, _, ad = load("tiny-llama")
    prune_model(m, "dsnot", nm="2:4", calib=calib, options={"skip": "none"})
    assert all(is_nm(l.weight, 2, 4) for b in ad.blocks(m) for l in ad.linear_layers(b).values())
    d = get_method("dsnot")
    assert d.supports_nm and d.statistic_for() == "input_moments"
    assert d.statistic_for(d.resolve_options({"initial": "sparsegpt"})) == "hessian_moments"
    # the SparseGPT start: block 0's inputs are the dense model's, so its first layer's initial mask is
    # the lowest OBS saliencies per row, computed here from an independent Hessian of the same inputs
    from minilib.calib import Hessian, calibrate
    ref, _, _ = load("tiny-llama")
    acc = {"0.self_attn.q_proj": Hessian(ad.blocks(ref)[0].self_attn.q_proj.in_features, "cpu")}
    calibrate(ref, calib, acc)
    m2, _, _ = load("tiny-llama")
    w0 = ad.blocks(m2)[0].self_attn.q_proj.weight.detach().clone()
    prune_model(m2, "dsnot", 0.5, calib=calib, options={"initial": "sparsegpt", "max_cycles": 0, "skip": "none"})
    hinv, dead = obs_diagonal(acc["0.self_attn.q_proj"].H)
    want = mask_unstructured(score_obs(w0, hinv).masked_fill(dead[None, :], 0), 0.5, per="row")
    assert torch.equal(ad.blocks(m2)[0].self_attn.q_proj.weight == 0, want)
    m3, _, _ = load("tiny-llama")
    prune_model(m3, "dsnot", 0.5, calib=calib, options={"initial": "sparsegpt", "skip": "none"})
    assert not torch.equal(ad.blocks(m3)[0].self_attn.q_proj.weight == 0, want)  # the swaps changed it
