"""k-bit weight quantization (minilib.prune.quant): per-row asymmetric min-max grid of 2**k levels,
round to nearest; zero on the grid; error at most half a step; wbits checked."""
import pytest
import torch

from minilib.prune.masks import SparsityError
from minilib.prune.quant import ChannelQuantizer, check_wbits, fit_quantizer, quantize_rtn


def _weights(rows=6, cols=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[1] = w[1].abs() + 0.1          # all positive: the grid starts at 0
    w[2] = -w[2].abs() - 0.1         # all negative: the grid ends at 0
    w[3] *= 100                      # another scale
    return w


def test_a_small_example_by_hand():
    # row [-1, 0, 0.6, 2], 2 bits: lo=-1, hi=2, 3 steps of 1, zero point 1; grid {-1, 0, 1, 2}
    q = fit_quantizer(torch.tensor([[-1.0, 0.0, 0.6, 2.0]]), 2)
    assert q.maxq == 3 and float(q.scale) == 1.0 and float(q.zero) == 1.0
    assert torch.equal(q(torch.tensor([[-1.0, 0.0, 0.6, 2.0]])), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))
    assert torch.equal(quantize_rtn(torch.tensor([[-1.0, 0.0, 0.6, 2.0]]), 2), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
def test_scale_and_zero_point_by_hand(wbits):
    w = _weights()
    q = fit_quantizer(w, wbits)
    assert q.maxq == 2 ** wbits - 1
    for r in range(w.shape[0]):
        lo, hi = min(float(w[r].min()), 0.0), max(float(w[r].max()), 0.0)
        scale = (hi - lo) / (2 ** wbits - 1)
        assert float(q.scale[r, 0]) == pytest.approx(scale, rel=1e-6)
        assert float(q.zero[r, 0]) == round(-lo / scale)
    assert float(q.zero[1, 0]) == 0 and float(q.zero[2, 0]) == q.maxq  # all positive / all negative rows


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
def test_grid_has_two_to_the_k_levels_of_integer_codes(wbits):
    # the grid spans [min(row, 0), max(row, 0)]: rows that fill their span hit every level
    dense = torch.stack([torch.linspace(-1.3, 0.7, 5000), torch.linspace(0.0, 3.0, 5000),
                         torch.linspace(-2.0, 0.0, 5000)])
    q = fit_quantizer(dense, wbits)
    out = q(dense)
    for r in range(3):
        assert out[r].unique().numel() == 2 ** wbits, r  # a dense row hits every level, and no more
    codes = out / q.scale + q.zero  # every value is scale * (code - zero), code an integer in [0, 2^k - 1]
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().min() >= 0 and codes.round().max() <= 2 ** wbits - 1
    sparse = _weights(cols=1000)
    assert all(quantize_rtn(sparse, wbits)[r].unique().numel() <= 2 ** wbits for r in range(sparse.shape[0]))


@pytest.mark.parametrize("wbits", [2, 3, 4, 8, 12])
def test_error_is_at_most_half_a_step(wbits):
    w = _weights(cols=500, seed=wbits)
    q = fit_quantizer(w, wbits)
    err = (q(w) - w).abs()
    half = q.scale / 2
    assert (err <= half * (1 + 1e-4) + 1e-7).all()
    # and the bound is nearly reached: round to nearest, not a coarser grid
    assert (err.amax(1, keepdim=True) > 0.8 * half).all()


def test_more_bits_never_quantize_worse():
    w = _weights(cols=300)
    errs = [float((quantize_rtn(w, k) - w).abs().max()) for k in (2, 3, 4, 6, 8, 12, 16)]
    assert errs == sorted(errs, reverse=True) and errs[0] > errs[-1]
    assert errs[-1] < 1e-4 * float(w.abs().max())  # 16 bits: next to nothing


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
def test_zero_stays_exactly_zero(wbits):
    w = _weights(cols=64)
    w[:, ::2] = 0.0
    w[4] = 0.0                                    # an all-zero row: the grid is [-1, 1], 0 still on it
    out = quantize_rtn(w, wbits)
    assert (out[w == 0] == 0).all()
    assert (out[4] == 0).all()
    assert torch.isfinite(out).all()


def test_round_trip_is_idempotent():
    w = _weights(cols=200)
    for k in (2, 4, 8):
        q = fit_quantizer(w, k)
        once = q(w)
        assert torch.equal(q(once), once)


def test_a_constant_row_is_kept():
    w = torch.tensor([[0.75] * 5, [-0.3] * 5])
    torch.testing.assert_close(quantize_rtn(w, 3), w)


def test_a_column_quantizes_like_its_place_in_the_matrix():
    """The solver quantizes one column ``(rows,)`` at a time with the quantizer fitted on the whole weight."""
    w = _weights(cols=30)
    q = fit_quantizer(w, 4)
    full = q(w)
    for j in range(30):
        assert torch.equal(q(w[:, j]), full[:, j])


def test_any_dtype_is_quantized_in_fp32_without_changing_the_weight():
    w = _weights().to(torch.bfloat16)
    before = w.clone()
    out = quantize_rtn(w, 4)
    assert out.dtype == torch.float32 and out.shape == w.shape
    assert torch.equal(w, before)
    torch.testing.assert_close(out, quantize_rtn(w.float(), 4))
    assert isinstance(fit_quantizer(w, 4), ChannelQuantizer)


def test_rows_selects_the_grids_of_those_rows():
    w = _weights()
    q = fit_quantizer(w, 4)
    got = q(w[3:4], rows=slice(3, 4))
    assert got.shape == (1, w.shape[1])
    assert torch.equal(got, q(w)[3:4])


# --- wbits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("wbits", [2, 4, 8, 16, 4.0])
def test_valid_wbits(wbits):
    assert check_wbits(wbits) == int(wbits) and type(check_wbits(wbits)) is int


@pytest.mark.parametrize("wbits", [0, 1, 17, 32, -4, 2.5, True, "4"])
def test_bad_wbits_are_refused_by_name(wbits):
    with pytest.raises(SparsityError, match=r"wbits must be an integer in \[2, 16\]"):
        check_wbits(wbits)
    with pytest.raises(SparsityError, match="wbits"):
        fit_quantizer(torch.ones(2, 2), wbits)


@pytest.mark.parametrize("wbits", [None, "four", float("nan"), float("inf")])
def test_non_numeric_wbits_are_refused_by_name(wbits):
    with pytest.raises(SparsityError, match="wbits"):
        check_wbits(wbits)
