"""Structured FFN pruning: physical removal == zero-masking, budgets, preserved neurons, seeds,
reports, save/load round trips, bad input.  Masks: True = prune."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from minilib.models import ffn_widths, load_model, save_model
from minilib.prune import (PruneReport, SparsityError, layer_budgets, mask_neurons, remove_neurons,
                           score_neurons_anatomy, score_neurons_norm, score_neurons_random, zero_neurons)
from minilib.studies.anatomy import Anatomy, layer_profile, preserved_neurons


def _logits(loaded, texts=("hello there, general", "a b c d e f g")):
    enc = loaded.tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = loaded.model(**enc)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def test_physical_removal_equals_zero_masking(tiny):
    masks = mask_neurons(score_neurons_random(tiny.model, 0), 0.4)
    zeroed = copy.deepcopy(tiny.model)
    zero_neurons(zeroed, masks)
    rep = remove_neurons(tiny.model, masks)
    assert ffn_widths(tiny.model) == [int((~m).sum()) for m in masks] == rep.after["ffn_widths"]
    enc = tiny.tokenizer(["hello there, general", "a b c d e f g"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = zeroed(**enc), tiny.model(**enc)
    key = "logits" if hasattr(a, "logits") else "last_hidden_state"
    torch.testing.assert_close(getattr(a, key), getattr(b, key), atol=1e-5, rtol=1e-4)


def test_report_matches_request(tiny_decoder):
    for ratio in (0.1, 0.5):
        m = copy.deepcopy(tiny_decoder.model)
        rep = remove_neurons(m, mask_neurons(score_neurons_norm(m), ratio), target={"ratio": ratio})
        assert isinstance(rep, PruneReport) and rep.check() is rep
        assert abs(rep.ffn_ratio - ratio) <= 1 / 128
        assert rep.params_after < rep.params_before
        assert rep.removed_per_layer == [round(ratio * 128)] * 2


def test_random_is_seeded_and_independent_per_layer(tiny_decoder):
    m = tiny_decoder.model
    a, b, c = (mask_neurons(score_neurons_random(m, s), 0.5) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], a[1]), "the same indices were drawn in every layer"


def test_budgets_sum_cap_and_profile():
    widths = [100, 100, 100, 100]
    assert layer_budgets(widths, 0.3) == [30] * 4
    prof = np.array([0.2, 1.0, 1.0, 1.8])
    n = layer_budgets(widths, 0.5, prof, strength=1.0, max_layer_ratio=0.9)
    assert sum(n) == 200 and max(n) <= 90
    assert n[0] >= n[1] >= n[3], "a more important layer must not lose more neurons"
    n0 = layer_budgets(widths, 0.5, prof, strength=0.0)
    assert n0 == [50] * 4
    with pytest.raises(SparsityError, match="caps"):
        layer_budgets(widths, 0.95, prof, max_layer_ratio=0.9)


def _fake_anatomy(model, seed=0):
    from minilib.studies.anatomy import NEURON_ARRAYS, model_signature
    sig = model_signature(model)
    g = np.random.default_rng(seed)
    arrays = {k: g.random((sig["n_layers"], sig["widths"][0])).astype(np.float32) for k in NEURON_ARRAYS}
    return Anatomy(arrays, {"signature": sig, "model": "fake"})


def test_preserved_neurons_are_never_removed(tiny_decoder):
    m = tiny_decoder.model
    an = _fake_anatomy(m)
    pres = preserved_neurons(an, 0.1)
    assert all(int(p.sum()) == round(0.1 * 128) for p in pres)
    # make the preserved neurons the *least* important by score: they must still survive
    scores = score_neurons_anatomy(m, an)
    for s, p in zip(scores, pres):
        s[p] = -1.0
    for ratio in (0.3, 0.6, 0.85):
        masks = mask_neurons(scores, ratio, layer_profile(an), pres)
        assert not any(bool(k[p].any()) for k, p in zip(masks, pres)), f"preserved neuron removed at {ratio}"
        assert abs(sum(int(k.sum()) for k in masks) - round(ratio * 256)) == 0
    with pytest.raises(SparsityError):
        mask_neurons(scores, 0.95, layer_profile(an), pres)


def test_bad_ratios(tiny_decoder):
    s = score_neurons_random(tiny_decoder.model, 0)
    for bad in (-0.1, 1.0, 1.5, float("nan"), "0.3", None, True):
        with pytest.raises(SparsityError, match=r"\[0, 1\)"):
            mask_neurons(s, bad)
    with pytest.raises(SparsityError, match="no neurons"):
        mask_neurons(s, 0.999)


def test_score_anatomy_rejects_foreign_arrays():
    from minilib.models import load
    from minilib.studies.anatomy import AnatomyMismatchError
    a, b = load("tiny-gpt2"), load("tiny-opt")
    with pytest.raises(AnatomyMismatchError):
        score_neurons_anatomy(b.model, _fake_anatomy(a.model))
    with pytest.raises(ValueError, match="unknown anatomy score"):
        score_neurons_anatomy(a.model, _fake_anatomy(a.model), "nope")


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_save_load_round_trip(tmp_path, name):
    from minilib.models import load
    m = load(name)
    head = torch.nn.Linear(m.model.config.hidden_size, 2)
    rep = remove_neurons(m.model, mask_neurons(score_neurons_norm(m.model), 0.3), method="magnitude")
    path = save_model(m.model, m.tokenizer, tmp_path / "pruned", extra={"pruning": rep.as_dict()}, head=head)
    files = {p.name for p in Path(path).iterdir()}
    assert "model.safetensors" in files and "minilib_plan.json" in files and "decision_head.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    re = load_model(path)
    assert ffn_widths(re.model) == rep.after["ffn_widths"]
    assert re.plan["extra"]["pruning"]["method"] == "magnitude"
    torch.testing.assert_close(_logits(m), _logits(re))
    torch.testing.assert_close(head.weight, re.head.weight)


def test_bad_neuron_masks_change_nothing(tiny_decoder):
    m = tiny_decoder.model
    widths = ffn_widths(m)
    good = mask_neurons(score_neurons_random(m, 0), 0.3)
    with pytest.raises(TypeError, match="bool tensor"):
        remove_neurons(m, [g.float() for g in good])
    with pytest.raises(ValueError, match="one neuron mask per block"):
        remove_neurons(m, good[:1])
    with pytest.raises(ValueError, match="every neuron"):
        remove_neurons(m, [torch.ones(w, dtype=torch.bool) for w in widths])
    with pytest.raises(ValueError, match="width"):
        remove_neurons(m, [g[:10] for g in good])
    assert ffn_widths(m) == widths


def test_failure_half_way_names_what_was_changed(monkeypatch):
    from minilib.models import load
    from minilib.prune import PartialPruneError
    from minilib.prune import apply as apply_mod
    m = load("tiny-llama").model
    real = apply_mod.remove_ffn_neurons

    def flaky(model, layer, keep, adapter=None):
        if layer == 1:
            raise RuntimeError("disk full")
        return real(model, layer, keep, adapter)
    monkeypatch.setattr(apply_mod, "remove_ffn_neurons", flaky)
    with pytest.raises(PartialPruneError, match=r"blocks \[0\] were already pruned"):
        remove_neurons(m, mask_neurons(score_neurons_random(m, 0), 0.3))
