"""Unit tests: weight masks, quantization and the SparseGPT solver on random layers."""

import pytest
import torch
from torch import nn

from minilib.prune import (HessianError, SparseGPT, SparsityError, check_wbits, fit_quantizer, is_nm, mask_nm,
                           mask_unstructured, reconstruction_stats)


def _layer_and_inputs(out_f=48, in_f=64, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_f, out_f, bias=False)
    layer.weight.data = torch.randn(out_f, in_f, generator=g)
    # correlated inputs, as in a real network
    x = torch.randn(tokens, in_f, generator=g) @ (torch.eye(in_f) + 0.5 * torch.randn(in_f, in_f, generator=g))
    return layer, x


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 0.99])
def test_unstructured_masks_exact(sparsity):
    s = torch.rand(37, 53, generator=torch.Generator().manual_seed(1))
    assert int(mask_unstructured(s, sparsity, "layer").sum()) == round(sparsity * s.numel())
    row = mask_unstructured(s, sparsity, "row")
    assert (row.sum(1) == round(sparsity * 53)).all()
    # the pruned entries are the lowest of each row
    if 0 < sparsity:
        kept_min = torch.where(row, torch.inf, s).min(1).values
        pruned_max = torch.where(row, s, -torch.inf).max(1).values
        assert (pruned_max <= kept_min).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_nm_masks_exact(n, m):
    s = torch.rand(16, 64, generator=torch.Generator().manual_seed(2))
    mask = mask_nm(s, n, m)
    assert (mask.view(16, 64 // m, m).sum(-1) == n).all()


@pytest.mark.parametrize("n,m,width", [(4, 4, 64), (5, 4, 64), (0, 4, 64), (2, 4, 66), (4, 8, 60)])
def test_nm_bad_input(n, m, width):
    with pytest.raises(SparsityError):
        mask_nm(torch.rand(4, width), n, m)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range(sparsity):
    with pytest.raises(SparsityError, match=r"\[0, 1\)"):
        mask_unstructured(torch.rand(4, 4), sparsity)
    layer, x = _layer_and_inputs()
    solver = SparseGPT(layer)
    solver.add_batch(x)
    with pytest.raises(SparsityError):
        solver.prune(sparsity)


@pytest.mark.parametrize("wbits", [1, 17, 0, 3.5])
def test_wbits_out_of_range(wbits):
    with pytest.raises(SparsityError, match="wbits"):
        check_wbits(wbits)


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
def test_quantizer_levels_and_zero(wbits):
    w = torch.randn(8, 32)
    q = fit_quantizer(w, wbits)(w)
    for r in range(8):
        assert len(torch.unique(q[r])) <= 2 ** wbits
    assert (fit_quantizer(w, wbits)(torch.zeros(8, 32)) == 0).all()  # zero stays exactly zero
    assert (q - w).abs().max() <= fit_quantizer(w, wbits).scale.max() / 2 + 1e-6


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.8])
def test_solver_exact_sparsity_and_beats_masking(sparsity):
    layer, x = _layer_and_inputs()
    w0 = layer.weight.data.clone()
    solver = SparseGPT(layer)
    solver.add_batch(x[:200])
    solver.add_batch(x[200:])
    xxt = solver.H.clone()
    st, = solver.prune(sparsity, blocksize=32)
    w = layer.weight.data
    assert st["zeros"] == round(sparsity * w.numel()) == int((w == 0).sum())
    # the OBS update beats simply masking the same weights
    masked = w0.masked_fill(w == 0, 0.0)
    plain = reconstruction_stats("x", w0, masked, xxt, len(x))["error"]
    assert st["error"] < 0.9 * plain
    assert st["error"] == pytest.approx(((x @ (w0 - w).T) ** 2).sum().item() / len(x), rel=1e-3)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_solver_nm_and_quant(n, m):
    layer, x = _layer_and_inputs()
    solver = SparseGPT(layer)
    solver.add_batch(x)
    solver.prune(n=n, m=m, wbits=4)
    w = layer.weight.data
    assert is_nm(w, n, m)
    for r in range(w.shape[0]):  # at most 2**4 levels per row (zero included)
        assert len(torch.unique(w[r])) <= 16


def test_solver_sparsity_zero_is_identity():
    layer, x = _layer_and_inputs()
    w0 = layer.weight.data.clone()
    solver = SparseGPT(layer)
    solver.add_batch(x)
    st, = solver.prune(0.0)
    assert torch.equal(layer.weight.data, w0) and st["error"] == 0


def test_grouped_solver_matches_separate():
    """Stacking layers that share an input changes nothing but the cost."""
    (a, x), (b, _) = _layer_and_inputs(48, 64, seed=3), _layer_and_inputs(24, 64, seed=4)
    a2, b2 = nn.Linear(64, 48, bias=False), nn.Linear(64, 24, bias=False)
    a2.weight.data, b2.weight.data = a.weight.data.clone(), b.weight.data.clone()
    together = SparseGPT({"a": a, "b": b})
    together.add_batch(x)
    together.prune(0.5, blocksize=32)
    for lay in (a2, b2):
        s = SparseGPT(lay)
        s.add_batch(x)
        s.prune(0.5, blocksize=32)
    assert torch.allclose(a.weight, a2.weight, atol=1e-4) and torch.allclose(b.weight, b2.weight, atol=1e-4)


def test_subblock_does_not_change_result():
    layer, x = _layer_and_inputs()
    w0 = layer.weight.data.clone()
    outs = []
    for sb in (1, 8, 64):
        layer.weight.data = w0.clone()
        s = SparseGPT(layer)
        s.add_batch(x)
        s.prune(0.6, blocksize=64, subblock=sb)
        outs.append(layer.weight.data.clone())
    assert torch.allclose(outs[0], outs[1], atol=1e-4) and torch.allclose(outs[0], outs[2], atol=1e-4)


def test_bad_hessian_names_layer():
    layer, x = _layer_and_inputs()
    solver = SparseGPT({"blocks.3.mlp.down_proj": layer})
    x[5, 7] = float("nan")
    solver.add_batch(x)
    with pytest.raises(HessianError, match="blocks.3.mlp.down_proj"):
        solver.prune(0.5)


def test_negative_definite_hessian_fails_after_dampening():
    layer, x = _layer_and_inputs()
    solver = SparseGPT({"my.layer": layer})
    solver.add_batch(x)
    solver.H = -solver.H  # no amount of relative dampening makes this positive definite
    with pytest.raises(HessianError, match="my.layer.*not positive definite"):
        solver.prune(0.5)


def test_solver_is_a_calibration_accumulator():
    from minilib.calib import Hessian
    layer, x = _layer_and_inputs()
    solver, plain = SparseGPT(layer), Hessian(x.shape[1])
    for part in (x[:100], x[100:]):
        solver.add_batch(part, None)
        plain.add_batch(part, None)
    assert isinstance(solver, Hessian) and solver.tokens == plain.tokens == len(x)
    torch.testing.assert_close(solver.H, plain.H)
    torch.testing.assert_close(solver.input_sq_norms(), (x * x).sum(0), rtol=1e-4, atol=1e-3)


def test_fixed_mask_reconstructs_around_any_criterion():
    """A mask from another criterion (here: Wanda's) with OBS reconstruction of the rest: exactly that
    mask, and a lower error than applying the mask alone."""
    from minilib.prune import score_wanda
    layer, x = _layer_and_inputs()
    w0 = layer.weight.data.clone()
    mask = mask_unstructured(score_wanda(w0, (x * x).sum(0)), 0.5, per="row")
    solver = SparseGPT({"l": layer})
    solver.add_batch(x)
    xxt = solver.H.clone()
    st, = solver.prune(mask={"l": mask})
    w = layer.weight.data
    assert torch.equal(w == 0, mask)
    plain = reconstruction_stats("l", w0, w0.masked_fill(mask, 0.0), xxt, len(x))["error"]
    assert st["error"] < 0.95 * plain  # measured 0.90 on this problem
    with pytest.raises(ValueError, match="missing"):
        SparseGPT({"l": layer}).prune(mask={})
    s = SparseGPT({"l": layer})
    s.add_batch(x)
    with pytest.raises(ValueError, match="bool of shape"):
        s.prune(mask={"l": mask[:, :10]})


def test_error_report_optional_and_heldout_error():
    """measure_error=False skips the in-sample error; a held-out Hessian gives the error on other
    inputs, which for the solver's own calibration inputs equals the in-sample error."""
    from minilib.calib import Hessian
    layer, x = _layer_and_inputs()
    _, x_other = _layer_and_inputs(seed=9)
    w0 = layer.weight.data.clone()
    res = {}
    for name, hx in (("same", x), ("other", x_other)):
        layer.weight.data = w0.clone()
        s = SparseGPT(layer)
        s.add_batch(x)
        held = Hessian(64)
        held.add_batch(hx)
        res[name], = s.prune(0.5, heldout=held)
    same, other = res["same"], res["other"]
    assert same["heldout_rel_error"] == pytest.approx(same["rel_error"], rel=1e-4)
    assert other["heldout_rel_error"] > other["rel_error"]  # in-sample favours the solver
    layer.weight.data = w0.clone()
    s = SparseGPT(layer)
    s.add_batch(x)
    st, = s.prune(0.5, measure_error=False)
    assert st["error"] != st["error"] and st["zeros"] == round(0.5 * w0.numel())
    torch.testing.assert_close(layer.weight.data, _solve(w0, x))


def _solve(w0, x):
    layer = nn.Linear(w0.shape[1], w0.shape[0], bias=False)
    layer.weight.data = w0.clone()
    s = SparseGPT(layer)
    s.add_batch(x)
    s.prune(0.5)
    return layer.weight.data
