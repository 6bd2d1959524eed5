"""Anatomy maths on tiny models against a hand computation; hooks; decision task; bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minilib.studies.anatomy import Anatomy, AnatomyMismatchError, collect_anatomy
from minilib.hooks import count_hooks, forward_hooks, forward_pre_hooks
from minilib.models.linear import weight_oi
from minilib.models.surgery import remove_ffn_neurons

TEXTS = ["the movie was great fun", "a dull, lifeless film", "what a waste of time and money",
         "surprisingly moving", "I loved every minute of it, really", "no"]


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


def test_anatomy_matches_hand_computation(tiny, no_hook_leak):
    an = collect_anatomy(tiny.model, tiny.tokenizer, TEXTS, batch_size=4)
    cos, proj, blk, d = _hand(tiny, TEXTS)
    np.testing.assert_allclose(an["neuron_cos"], cos.numpy(), atol=1e-4)
    np.testing.assert_allclose(an["neuron_abs_proj"], proj.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(an["layer_hidden_cos"][:, -1], 1.0, atol=1e-5)   # final layer vs itself
    # texts are processed in length order; arrays come back in input order
    first = F.cosine_similarity(blk[0], d, dim=-1).numpy()
    np.testing.assert_allclose(an["layer_hidden_cos"][:, 0], first, atol=1e-5)
    assert an["neuron_cos"].shape == (2, 128) and an["layer_ffn_cos"].shape == (len(TEXTS), 2)
    assert (an["act_std"] >= 0).all() and (an["neuron_abs_cos"] >= np.abs(an["neuron_cos"]) - 1e-6).all()
    no_hook_leak(tiny.model)


def test_hooks_removed_when_the_pass_raises(tiny_decoder):
    with pytest.raises(Exception):
        collect_anatomy(tiny_decoder.model, tiny_decoder.tokenizer, ["fine text", 12345], batch_size=1)
    assert count_hooks(tiny_decoder.model) == 0


def test_anatomy_save_load_and_mismatch(tmp_path):
    from minilib.models import load
    a, b = load("tiny-gpt2"), load("tiny-llama")
    an = collect_anatomy(a.model, a.tokenizer, TEXTS[:3], meta={"model": "tiny-gpt2"})
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


def test_unsupported_family_is_a_clear_error():
    from types import SimpleNamespace

    from minilib.models.adapters import UnsupportedModelError
    from minilib.prune import score_neurons_norm
    fake = torch.nn.Linear(2, 2)
    fake.config = SimpleNamespace(model_type="mamba")
    with pytest.raises(UnsupportedModelError, match="mamba"):
        score_neurons_norm(fake)
    with pytest.raises(UnsupportedModelError):
        collect_anatomy(fake, None, TEXTS)

