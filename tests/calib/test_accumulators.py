"""Accumulators: one add_batch(inp, out) signature, statistics equal to a direct computation."""

import pytest
import torch

from minilib.calib import AbsMean, DecisionNeuronStats, Hessian, InputSqNorms, LastBatch


def _x(seed=0, shape=(3, 7, 16)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_hessian_and_norms_equal_direct_sums():
    a, b = _x(0), _x(1)
    h, n = Hessian(16), InputSqNorms(16)
    for x in (a, b):
        h.add_batch(x, None)
        n.add_batch(x, None)
    flat = torch.cat([a.reshape(-1, 16), b.reshape(-1, 16)])
    torch.testing.assert_close(h.H, flat.T @ flat, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.hessian(), 2 * flat.T @ flat / len(flat), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(n.input_sq_norms(), (flat ** 2).sum(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h.input_sq_norms(), n.input_sq_norms(), rtol=1e-5, atol=1e-4)
    assert h.tokens == n.tokens == 42


def test_abs_mean_sides_bias_and_skip_first():
    x, y = _x(0), _x(1)
    bias = torch.linspace(-1, 1, 16)
    inp, out = AbsMean(16, "input"), AbsMean(16, "output", bias=bias)
    inp.add_batch(x, y)
    out.add_batch(x, y)
    torch.testing.assert_close(inp.mean(), x.abs().reshape(-1, 16).mean(0).double())
    torch.testing.assert_close(out.mean(), y.abs().reshape(-1, 16).mean(0).double())
    centred = (y - bias).abs().reshape(-1, 16).mean(0).double()
    torch.testing.assert_close(out.mean_min(), torch.minimum(out.mean(), centred))
    skip = AbsMean(16, "output", skip_first=1)
    y2 = y.clone()
    y2[:, 0] = 1e4  # a massive first-position activation is not seen
    skip.add_batch(x, y2)
    torch.testing.assert_close(skip.mean(), y[:, 1:].abs().reshape(-1, 16).mean(0).double())
    with pytest.raises(ValueError, match="side"):
        AbsMean(4, "middle")
    with pytest.raises(RuntimeError, match="no tokens"):
        AbsMean(4).mean()


def test_decision_neuron_stats_by_hand():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(8, 5, generator=g)          # (H, W): down projection as [out, in]
    a = torch.randn(4, 5, generator=g)          # neuron activations at the decision token
    d = torch.randn(4, 8, generator=g)          # the decision vector
    s = DecisionNeuronStats(W)
    s.add_batch(a[:2], d[:2])
    s.add_batch(a[2:], d[2:])
    r = s.result()
    contrib = a[:, :, None] * W.T[None]         # (B, W, H)
    cos = torch.nn.functional.cosine_similarity(contrib, d[:, None].expand_as(contrib), dim=-1)
    torch.testing.assert_close(r["neuron_cos"].float(), cos.mean(0), atol=1e-5, rtol=1e-5)
    proj = (contrib @ d[:, :, None]).squeeze(-1) / d.norm(dim=1, keepdim=True)
    torch.testing.assert_close(r["neuron_abs_proj"].float(), proj.abs().mean(0), atol=1e-5, rtol=1e-5)
    assert s.tokens == 4


def test_last_batch_keeps_identity():
    lb = LastBatch("input")
    x = _x()
    lb.add_batch(x, None)
    assert lb.value is x


def test_round_to_tf32_keeps_ten_mantissa_bits():
    from minilib.calib.accumulators import round_to_tf32
    x = torch.tensor([1.0, 1 + 2 ** -11, 1 + 2 ** -12, 1 + 3 * 2 ** -11, -(1 + 2 ** -10), 3.14159265, float("inf")])
    want = torch.tensor([1.0, 1 + 2 ** -10, 1.0, 1 + 2 ** -9, -(1 + 2 ** -10), 3.140625, float("inf")])
    assert torch.equal(round_to_tf32(x), want)
    y = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    rel = ((round_to_tf32(y) - y).abs() / y.abs()).max()
    assert 2 ** -13 < rel <= 2 ** -11  # half an ulp of a 10-bit mantissa, and not exact


def test_tf32_hessian_is_close_but_not_identical_on_cpu():
    """precision='tf32' on the CPU emulates tensor cores' TF32 inputs: the Hessian moves by about
    1e-4 relative, far below what matters for the solver, but it does move."""
    x = _x(0, (4, 64, 32))
    a, b = Hessian(32), Hessian(32, precision="tf32")
    a.add_batch(x)
    b.add_batch(x)
    rel = float((a.H - b.H).norm() / a.H.norm())
    assert 0 < rel < 1e-3
    with pytest.raises(ValueError, match="precision"):
        Hessian(32, precision="fp16")


def test_hessian_of_bf16_inputs_is_fp32():
    x = _x(0)
    h = Hessian(16)
    h.add_batch(x.bfloat16())
    xb = x.bfloat16().float().reshape(-1, 16)
    assert h.H.dtype == torch.float32
    torch.testing.assert_close(h.H, xb.T @ xb, rtol=1e-5, atol=1e-4)
