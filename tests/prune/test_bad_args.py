"""Bad arguments to one-shot pruning and FFN surgery: a clear error naming the argument, raised
before anything runs, the model left exactly as it was; valid N:M calls still give exact N:M; a
Ctrl-C half-way through says which blocks were already pruned (nothing silently wrong)."""

import numpy as np
import pytest
import torch

import minilib.prune.oneshot as oneshot
from minilib.calib import CalibrationError
from minilib.hooks import count_hooks
from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.models.surgery import ffn_widths, remove_ffn_neurons
from minilib.prune import (METHODS, PartialPruneError, SparseGPT, SparsityError, check_sparsity_nm, is_nm,
                           parse_nm, prune_model, score_neurons_random)
from minilib.prune.scores import score_neurons_shared_random


def _calib(n=4, seqlen=32, seed=0):
    return torch.randint(0, 1000, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _same(m, state):
    now = m.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def llama():
    """One tiny model for every refused call: each test checks that the refusal left it untouched."""
    return load("tiny-llama")


def _refused(m, err, match, **kwargs):
    state = _state(m)
    kwargs.setdefault("calib", _calib())
    with pytest.raises(err, match=match):
        prune_model(m, **kwargs)
    assert _same(m, state), "a refused call changed the model"
    assert count_hooks(m) == 0


# --- sparsity together with nm -----------------------------------------------------------------

NM_METHODS = [m for m in METHODS if METHODS[m].supports_nm]   # DSnoT refines unstructured masks only


@pytest.mark.parametrize("method", NM_METHODS)
@pytest.mark.parametrize("sparsity,nm", [(0.7, "2:4"), (0.3, (2, 4)), (0.0, "2:4"), (0.75, (1, 4)),
                                         (0.4, "4:8"), (0.9, (3, 4))])
def test_sparsity_that_nm_would_ignore_is_refused(llama, method, sparsity, nm):
    m = llama.model
    _refused(m, SparsityError, r"sparsity=.* conflicts with nm=.*N/M", method=method, sparsity=sparsity, nm=nm)


@pytest.mark.parametrize("sparsity", [1.5, 1.0, -0.1, float("nan"), float("inf"), "0.5", True])  # None = not given
def test_sparsity_range_is_checked_even_with_nm(llama, sparsity):
    _refused(llama.model, SparsityError, "sparsity", method="wanda", sparsity=sparsity, nm="2:4")


@pytest.mark.parametrize("nm", [("a", 4), (True, 4), (2.5, 4), (2, None), "2:x", "2:4:8", (2,), 3])
def test_malformed_nm_is_refused(llama, nm):
    _refused(llama.model, SparsityError, "N:M", method="magnitude", nm=nm)


@pytest.mark.parametrize("method", NM_METHODS)
@pytest.mark.parametrize("nm,sparsity", [((2, 4), 0.5), ((2, 4), None), ((1, 4), 0.25), ((1, 4), None),
                                         ((4, 8), 0.5)])
def test_valid_nm_with_sparsity_gives_exact_nm(method, nm, sparsity):
    m, _, ad = load("tiny-llama")
    kw = {} if sparsity is None else {"sparsity": sparsity}  # not given: nm decides
    rep = prune_model(m, method, nm=nm, calib=_calib(), **kw)
    n, mm = nm
    assert rep.target == {"nm": f"{n}:{mm}"} and rep.sparsity == n / mm
    for b in ad.blocks(m):
        for layer in ad.linear_layers(b).values():
            w = weight_oi(layer)
            assert is_nm(w, n, mm)
            # exactly n zeros in every group of m (not merely at least n)
            assert ((w.reshape(w.shape[0], -1, mm) == 0).sum(-1) == n).all()
    assert rep.overall["sparsity"] == pytest.approx(n / mm)


def test_check_sparsity_nm_rule():
    assert check_sparsity_nm(0.3, None) == 0.3
    assert check_sparsity_nm(None, None) == 0.5            # neither given: DEFAULT_SPARSITY
    assert check_sparsity_nm(None, (1, 4)) == 0.25         # not given: nm decides
    with pytest.raises(SparsityError, match=r"sparsity=0.5 conflicts with nm=1:4"):
        check_sparsity_nm(0.5, (1, 4))                     # an explicit 0.5 is not the default
    assert check_sparsity_nm(0.25, (1, 4)) == 0.25
    assert check_sparsity_nm(2 / 3 + 1e-12, (2, 3)) == pytest.approx(2 / 3)
    with pytest.raises(SparsityError, match=r"sparsity=0.3 conflicts with nm=1:4"):
        check_sparsity_nm(0.3, (1, 4))
    with pytest.raises(SparsityError, match=r"\[0, 1\)"):
        check_sparsity_nm(1.5, (2, 4))
    assert parse_nm("2:4") == (2, 4) and parse_nm(None) is None


def test_solver_refuses_sparsity_that_nm_would_ignore():
    lin = torch.nn.Linear(16, 8)
    w0 = lin.weight.detach().clone()
    solver = SparseGPT(lin)
    solver.add_batch(torch.randn(64, 16))
    with pytest.raises(SparsityError, match="conflicts with nm=2:4"):
        solver.prune(sparsity=0.7, n=2, m=4)
    with pytest.raises(SparsityError, match=r"\[0, 1\)"):
        solver.prune(sparsity=1.5)
    for kw, match in [(dict(percdamp=-0.1), "percdamp"), (dict(percdamp=float("nan")), "percdamp"),
                      (dict(blocksize=0), "blocksize"), (dict(subblock=-1), "subblock")]:
        with pytest.raises(ValueError, match=match):
            solver.prune(0.5, **kw)
    assert torch.equal(lin.weight, w0)
    solver.prune(0.5, n=2, m=4)  # sparsity equal to n/m with n:m is fine
    assert is_nm(lin.weight.detach(), 2, 4)


# --- the other numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("percdamp", [-0.01, 1.0, 1.5, float("nan"), float("inf"), "0.01", True])
def test_bad_percdamp(llama, percdamp):
    _refused(llama.model, ValueError, r"method 'sparsegpt': percdamp must be in \[0, 1\)", method="sparsegpt",
             percdamp=percdamp)
    _refused(llama.model, ValueError, r"percdamp must be in \[0, 1\)", method="sparsegpt",
             options={"percdamp": percdamp})


@pytest.mark.parametrize("arg", ["batch_size", "blocksize"])
@pytest.mark.parametrize("value,err", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError),
                                       ("8", TypeError)])
def test_bad_counts(llama, arg, value, err):
    _refused(llama.model, err, f"{arg} must be an integer >= 1", method="sparsegpt", **{arg: value})


def test_none_is_the_default_of_a_sparsegpt_option_and_a_batch_size_of_none_is_refused(llama):
    _refused(llama.model, TypeError, "batch_size must be an integer >= 1", method="sparsegpt", batch_size=None)
    rep = prune_model(load("tiny-llama").model, "sparsegpt", 0.5, calib=_calib(), blocksize=None, percdamp=None)
    assert rep.notes["options"] == {"blocksize": 128, "percdamp": 0.01}


@pytest.mark.parametrize("method,kw,match", [
    ("wanda", dict(percdamp=0.1), r"method 'wanda' does not take option\(s\) percdamp; it takes no options; "
                                  r"percdamp belong\(s\) to sparsegpt"),
    ("magnitude", dict(options={"a": 1.0}), r"does not take option\(s\) a; .*a belong\(s\) to ria"),
    ("sparsegpt", dict(options={"blocksize": 64}, blocksize=32), "blocksize is given both as a keyword and in options"),
    ("ria", dict(options={"a": -1.0}), r"method 'ria': a must be a finite number >= 0"),
    ("ria", dict(options={"compare": "column"}), r"method 'ria': compare must be one of \('layer', 'row'\)"),
    ("obs", {}, r"unknown method 'obs'; choose one of \('magnitude', 'wanda', 'ria', 'dsnot', 'sparsegpt'"),
])
def test_method_options_are_checked_before_anything_runs(llama, method, kw, match):
    _refused(llama.model, ValueError, match, method=method, **kw)


def test_bad_counts_are_refused_even_without_a_forward_pass(llama):
    _refused(llama.model, ValueError, "batch_size", method="magnitude", calib=None, batch_size=0)


@pytest.mark.parametrize("bad", ["int8", "fp8", "float64x", torch.int32, 16])
def test_bad_forward_dtype_lists_the_allowed_names(llama, bad):
    _refused(llama.model, ValueError, r"forward_dtype must be None .*'bf16'.*'fp16'", method="wanda",
             forward_dtype=bad)


@pytest.mark.parametrize("name,want", [("fp16", "float16"), ("float16", "float16"), ("half", "float16"),
                                       ("bf16", "bfloat16"), (" torch.BFloat16 ", "bfloat16"),
                                       (torch.bfloat16, "bfloat16")])
def test_forward_dtype_names_map_to_one_dtype(name, want):
    m = load("tiny-llama").model
    rep = prune_model(m, "wanda", 0.5, calib=_calib(2, 16), forward_dtype=name, device="cpu")
    assert rep.notes["forward_dtype"] == want
    assert next(m.parameters()).dtype == torch.float32  # the weights keep their dtype


@pytest.mark.parametrize("calib,match", [(_calib().tolist(), r"\[n, seqlen\] LongTensor"),
                                         (_calib()[0], r"\[n, seqlen\]"), (_calib()[None], r"\[n, seqlen\]"),
                                         (_calib().float(), "integer token ids"),
                                         (_calib().bool(), "integer token ids"),
                                         (_calib() + 60000, r"token ids must lie in \[0, 50257\)")])
def test_bad_calibration_windows(llama, calib, match):
    _refused(llama.model, CalibrationError, match, method="wanda", calib=calib)


@pytest.mark.parametrize("seed", ["a", 1.5, True, -1, None, 2**63])
def test_random_scores_need_an_integer_seed(llama, seed):
    for score in (score_neurons_random, score_neurons_shared_random):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            score(llama.model, seed)


def test_random_scores_accept_numpy_seeds(llama):
    a = score_neurons_random(llama.model, np.int64(3))
    b = score_neurons_random(llama.model, 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# --- failures half-way through -------------------------------------------------------------------

class _Interrupt(KeyboardInterrupt):
    """A subclass, as a runner's SIGTERM handler might raise: it must come back as itself."""


def _interrupt_block(m, ad, block, exc):
    def boom(*a, **k):
        raise exc
    ad.ffn(ad.blocks(m)[block]).up.forward = boom


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_after_a_pruned_block_reports_the_partial_prune(method, no_hook_leak):
    m, _, ad = load("tiny-llama")
    exc = _Interrupt()
    _interrupt_block(m, ad, 1, exc)  # Ctrl-C while block 1 runs, block 0 already pruned
    with pytest.raises(KeyboardInterrupt) as info:
        prune_model(m, method, 0.5, calib=_calib(), measure_error=True)
    assert info.value is exc  # the very same interrupt, re-raised
    assert info.value.pruned_blocks == [0]
    note = " ".join(info.value.__notes__)
    assert f"{method} pruning was interrupted after blocks [0] were already pruned in place" in note
    assert "half-pruned" in note
    q0 = weight_oi(ad.linear_layers(ad.blocks(m)[0])["self_attn.q_proj"])
    q1 = weight_oi(ad.linear_layers(ad.blocks(m)[1])["self_attn.q_proj"])
    assert float((q0 == 0).float().mean()) == pytest.approx(0.5, abs=0.01)   # the report is true
    assert float((q1 == 0).float().mean()) < 0.01
    no_hook_leak(m)
    assert all(type(b).__name__ != "_Catcher" for b in ad.blocks(m))
    assert not m.training


def test_ctrl_c_before_any_change_is_a_plain_interrupt():
    m, _, ad = load("tiny-llama")
    state = _state(m)
    _interrupt_block(m, ad, 0, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        prune_model(m, "sparsegpt", 0.5, calib=_calib())
    assert not getattr(info.value, "__notes__", None) and not hasattr(info.value, "pruned_blocks")
    assert _same(m, state)


def test_ctrl_c_inside_the_solver_counts_the_block_it_changed(monkeypatch):
    """An interrupt after a solve changed block 0's weights but before its rows were recorded."""
    m, _, _ = load("tiny-llama")
    real = SparseGPT.prune
    calls = []

    def solve_then_interrupt(self, *a, **k):
        out = real(self, *a, **k)
        calls.append(self.names)
        raise KeyboardInterrupt
    monkeypatch.setattr(SparseGPT, "prune", solve_then_interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        prune_model(m, "sparsegpt", 0.5, calib=_calib())
    assert len(calls) == 1 and info.value.pruned_blocks == [0]


def test_ctrl_c_during_magnitude_without_calibration(monkeypatch):
    m, _, _ = load("tiny-llama")
    real, seen = oneshot.zero_weights, []

    def zero_then_maybe_interrupt(layer, mask, wbits=16):
        out = real(layer, mask, wbits)
        seen.append(layer)
        if len(seen) == 8:  # the first layer of block 1 (7 linears per block) is already zeroed
            raise KeyboardInterrupt
        return out
    monkeypatch.setattr(oneshot, "zero_weights", zero_then_maybe_interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        prune_model(m, "magnitude", 0.5)
    assert info.value.pruned_blocks == [0, 1]
    assert "after blocks [0, 1]" in info.value.__notes__[0]


def test_other_failures_after_a_changed_block_still_raise_partial_prune_error(monkeypatch):
    m, _, _ = load("tiny-llama")
    real = SparseGPT.prune

    def solve_then_fail(self, *a, **k):
        real(self, *a, **k)
        raise RuntimeError("solver died")
    monkeypatch.setattr(SparseGPT, "prune", solve_then_fail)
    with pytest.raises(PartialPruneError, match=r"failed after blocks \[0\] were already pruned.*solver died"):
        prune_model(m, "sparsegpt", 0.5, calib=_calib())


# --- FFN surgery -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer,err,match", [
    (True, TypeError, r"layer must be an integer block index in \[0, 2\), got True"),
    (False, TypeError, "got False"),
    (1.0, TypeError, r"got 1.0 \(float\)"),
    ("1", TypeError, r"got '1' \(str\)"),
    (None, TypeError, "got None"),
    (torch.tensor(1.0), TypeError, "integer block index"),
    (-1, IndexError, r"layer: block -1 does not exist; the model has 2 blocks \(allowed: 0..1\)"),
    (2, IndexError, "block 2 does not exist"),
])
def test_remove_ffn_neurons_refuses_bad_block_indices(layer, err, match):
    m, _, _ = load("tiny-llama")
    state = _state(m)
    with pytest.raises(err, match=match):
        remove_ffn_neurons(m, layer, list(range(64)))
    assert _same(m, state) and ffn_widths(m) == [128, 128]


def test_remove_ffn_neurons_accepts_integer_types():
    m, _, _ = load("tiny-llama")
    assert remove_ffn_neurons(m, np.int64(1), list(range(64))) == 64
    assert ffn_widths(m) == [128, 64]


@pytest.mark.parametrize("keep", [[], (), torch.tensor([]), torch.tensor([], dtype=torch.long), np.array([])])
def test_empty_keep_is_called_empty_not_a_fraction(keep):
    m, _, _ = load("tiny-llama")
    with pytest.raises(ValueError, match=r"keep is empty.*at least one neuron index in \[0, 128\)") as info:
        remove_ffn_neurons(m, 0, keep)
    assert "fraction" not in str(info.value)
    assert ffn_widths(m) == [128, 128]


@pytest.mark.parametrize("keep,match", [(None, "keep must hold neuron indices"), ("abc", "neuron indices"),
                                        ([0.5, 1.0], "fraction or ratio"), (0.3, "integer")])
def test_keep_that_is_not_indices(keep, match):
    m, _, _ = load("tiny-llama")
    with pytest.raises(TypeError, match=match):
        remove_ffn_neurons(m, 0, keep)
    assert ffn_widths(m) == [128, 128]

