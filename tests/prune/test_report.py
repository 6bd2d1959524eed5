"""What a pruning call achieved (minilib.prune.report): snapshot counts against numel and count_nonzero,
report numbers against hand counts of removed neurons and zeroed weights, the reconstruction error
against ``sum ||(W_old - W_new) x||^2 / tokens`` computed from the inputs, ``check`` and ``merge``."""
import copy
import json
import math

import pandas as pd
import pytest
import torch

from minilib.models import TINY, remove_ffn_neurons, tiny_model
from minilib.prune.report import PruneReport, reconstruction_stats, snapshot

PARTS = ("embedding", "attention", "ffn", "norm", "head", "other")
# parameters one FFN neuron owns, by hand: its up row (+ its up bias), gate row, down column
_UNGATED = ("tiny-gpt2", "tiny-bert", "tiny-opt", "tiny-phi")
PER_NEURON = {n: 64 + 1 + 64 if n in _UNGATED else 3 * 64 for n in TINY}
_MODELS: dict = {}


def _model(name):
    """A fresh copy of the tiny model (each loaded once per file)."""
    if name not in _MODELS:
        _MODELS[name] = tiny_model(name)
    return copy.deepcopy(_MODELS[name][0])


def _unique_params(model):
    seen = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = p
    return list(seen.values())


def _hand_ffn_params(name, model):
    blocks = {"tiny-gpt2": lambda: [(b.mlp.c_fc, b.mlp.c_proj) for b in model.transformer.h],
              "tiny-bert": lambda: [(b.intermediate.dense, b.output.dense) for b in model.encoder.layer],
              "tiny-opt": lambda: [(b.fc1, b.fc2) for b in model.model.decoder.layers],
              "tiny-phi": lambda: [(b.mlp.fc1, b.mlp.fc2) for b in model.model.layers],
              # Phi-3: the fused gate_up_proj (held split by minilib: its parameters are gate's and up's)
              "tiny-phi3": lambda: [(b.mlp.gate_up_proj, b.mlp.down_proj) for b in model.model.layers]}
    llama_like = lambda: [(b.mlp.up_proj, b.mlp.gate_proj, b.mlp.down_proj) for b in model.model.layers]  # noqa: E731
    return sum(p.numel() for mods in blocks.get(name, llama_like)() for m in mods for p in m.parameters())


# --- snapshot -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_snapshot_counts_against_numel(name):
    model = _model(name)
    snap = snapshot(model)
    sizes = snap["sizes"]
    params = _unique_params(model)
    assert sizes["total"] == sum(p.numel() for p in params)
    assert sizes["total"] == sum(sizes[k] for k in PARTS)
    assert sizes["nonzeros"] == sum(int((p != 0).sum()) for p in params)
    assert sizes["ffn"] == _hand_ffn_params(name, model)
    emb = model.get_input_embeddings()
    assert sizes["embedding"] == emb.weight.numel()
    assert snap["ffn_widths"] == [128, 128]
    assert snap["vocab"] == emb.weight.shape[0] == len(_MODELS[name][1])


def test_snapshot_counts_tied_weights_once():
    model = _model("tiny-llama")  # tie_word_embeddings=True: lm_head is the embedding
    assert model.lm_head.weight is model.get_input_embeddings().weight
    raw = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    sizes = snapshot(model)["sizes"]
    assert sizes["total"] == raw - model.lm_head.weight.numel()
    assert sizes["head"] == 0


def test_snapshot_sees_zeroed_weights_and_nothing_else():
    model = _model("tiny-opt")
    before = snapshot(model)
    w = model.model.decoder.layers[0].fc1.weight
    with torch.no_grad():
        assert (w[:5] != 0).all()
        w[:5] = 0
    after = snapshot(model)
    assert before["sizes"]["nonzeros"] - after["sizes"]["nonzeros"] == 5 * 64
    assert {k: v for k, v in after["sizes"].items() if k != "nonzeros"} == \
           {k: v for k, v in before["sizes"].items() if k != "nonzeros"}


# --- removing neurons -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert", "tiny-llama", "tiny-phi3", "tiny-qwen2"])
def test_report_of_removed_neurons_by_hand(name):
    model = _model(name)
    before = snapshot(model)
    remove_ffn_neurons(model, 0, torch.arange(10, 128))     # 10 removed
    remove_ffn_neurons(model, 1, torch.arange(0, 125))      # 3 removed
    rep = PruneReport("by-hand", {"ratio": 13 / 256}, before, snapshot(model))
    removed = 13 * PER_NEURON[name]
    assert rep.params_before - rep.params_after == removed
    assert rep.params_after == sum(p.numel() for p in _unique_params(model))
    assert rep.param_ratio == pytest.approx(removed / rep.params_before)
    assert rep.size_ratio == pytest.approx(1 - removed / rep.params_before)
    assert rep.ffn_neurons_removed == 13 and rep.removed_per_layer == [10, 3]
    assert rep.ffn_ratio == pytest.approx(13 / 256)
    assert rep.after["ffn_widths"] == [118, 125]
    t = rep.table().set_index("type")
    assert t.loc["ffn", "before"] - t.loc["ffn", "after"] == removed
    assert t.loc["ffn", "removed_pct"] == pytest.approx(100 * removed / t.loc["ffn", "before"])
    assert (t.loc[["embedding", "attention", "norm", "other"], "removed_pct"] == 0).all()
    assert t.loc["total", "removed_pct"] == pytest.approx(100 * rep.param_ratio)
    assert rep.check() is rep
    assert rep.overall["params"] == 0 and math.isnan(rep.overall["mean_rel_error"])  # no layer rows
    assert "FFN neurons -13 (5.1%)" in str(rep)


def test_remove_neurons_returns_the_same_numbers():
    from minilib.prune import remove_neurons
    model = _model("tiny-llama")
    masks = [torch.arange(128) < 10, torch.arange(128) >= 125]
    rep = remove_neurons(model, masks, target={"ratio": 13 / 256})
    assert rep.params_before - rep.params_after == 13 * PER_NEURON["tiny-llama"]
    assert rep.removed_per_layer == [10, 3] and rep.check() is rep


@pytest.mark.parametrize("asked", [0.1, 0.0])
def test_check_refuses_an_ffn_ratio_that_was_not_achieved(asked):
    model = _model("tiny-llama")
    before = snapshot(model)
    remove_ffn_neurons(model, 0, torch.arange(40, 128))  # 40 of 256 removed: 0.156
    with pytest.raises(AssertionError, match=rf"by-hand: asked for FFN ratio {asked}, achieved 0.156"):
        PruneReport("by-hand", {"ratio": asked}, before, snapshot(model)).check()


# --- zeroed weights: layer rows ---------------------------------------------------------------------

def test_reconstruction_stats_by_hand():
    g = torch.Generator().manual_seed(0)
    w_old = torch.randn(6, 10, generator=g)
    w_new = w_old.clone()
    w_new[w_old.abs() < 0.7] = 0
    x = torch.randn(25, 10, generator=g)  # 25 tokens
    row = reconstruction_stats("fc", w_old, w_new, x.T @ x, tokens=25)
    zeros = int((w_new == 0).sum())
    assert row["layer"] == "fc" and (row["out"], row["in"], row["params"]) == (6, 10, 60)
    assert row["zeros"] == zeros and row["sparsity"] == zeros / 60
    err = sum(float(((w_old - w_new) @ x[t]).pow(2).sum()) for t in range(25)) / 25
    ref = sum(float((w_old @ x[t]).pow(2).sum()) for t in range(25)) / 25
    assert row["error"] == pytest.approx(err, rel=1e-4)
    assert row["rel_error"] == pytest.approx(err / ref, rel=1e-4)
    same = reconstruction_stats("fc", w_old, w_old, x.T @ x, tokens=25)
    assert same["error"] == 0 and same["rel_error"] == 0 and same["zeros"] == 0
    unmeasured = reconstruction_stats("fc", w_old, w_new)
    assert unmeasured["zeros"] == zeros and math.isnan(unmeasured["error"]) and math.isnan(unmeasured["rel_error"])


def _zeroed_report(sparsities=(0.5, 0.25), target=None, measure=True):
    g = torch.Generator().manual_seed(1)
    rows, total = [], 0
    for i, s in enumerate(sparsities):
        w = torch.randn(8, 16, generator=g)
        new = w.clone()
        new.view(-1)[: round(s * 128)] = 0
        x = torch.randn(20, 16, generator=g)
        rows.append(reconstruction_stats(f"l{i}", w, new, x.T @ x if measure else None, 20))
        total += round(s * 128)
    model = _model("tiny-gpt2")
    snap = snapshot(model)
    return PruneReport("zero", target if target is not None else {"sparsity": 0.375}, snap, snap,
                       pd.DataFrame(rows)), total


def test_overall_counts_the_touched_layers():
    rep, zeros = _zeroed_report()
    o = rep.overall
    assert o["params"] == 256 and o["zeros"] == zeros == 96 and o["nonzeros"] == 160
    assert o["sparsity"] == 96 / 256
    assert o["mean_rel_error"] == pytest.approx(float(rep.layers["rel_error"].mean()))
    assert 0 < o["mean_rel_error"] < 1
    assert rep.param_ratio == 0 and rep.ffn_neurons_removed == 0
    assert rep.check() is rep
    assert math.isnan(_zeroed_report(measure=False)[0].overall["mean_rel_error"])
    assert "weight sparsity 37.50% of 256" in str(rep)


@pytest.mark.parametrize("asked,ok", [(0.375, True), (0.376, True), (0.4, False), (0.5, False), (0.0, False)])
def test_check_compares_the_achieved_sparsity(asked, ok):
    rep, _ = _zeroed_report(target={"sparsity": asked})
    if ok:  # within tol (1e-3) plus one weight per layer of rounding (2 / 256)
        rep.check()
    else:
        with pytest.raises(AssertionError, match=rf"zero: asked for sparsity {asked}, achieved 0.375000"):
            rep.check()


def test_empty_report():
    snap = snapshot(_model("tiny-gpt2"))
    rep = PruneReport("nothing", {"sparsity": 0.5}, snap, snap)
    o = rep.overall
    assert math.isnan(o.pop("mean_rel_error"))
    assert o == {"params": 0, "zeros": 0, "nonzeros": 0, "sparsity": 0.0}
    assert rep.check() is rep  # no layer rows: nothing to compare
    assert str(rep).startswith("[prune] nothing {'sparsity': 0.5}: params 3,299,904 -> 3,299,904 (0.0% removed)")


# --- summary, JSON, merge -------------------------------------------------------------------------

def test_summary_and_as_dict_are_plain_json():
    rep, _ = _zeroed_report()
    rep.timings, rep.notes = {"solve_s": 0.12345}, {"calib_tokens": 640}
    s = rep.summary()
    assert s["method"] == "zero" and s["target_sparsity"] == 0.375 and s["achieved_sparsity"] == 0.375
    assert s["params_before"] == s["params_after"] == rep.before["sizes"]["total"]
    assert s["solve_s"] == 0.123 and s["calib_tokens"] == 640
    assert s["nonzeros_after"] == rep.after["sizes"]["nonzeros"]
    d = json.loads(json.dumps(rep.as_dict()))
    assert d["sizes_before"] == rep.before["sizes"] and d["ffn_widths_after"] == [128, 128]
    assert {k: d[k] for k in s if k != "mean_rel_error"} == {k: s[k] for k in s if k != "mean_rel_error"}


def test_merge_keeps_the_first_before_and_the_last_after():
    model = _model("tiny-llama")
    s0 = snapshot(model)
    remove_ffn_neurons(model, 0, torch.arange(16, 128))
    s1 = snapshot(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[:, :4] = 0
    s2 = snapshot(model)
    first = PruneReport("remove", {"ratio": 16 / 256}, s0, s1, timings={"apply_s": 1.0})
    w = torch.randn(4, 4)
    second = PruneReport("zero", {"sparsity": 0.25}, s1, s2,
                         pd.DataFrame([reconstruction_stats("d", w, torch.where(torch.eye(4).bool(), 0, w))]),
                         timings={"apply_s": 0.5, "solve_s": 2.0}, notes={"fallback": 0})
    both = first.merge(second)
    assert both.method == "remove+zero" and both.target == {"ratio": 16 / 256, "sparsity": 0.25}
    assert both.before is s0 and both.after is s2
    assert both.ffn_neurons_removed == 16 and both.removed_per_layer == [16, 0]
    assert both.params_before - both.params_after == 16 * PER_NEURON["tiny-llama"]
    assert s0["sizes"]["nonzeros"] - both.after["sizes"]["nonzeros"] == 16 * 192 + 4 * 64
    assert both.timings == {"apply_s": 1.5, "solve_s": 2.0} and both.notes == {"fallback": 0}
    assert list(both.layers["step"]) == ["zero"] and both.overall["zeros"] == 4
    assert both.check() is both


# --- a real pruning call --------------------------------------------------------------------------

def test_prune_model_report_counts_the_model():
    from minilib.models.linear import is_linear
    from minilib.prune import prune_model
    model = _model("tiny-opt")
    nz_before = sum(int((p != 0).sum()) for p in _unique_params(model))
    rep = prune_model(model, "magnitude", sparsity=0.5, device="cpu")
    weights = [m.weight for b in model.model.decoder.layers for m in b.modules() if is_linear(m)]
    assert len(rep.layers) == len(weights) == 12
    assert rep.overall["params"] == sum(w.numel() for w in weights)
    assert rep.overall["zeros"] == sum(int((w == 0).sum()) for w in weights) == sum(w.numel() for w in weights) // 2
    assert rep.after["sizes"]["nonzeros"] == sum(int((p != 0).sum()) for p in _unique_params(model))
    assert nz_before - rep.after["sizes"]["nonzeros"] == rep.overall["zeros"]  # the random weights had no zeros
    assert rep.param_ratio == 0 and rep.check() is rep
