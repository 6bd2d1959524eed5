"""Anatomy maths on tiny models against a hand computation; hooks; decision task; bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minilib.studies.anatomy import (Anatomy, AnatomyMismatchError, anatomy_for, anatomy_key, collect_anatomies,
                                     collect_anatomy)
from minilib.hooks import count_hooks, forward_hooks, forward_pre_hooks
from minilib.models.linear import weight_oi
from minilib.models import load
from minilib.models.surgery import remove_ffn_neurons


def _hand(loaded, texts):
    """Hand computation: capture the raw tensors with our own hooks, build every contribution vector
    a_j * W_down[:, j] explicitly and take cosines with torch's cosine_similarity."""
    model, tok, ad = loaded
    blocks, ffns = ad.blocks(model), ad.ffns(model)
    acts, outs, blk = {}, {}, {}
    enc = tok(texts, return_tensors="pt", padding=True)
    pos = ad.decision_positions(enc["attention_mask"])
    rows = torch.arange(len(texts))
    B, T = enc["attention_mask"].shape

    def at(x):  # (B, T, ...) or flattened (B*T, ...) -> (B, ...) at the decision token
        return x.reshape(B, T, -1)[rows, pos]
    pre = {f.down: (lambda i: lambda m, a: acts.__setitem__(i, at(a[0])))(i) for i, f in enumerate(ffns)}
    post = {f.down: (lambda i: lambda m, a, o: outs.__setitem__(i, at(o)))(i) for i, f in enumerate(ffns)}
    post.update({b: (lambda i: lambda m, a, o: blk.__setitem__(i, at(o[0] if isinstance(o, tuple) else o)))(i)
                 for i, b in enumerate(blocks)})
    with torch.no_grad(), forward_hooks(post), forward_pre_hooks(pre):
        ad.base(model)(**enc)
    d = blk[len(blocks) - 1]
    cos, proj = [], []
    for i, f in enumerate(ffns):
        W = weight_oi(f.down)                                      # (H, W)
        contrib = acts[i][:, :, None] * W.T[None]                  # (B, W, H): a_j * W[:, j]
        # sanity: the contributions (plus bias) add up to the FFN output
        bias = f.down.bias if f.down.bias is not None else 0
        torch.testing.assert_close(contrib.sum(1) + bias, outs[i], atol=1e-4, rtol=1e-4)
        c = F.cosine_similarity(contrib, d[:, None, :].expand_as(contrib), dim=-1, eps=1e-30)
        cos.append(c.mean(0))
        proj.append((contrib @ d[:, :, None]).squeeze(-1).div(d.norm(dim=1, keepdim=True)).abs().mean(0))
    return torch.stack(cos), torch.stack(proj), blk, d


def test_anatomy_matches_hand_computation(tiny, no_hook_leak, reviews):
    an = collect_anatomy(tiny.model, tiny.tokenizer, reviews, batch_size=4, decision_state="residual")
    cos, proj, blk, d = _hand(tiny, reviews)
    np.testing.assert_allclose(an["neuron_cos"], cos.numpy(), atol=1e-4)
    np.testing.assert_allclose(an["neuron_abs_proj"], proj.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(an["layer_hidden_cos"][:, -1], 1.0, atol=1e-5)   # final layer vs itself
    # texts are processed in length order; arrays come back in input order
    first = F.cosine_similarity(blk[0], d, dim=-1).numpy()
    np.testing.assert_allclose(an["layer_hidden_cos"][:, 0], first, atol=1e-5)
    assert an["neuron_cos"].shape == (2, 128) and an["layer_ffn_cos"].shape == (len(reviews), 2)
    assert (an["act_std"] >= 0).all() and (an["neuron_abs_cos"] >= np.abs(an["neuron_cos"]) - 1e-6).all()
    no_hook_leak(tiny.model)


def test_hooks_removed_when_the_pass_raises(tiny_decoder):
    with pytest.raises(Exception):
        collect_anatomy(tiny_decoder.model, tiny_decoder.tokenizer, ["fine text", 12345], batch_size=1)
    assert count_hooks(tiny_decoder.model) == 0


def test_anatomy_save_load_and_mismatch(tmp_path, reviews):
    from minilib.models import load
    a, b = load("tiny-gpt2"), load("tiny-llama")
    an = collect_anatomy(a.model, a.tokenizer, reviews[:3], meta={"model": "tiny-gpt2"})
    p = an.save(tmp_path / "an.npz")
    an2 = Anatomy.load(p)
    assert an2.meta == json.loads(json.dumps(an.meta))
    for k, v in an.arrays.items():
        np.testing.assert_array_equal(v, an2[k])
    an2.check(a.model)
    with pytest.raises(AnatomyMismatchError, match="family"):
        an2.check(b.model)
    remove_ffn_neurons(a.model, 0, torch.arange(100))
    with pytest.raises(AnatomyMismatchError, match="widths"):
        an2.check(a.model)
    c = load("tiny-gpt2")
    with torch.no_grad():
        c.model.base_model.h[1].mlp.c_proj.weight.mul_(2)
    with pytest.raises(AnatomyMismatchError, match="ffn_hash"):
        an2.check(c.model)


def test_unsupported_family_is_a_clear_error(reviews):
    from types import SimpleNamespace

    from minilib.models.adapters import UnsupportedModelError
    from minilib.prune import score_neurons_norm
    fake = torch.nn.Linear(2, 2)
    fake.config = SimpleNamespace(model_type="mamba")
    with pytest.raises(UnsupportedModelError, match="mamba"):
        score_neurons_norm(fake)
    with pytest.raises(UnsupportedModelError):
        collect_anatomy(fake, None, reviews)



# --- the decision state: the vector the head reads (default) vs the residual before the final norm ---

def test_final_norm_parts_reconstruct_the_norm(tiny_decoder):
    """norm(x) == gain(x) * scale + bias for every family's final norm, and gain is linear."""
    ad, model = tiny_decoder.adapter, tiny_decoder.model
    norm = ad.final_norm(model)
    with torch.no_grad():
        for p in norm.parameters():             # non-trivial gains and biases
            p.add_(torch.randn_like(p) * 0.3)
    x, c = torch.randn(5, model.config.hidden_size) * 3, torch.randn(5, model.config.hidden_size)
    gain, scale, bias = ad.final_norm_parts(model, x)
    with torch.no_grad():
        torch.testing.assert_close(gain(x) * scale[:, None] + bias, norm(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gain(x + 2 * c), gain(x) + 2 * gain(c), atol=1e-5, rtol=1e-5)
    assert load("tiny-bert").adapter.final_norm_parts(load("tiny-bert").model, x) is None


def _hand_head(loaded, texts):
    """Head state by hand: d is the state the head reads; per-layer states through the final norm;
    neuron contributions a_j W[:, j] through the norm's gain with the scale frozen at the residual."""
    model, tok, ad = loaded
    blocks, ffns = ad.blocks(model), ad.ffns(model)
    acts, blk = {}, {}
    enc = tok(texts, return_tensors="pt", padding=True)
    pos = ad.decision_positions(enc["attention_mask"])
    rows = torch.arange(len(texts))
    B, T = enc["attention_mask"].shape

    def at(x):
        return x.reshape(B, T, -1)[rows, pos]
    pre = {f.down: (lambda i: lambda m, a: acts.__setitem__(i, at(a[0])))(i) for i, f in enumerate(ffns)}
    post = {b: (lambda i: lambda m, a, o: blk.__setitem__(i, at(o[0] if isinstance(o, tuple) else o)))(i)
            for i, b in enumerate(blocks)}
    with torch.no_grad(), forward_hooks(post), forward_pre_hooks(pre):
        d = at(ad.base(model)(**enc).last_hidden_state)
    norm, resid = ad.final_norm(model), blk[len(blocks) - 1]
    gain, scale, _ = ad.final_norm_parts(model, resid)
    with torch.no_grad():
        hid = [F.cosine_similarity(norm(blk[i]), d, dim=-1) for i in range(len(blocks))]
        proj = []
        for i, f in enumerate(ffns):
            contrib = acts[i][:, :, None] * weight_oi(f.down).T[None]          # (B, W, H)
            reach = gain(contrib) * scale[:, None, None]                       # what reaches the head
            proj.append((reach @ d[:, :, None]).squeeze(-1).div(d.norm(dim=1, keepdim=True)).abs().mean(0))
    return torch.stack(hid, 1), torch.stack(proj), d, resid


def test_head_state_matches_hand_computation(tiny_decoder, no_hook_leak, reviews):
    m = tiny_decoder
    with torch.no_grad():
        for p in m.adapter.final_norm(m.model).parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ans = collect_anatomies(m.model, m.tokenizer, reviews, batch_size=4)
    an = ans["head"]
    hid, proj, d, resid = _hand_head(m, reviews)
    np.testing.assert_allclose(an["layer_hidden_cos"], hid.numpy(), atol=1e-4)
    np.testing.assert_allclose(an["layer_hidden_cos"][:, -1], 1.0, atol=1e-5)  # norm(last residual) is d
    np.testing.assert_allclose(an["neuron_abs_proj"], proj.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(an["features"], d.numpy(), atol=1e-5)
    np.testing.assert_allclose(an["head_residual_cos"], F.cosine_similarity(d, resid, dim=-1).numpy(), atol=1e-5)
    # the two states really differ for decoders (the norm's gain is not a multiple of the identity)
    assert not np.allclose(an["neuron_abs_proj"], ans["residual"]["neuron_abs_proj"])
    assert an.meta["decision_state"] == "head" and ans["residual"].meta["decision_state"] == "residual"
    for k in ("features", "labels"):
        if k in an.arrays:
            np.testing.assert_array_equal(an[k], ans["residual"][k])
    no_hook_leak(m.model)


def test_encoder_states_coincide(reviews):
    m = load("tiny-bert")
    ans = collect_anatomies(m.model, m.tokenizer, reviews, batch_size=4)
    for k in ("layer_hidden_cos", "layer_ffn_cos", "neuron_abs_proj", "neuron_cos"):
        np.testing.assert_allclose(ans["head"][k], ans["residual"][k], atol=1e-6)


def test_decision_state_in_key_cache_and_check(tmp_path, reviews):
    from minilib.eval.decision import decision_task
    m = load("tiny-llama")
    k = {s: anatomy_key("tiny-llama", "sst2", 16, 0, "{text}", 64, s) for s in ("head", "residual")}
    assert k["head"] != k["residual"] and "head" in k["head"] and "residual" in k["residual"]
    with pytest.raises(ValueError, match="decision_state"):
        anatomy_key("tiny-llama", "sst2", 16, 0, "{text}", 64, "post")
    task = decision_task("sst2", n_train=12, n_test=4, seed=0)
    an, info = anatomy_for(m, task, batch_size=6, directory=tmp_path)                 # computes and stores both
    assert not info["cached"] and an.decision_state == "head"
    assert len(list(tmp_path.glob("*.npz"))) == 2
    res, info = anatomy_for(m, task, batch_size=6, directory=tmp_path, decision_state="residual")
    assert info["cached"] and res.decision_state == "residual"
    with pytest.raises(AnatomyMismatchError, match="decision state"):
        res.check(m.model, decision_state="head")
    # arrays stored before the option (no state in their metadata) are residual ones
    old = Anatomy(dict(res.arrays), {k: v for k, v in res.meta.items() if k != "decision_state"})
    assert old.decision_state == "residual"
    with pytest.raises(AnatomyMismatchError):
        old.check(m.model, decision_state="head")
    with pytest.raises(ValueError, match="decision_state"):
        collect_anatomy(m.model, m.tokenizer, reviews, decision_state="final")


def test_decision_model_under_both_protocols(tmp_path, monkeypatch):
    from minilib import assets
    from minilib.eval.decision import decision_accuracy, decision_task
    from minilib.studies.anatomy import decision_model
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=16, n_test=8, seed=0)
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path)          # heads and fine-tuned models go here
    same, probe, info = decision_model(m, task, "head-only", batch_size=8)
    assert same is m and info["protocol"] == "head-only"
    ft = {"method": "lora", "n_train": 16, "epochs": 1, "batch_size": 8, "lr": 1e-3, "init": "probe", "lora_r": 4}
    tuned, head, info = decision_model(m, task, "finetuned", batch_size=8, ft=ft, verbose=False)
    assert tuned.name != m.name and not info["cached"] and info["init"] == "probe" and info["lora_r"] == 4
    assert not torch.equal(head.weight, probe.weight)                  # trained on from the probe
    acc = decision_accuracy(tuned.model, tuned.tokenizer, head, task, return_correct=True)
    assert acc["correct"].shape == (8,) and acc["correct"].mean() == pytest.approx(acc["acc"])
    again = decision_model(m, task, "finetuned", batch_size=8, ft=ft, verbose=False)
    assert again[2]["cached"] and again[0].name == tuned.name
    with pytest.raises(ValueError, match="protocol"):
        decision_model(m, task, "zero-shot")
    with pytest.raises(ValueError, match="init"):
        decision_model(m, task, "finetuned", ft={**ft, "init": "warm"})


def test_decision_setup_is_the_notebooks_set_up_block(capsys):
    """``decision_setup(resolved)`` is what the six decision notebooks' set-up cell did inline."""
    from minilib.eval.decision import decision_task
    from minilib.studies.anatomy import decision_setup, ft_options
    p = {"model": "tiny-gpt2", "device": "cpu", "dataset": "sst2", "n_train": 16, "n_test": 12, "seed": 3,
         "template": "{text}\nok?", "ft_method": "lora", "ft_n_train": 8, "ft_epochs": 1, "ft_batch_size": 4,
         "ft_lr": 1e-3, "ft_init": "probe", "lora_r": 4, "unused": 1}
    m, task, tag, ft, majority = decision_setup(p)
    ref = decision_task("sst2", 16, 12, 3, template="{text}\nok?")
    assert task.texts("test") == ref.texts("test") and list(task.train.labels) == list(ref.train.labels)
    assert ft == ft_options("lora", 8, 1, 4, 1e-3, "probe", 4)
    assert majority == float(max(ref.test.labels.mean(), 1 - ref.test.labels.mean())) and tag == "tiny-gpt2"
    assert m.adapter.family and "M params;" in capsys.readouterr().out
