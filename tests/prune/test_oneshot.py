"""One-shot pruning (magnitude, Wanda, SparseGPT) over the block-by-block pass, on every tiny family
(GPT-2 Conv1D included)."""

import pytest
import torch

from minilib.calib import CalibrationError, capture_block_inputs
from minilib.data import calibration_set
from minilib.models import load, load_model, save_model
from minilib.models.linear import weight_oi
from minilib.prune import METHODS, PartialPruneError, SparsityError, is_nm, prune_model, to_semi_structured
from minilib.studies.sparsegpt import shrink_ffns


def _calib(n=4, seqlen=32, seed=0):
    return torch.randint(0, 1000, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _hidden(m, ad, x):
    with torch.no_grad():
        return ad.base(m)(input_ids=x).last_hidden_state


def _masks(m, ad):
    return [(weight_oi(l) == 0).clone() for b in ad.blocks(m) for l in ad.linear_layers(b).values()]


def test_sparsity_zero_leaves_outputs_unchanged(tiny, no_hook_leak):
    m, _, ad = tiny
    x = _calib()
    before = _hidden(m, ad, x)
    rep = prune_model(m, "sparsegpt", 0.0, calib=x)
    assert torch.allclose(_hidden(m, ad, x), before, atol=1e-5)
    assert rep.overall["zeros"] == 0
    no_hook_leak(m)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_exact_fraction_per_method(method, sparsity, tiny_decoder, no_hook_leak):
    m, _, ad = tiny_decoder
    rep = prune_model(m, method, sparsity, calib=_calib())
    df = rep.layers
    # what the report says is what is in the model
    zeros = [int((weight_oi(l) == 0).sum()) for b in ad.blocks(m) for l in ad.linear_layers(b).values()]
    assert sorted(zeros) == sorted(df["zeros"].tolist())
    if METHODS[method].compare == "row":  # exact per output row (Wanda; DSnoT keeps Wanda's counts)
        for b in ad.blocks(m):
            for l in ad.linear_layers(b).values():
                w = weight_oi(l)
                assert ((w == 0).sum(1) == round(sparsity * w.shape[1])).all()
    else:  # exact per layer
        assert (df["zeros"] == (df["params"] * sparsity).round().astype(int)).all()
    assert rep.overall["sparsity"] == pytest.approx(sparsity, abs=0.01)  # per-row rounding
    no_hook_leak(m)


@pytest.mark.parametrize("method,nm", [("magnitude", (2, 4)), ("wanda", (2, 4)), ("sparsegpt", (2, 4)),
                                       ("sparsegpt", (4, 8))])
def test_nm_every_family(method, nm, tiny):
    m, _, ad = tiny
    rep = prune_model(m, method, nm=nm, calib=_calib())
    for b in ad.blocks(m):
        for l in ad.linear_layers(b).values():
            w = weight_oi(l)
            assert ((w.view(w.shape[0], -1, nm[1]) == 0).sum(-1) == nm[0]).all()
    assert rep.sparsity == nm[0] / nm[1] and rep.target == {"nm": f"{nm[0]}:{nm[1]}"}


def test_same_seed_same_masks():
    out = []
    for _ in range(2):
        m, tok, ad = load("tiny-llama")
        prune_model(m, "sparsegpt", 0.5, calib=calibration_set(tok, "tiny", 4, 32, seed=7))
        out.append(_masks(m, ad))
    assert all(torch.equal(a, b) for a, b in zip(*out))
    m, tok, ad = load("tiny-llama")
    prune_model(m, "sparsegpt", 0.5, calib=calibration_set(tok, "tiny", 4, 32, seed=8))
    assert not all(torch.equal(a, b) for a, b in zip(out[0], _masks(m, ad)))


def test_sparsegpt_lowest_error_on_tiny():
    errs = {}
    for method in METHODS:
        m, _, ad = load("tiny-llama")
        errs[method] = prune_model(m, method, 0.5, calib=_calib(8, 64), measure_error=True).overall["mean_rel_error"]
    assert errs["sparsegpt"] < errs["wanda"] and errs["sparsegpt"] < errs["magnitude"]


def test_error_report_is_opt_in_for_wanda_and_magnitude():
    """Wanda and magnitude need no X X^T to prune: by default they report no error (and build no
    Hessian); SparseGPT has its Hessians anyway and reports the in-sample error."""
    reps = {meth: prune_model(load("tiny-llama").model, meth, 0.5, calib=_calib()) for meth in METHODS}
    assert reps["sparsegpt"].layers["rel_error"].notna().all()
    for meth in ("wanda", "magnitude"):
        assert reps[meth].layers["rel_error"].isna().all()
    with pytest.raises(CalibrationError, match="measuring the reconstruction error"):
        prune_model(load("tiny-llama").model, "magnitude", 0.5, measure_error=True)


def test_hooks_never_leak_even_on_error(no_hook_leak):
    m, _, ad = load("tiny-llama")
    x = _calib()
    x[0, 0] = 10 ** 6  # out-of-vocabulary id: refused before anything runs
    with pytest.raises(CalibrationError, match=r"token ids must lie in \[0, 50257\)"):
        prune_model(m, "sparsegpt", 0.5, calib=x)

    def boom(*a, **k):
        raise RuntimeError("boom inside block 1")
    ad.ffn(ad.blocks(m)[1]).up.forward = boom  # fails half-way through the pass
    with pytest.raises(PartialPruneError, match=r"after blocks \[0\] were already pruned.*boom"):
        prune_model(m, "sparsegpt", 0.5, calib=_calib())  # block 0 was changed in place: said so, by name
    assert float((weight_oi(ad.linear_layers(ad.blocks(m)[0])["self_attn.q_proj"]) == 0).float().mean()) > 0.4
    no_hook_leak(m)
    assert all(type(b).__name__ != "_Catcher" for b in ad.blocks(m))  # blocks restored


def test_float_or_empty_calibration_is_refused():
    m, _, _ = load("tiny-llama")
    with pytest.raises(CalibrationError, match="integer token ids"):
        prune_model(m, "wanda", 0.5, calib=_calib().float())
    with pytest.raises(CalibrationError, match="non-empty"):
        prune_model(m, "wanda", 0.5, calib=torch.zeros(0, 8, dtype=torch.long))
    with pytest.raises(CalibrationError, match="maximum positions"):
        prune_model(m, "wanda", 0.5, calib=torch.zeros(1, 300, dtype=torch.long))


def test_capture_records_all_kwargs():
    m, _, ad = load("tiny-gemma3")
    cap = capture_block_inputs(m, _calib(4, 16), batch_size=2)
    assert len(cap.hidden) == 2 and cap.hidden[0].shape == (2, 16, 64)
    kw = cap.args[0][0][1]
    assert "position_embeddings" in kw and isinstance(kw["position_embeddings"], tuple)
    assert len(cap.args) == ad.n_blocks(m)


def test_joint_quantization():
    m, _, ad = load("tiny-opt")
    prune_model(m, "sparsegpt", nm=(2, 4), wbits=3, calib=_calib())
    for b in ad.blocks(m):
        for l in ad.linear_layers(b).values():
            w = weight_oi(l)
            assert is_nm(w, 2, 4)
            assert max(len(torch.unique(r)) for r in w) <= 8


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(sparsity=1.0), SparsityError, r"\[0, 1\)"),
    (dict(sparsity=-0.5), SparsityError, r"\[0, 1\)"),
    (dict(nm=(4, 4)), SparsityError, "N < M"),
    (dict(nm=(2, 5)), SparsityError, "not divisible by M=5"),
    (dict(wbits=1), SparsityError, "wbits"),
    (dict(wbits=20), SparsityError, "wbits"),
    (dict(calib="none"), CalibrationError, "calibration"),
    (dict(calib="short"), CalibrationError, "at least as many calibration tokens"),
])
def test_bad_input(kwargs, err, match):
    m, _, ad = load("tiny-llama")
    calib = {"none": None, "short": _calib(1, 16)}.get(kwargs.pop("calib", ""), _calib())
    with pytest.raises(err, match=match):
        prune_model(m, "sparsegpt", calib=calib, **kwargs)


def test_save_and_load_pruned(tmp_path):
    m, tok, ad = load("tiny-llama")
    shrink_ffns(m, 0.5)
    rep = prune_model(m, "sparsegpt", nm=(2, 4), calib=_calib())
    save_model(m, tok, tmp_path / "pruned", extra={"pruning": rep.summary()})
    m2, _, ad2 = load_model(tmp_path / "pruned")
    assert all(torch.equal(a, b) for a, b in zip(_masks(m, ad), _masks(m2, ad2)))
    x = _calib()
    assert torch.allclose(_hidden(m, ad, x), _hidden(m2, ad2, x), atol=1e-5)


def test_composition_with_ffn_removal():
    m, _, ad = load("tiny-gpt2")
    info = shrink_ffns(m, 0.5)
    assert info.after["ffn_widths"] == [64, 64] and info.ffn_neurons_removed == 128
    rep = prune_model(m, "sparsegpt", nm=(2, 4), wbits=4, calib=_calib())
    assert rep.overall["sparsity"] >= 0.5
    down = rep.layers[rep.layers.layer == "mlp.c_proj"]
    assert (down["in"] == 64).all()


def test_model_on_cpu_block_on_device_argument():
    m, _, ad = load("tiny-llama")
    rep = prune_model(m, "wanda", 0.5, calib=_calib(), device="cpu")
    assert next(m.parameters()).device.type == "cpu" and rep.overall["sparsity"] == 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the device differs from the model's)")
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_model_on_cpu_blocks_on_cuda_same_result(method):
    a, _, ad = load("tiny-llama", device="cpu")
    b, _, _ = load("tiny-llama", device="cpu")
    calib = _calib(16, 64)
    prune_model(a, method, 0.5, calib=calib, device="cpu")
    prune_model(b, method, 0.5, calib=calib if method != "magnitude" else None, device="cuda")
    assert next(b.parameters()).device.type == "cpu"  # the model stayed where it was
    for wa, wb in zip(_masks(a, ad), _masks(b, ad)):
        assert (wa != wb).float().mean() < 0.01  # same masks up to float ties


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_semi_structured_needs_cuda():
    m, _, _ = load("tiny-llama")
    with pytest.raises(RuntimeError, match="CUDA"):
        to_semi_structured(m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_semi_structured_matches_dense_on_cuda():
    m, _, ad = load("tiny-llama", device="cuda")
    prune_model(m, "magnitude", nm=(2, 4))
    x = _calib().cuda()
    ref = _hidden(m.half(), ad, x)
    info = to_semi_structured(m)
    assert torch.allclose(_hidden(m, ad, x), ref, atol=5e-2) or not info["converted"]


@pytest.mark.parametrize("method", METHODS)
def test_heldout_error_on_the_calibration_windows_is_the_in_sample_error(method):
    """Held-out windows flow through the same pruned blocks; given the calibration windows themselves
    as held-out windows, the held-out error must equal the in-sample error, layer by layer."""
    calib = _calib(4, 64)
    rep = prune_model(load("tiny-llama").model, method, 0.5, calib=calib, measure_error=True, heldout=calib)
    df = rep.layers
    assert df["heldout_rel_error"].notna().all() and rep.notes["heldout_tokens"] == calib.numel()
    assert (df["heldout_rel_error"] - df["rel_error"]).abs().max() < 1e-4 * df["rel_error"].max()


def test_in_sample_error_favours_sparsegpt_held_out_error_less():
    """SparseGPT minimises the error on its calibration inputs: on held-out windows its error is
    higher than in-sample, and its advantage over Wanda shrinks."""
    calib, held = _calib(8, 64, seed=0), _calib(8, 64, seed=1)
    reps = {meth: prune_model(load("tiny-llama").model, meth, 0.5, calib=calib, measure_error=True, heldout=held)
            for meth in ("sparsegpt", "wanda")}
    s, w = reps["sparsegpt"].layers, reps["wanda"].layers
    assert s["heldout_rel_error"].mean() > s["rel_error"].mean()
    assert w["heldout_rel_error"].mean() / s["heldout_rel_error"].mean() < w["rel_error"].mean() / s["rel_error"].mean()


def test_bf16_forwards_keep_fp32_weights_exact():
    """forward_dtype='bfloat16' (what a GPU run uses): the kept weights of a fp32 model are its own
    fp32 values, not rounded to bf16, and the masks barely differ from an fp32 pass."""
    a, _, ad = load("tiny-llama")
    w0 = [weight_oi(l).clone() for b in ad.blocks(a) for l in ad.linear_layers(b).values()]
    calib = _calib(8, 64)
    rep = prune_model(a, "wanda", 0.5, calib=calib, forward_dtype="bfloat16")
    assert rep.notes["forward_dtype"] == "bfloat16"
    b, _, _ = load("tiny-llama")
    prune_model(b, "wanda", 0.5, calib=calib)
    for wa, wb, w in zip(_masks(a, ad), _masks(b, ad), w0):
        assert (wa != wb).float().mean() < 0.05
    for l, w in zip([l for blk in ad.blocks(a) for l in ad.linear_layers(blk).values()], w0):
        kept = weight_oi(l) != 0
        assert weight_oi(l).dtype == torch.float32 and torch.equal(weight_oi(l)[kept], w[kept])


def test_sparsegpt_bf16_forwards_close_to_fp32():
    calib = _calib(8, 64)
    errs = {}
    for dt in (None, "bfloat16"):
        rep = prune_model(load("tiny-llama").model, "sparsegpt", 0.5, calib=calib, forward_dtype=dt)
        errs[dt] = rep.layers["rel_error"].to_numpy()
        assert rep.overall["sparsity"] == 0.5
    assert abs(errs["bfloat16"].mean() / errs[None].mean() - 1) < 0.05


def test_model_in_bf16_is_pruned_in_bf16():
    m, _, ad = load("tiny-llama", dtype=torch.bfloat16)
    rep = prune_model(m, "sparsegpt", 0.5, calib=_calib(8, 64))
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    assert rep.overall["sparsity"] == 0.5 and rep.layers["rel_error"].notna().all()


def test_tf32_offload_and_auto_options_on_cpu():
    """hessian_precision='tf32' is emulated on the CPU (about the same result), offload=True gives the
    same result as keeping activations on the device, forward_dtype='auto' is the model dtype off CUDA."""
    calib = _calib(8, 64)
    base = prune_model(load("tiny-llama").model, "sparsegpt", 0.5, calib=calib)
    tf32 = prune_model(load("tiny-llama").model, "sparsegpt", 0.5, calib=calib, hessian_precision="tf32")
    off = prune_model(load("tiny-llama").model, "sparsegpt", 0.5, calib=calib, offload=True, forward_dtype="auto")
    assert tf32.notes["hessian_precision"] == "tf32" and "forward_dtype" not in off.notes
    assert abs(tf32.overall["mean_rel_error"] / base.overall["mean_rel_error"] - 1) < 0.01
    assert off.layers["rel_error"].tolist() == base.layers["rel_error"].tolist()


@pytest.mark.parametrize("kwargs,match", [
    (dict(forward_dtype="int8"), "forward_dtype"),
    (dict(hessian_precision="fp16"), "hessian_precision"),
    (dict(heldout=torch.zeros(2, 8)), "held-out windows must hold integer token ids"),
])
def test_bad_precision_and_heldout_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune_model(load("tiny-llama").model, "wanda", 0.5, calib=_calib(), **kwargs)


def test_heldout_needs_calibration_windows():
    with pytest.raises(CalibrationError, match="measuring the reconstruction error"):
        prune_model(load("tiny-llama").model, "magnitude", 0.5, heldout=_calib())
