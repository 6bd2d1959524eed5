"""A pruned model stays pruned through fine-tuning (``minilib.train.masking``): language-model
recovery (full and LoRA) and the decision classifier (full and LoRA) on every tiny family, after
SparseGPT 50% and Wanda 2:4.  Weights are read independently of the code under test: every linear
of every block (what ``prune_model`` prunes), through ``weight_oi``."""

import copy
import functools

import numpy as np
import pytest
import torch

from minilib.models import TINY, TINY_DECODERS, load
from minilib.models.linear import weight_oi
from minilib.prune import prune_model
from minilib.train import (SparsityLostError, SparsityMasks, finetune, finetune_classifier, finetuned_classifier,
                           lora_targets)
from minilib.train.masking import AUTO_MIN_SPARSITY

TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 8
PRUNES = {"sparsegpt-50%": dict(method="sparsegpt", sparsity=0.5), "wanda-2:4": dict(method="wanda", nm=(2, 4))}
LM = dict(seqlen=16, batch_size=2, max_steps=2, eval_every=2, dev_windows=1, verbose=False)
DECODERS, FAMILIES = TINY_DECODERS, TINY   # as tests/conftest.py


def _ids(tok):
    return torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])


def _weights(model, ad):
    """``{(block, name): W [out, in]}`` for every linear of every block (copies)."""
    return {(i, n): weight_oi(l).detach().clone() for i, b in enumerate(ad.blocks(model))
            for n, l in ad.linear_layers(b).items()}


def _prune(m, ad, spec):
    calib = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))
    prune_model(m, calib=calib, device="cpu", **spec)
    w = _weights(m, ad)
    for k, x in w.items():   # the pruning itself worked: 50% of every layer
        assert (x == 0).float().mean() == pytest.approx(0.5, abs=0.02), k
    return w


@functools.lru_cache(maxsize=None)
def _pruned_once(name, prune):
    loaded = load(name)
    return loaded, _prune(loaded.model, loaded.adapter, PRUNES[prune])


def pruned(name, prune):
    """A fresh copy of tiny ``name`` pruned by ``prune`` (each pair pruned once per session), and its
    block weights right after pruning."""
    loaded, before = _pruned_once(name, prune)
    return copy.deepcopy(loaded.model), loaded.tokenizer, loaded.adapter, before


def _check(before, after, spec, reported: dict):
    """Every pruned weight exactly zero, 2:4 in every group of 4 inputs, live weights moved, the
    report equal to what the weights say."""
    zeros_before = sum(int((w == 0).sum()) for w in before.values())
    params = sum(w.numel() for w in before.values())
    for k, w0 in before.items():
        w1, pruned = after[k], w0 == 0
        assert (w1[pruned] == 0).all(), f"{k}: {int((w1[pruned] != 0).sum())} pruned weights moved"
        assert (w1[~pruned] != w0[~pruned]).any(), f"{k}: no live weight changed (training was a no-op?)"
        if spec.get("nm"):
            n, m = spec["nm"]
            groups = (w1 == 0).view(w1.shape[0], -1, m).sum(-1)
            assert (groups >= n).all(), f"{k}: a group of {m} inputs has fewer than {n} zeros"
    zeros_after = sum(int((w == 0).sum()) for w in after.values())
    assert reported["sparsity_before"] == zeros_before / params == pytest.approx(0.5, abs=0.01)
    assert reported["sparsity_after"] == zeros_after / params
    assert zeros_after >= zeros_before
    s = reported["sparsity"]
    assert s["enforced"] and s["layers"] == len(before) and s["params"] == params
    assert s["pruned"] == s["kept"] == zeros_before and s["lost"] == 0


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("prune", list(PRUNES))
@pytest.mark.parametrize("name", DECODERS)
def test_lm_finetuning_keeps_pruned_weights_zero(name, prune, method):
    m, tok, ad, before = pruned(name, prune)
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    ids = _ids(tok)
    res = finetune(m, ids[:256], ids[:64], lr=1e-3 if method == "full" else 1e-2, method=method, **LM)
    assert res.steps == 2 and res.method == method
    _check(before, _weights(m, ad), PRUNES[prune], vars(res))
    assert not any("lora" in n for n, _ in m.named_modules()), "the adapter was not merged"
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert np.isfinite(res.final_dev_ppl)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("prune", list(PRUNES))
@pytest.mark.parametrize("name", FAMILIES)
def test_classifier_finetuning_keeps_pruned_weights_zero(name, prune, method, toy_sentiment):
    m, tok, ad, before = pruned(name, prune)
    texts, labels = toy_sentiment(8)
    model, _, info = finetune_classifier(m, tok, texts, labels, method=method, batch_size=4, lr=1e-3 if method == "full"
                                         else 1e-2, warmup=0.0, verbose=False)
    assert info["steps"] == 2
    assert all(torch.equal(before[k], w) for k, w in _weights(m, ad).items()), "the caller's model changed"
    _check(before, _weights(model, ad), PRUNES[prune], info)


@pytest.mark.parametrize("how", ["lm-full", "lm-lora", "classifier-full", "classifier-lora"])
def test_without_masks_the_zeros_are_lost_and_reported(how, toy_sentiment):
    """The mask-less path (``keep_sparsity=False``, the behaviour before the masks) loses the zeros:
    what the masks prevent, and the report shows it."""
    m, tok, ad, before = pruned("tiny-llama", "sparsegpt-50%")
    kind, method = how.split("-")
    if kind == "lm":
        ids = _ids(tok)
        rep = vars(finetune(m, ids[:256], ids[:64], lr=1e-3, method=method, keep_sparsity=False, **LM))
        model = m
    else:
        texts, labels = toy_sentiment(8)
        model, _, rep = finetune_classifier(m, tok, texts, labels, method=method, batch_size=4, lr=1e-3, warmup=0.0,
                                            keep_sparsity=False, verbose=False)
    after = _weights(model, ad)
    lost = sum(int((after[k][w == 0] != 0).sum()) for k, w in before.items())
    n_pruned = sum(int((w == 0).sum()) for w in before.values())
    assert lost > 0.9 * n_pruned, (lost, n_pruned)
    s = rep["sparsity"]
    assert not s["enforced"] and s["pruned"] == n_pruned and s["lost"] == lost
    assert rep["sparsity_before"] == pytest.approx(0.5, abs=0.01) and rep["sparsity_after"] < 0.05


def test_auto_leaves_a_dense_models_few_zeros_free_and_true_keeps_them():
    m, tok, ad = load("tiny-llama")
    ids = _ids(tok)
    assert all(int((w == 0).sum()) == 0 for w in _weights(m, ad).values())   # random init: no exact zeros
    layer = ad.blocks(m)[0].mlp.up_proj
    for keep in ("auto", True):
        with torch.no_grad():
            weight_oi(layer)[0, :3] = 0        # three accidental zeros: 3 / 8192 of the layer
        res = finetune(m, ids[:256], ids[:64], lr=1e-3, keep_sparsity=keep, **LM)
        w = weight_oi(layer)[0, :3]
        if keep == "auto":
            assert res.sparsity["layers"] == 0 and res.sparsity["free_zeros"] == 3 and res.sparsity["free_layers"] == 1
            assert (w != 0).all(), "auto froze a dense model's accidental zeros"
        else:
            assert res.sparsity["layers"] == 1 and res.sparsity["pruned"] == res.sparsity["kept"] == 3
            assert (w == 0).all()


def test_auto_threshold_per_layer():
    m, _, ad = load("tiny-llama")
    blocks = ad.blocks(m)
    a, b = blocks[0].mlp.up_proj, blocks[1].mlp.up_proj          # 128 x 64 = 8192 weights each
    n_at = int(np.ceil(AUTO_MIN_SPARSITY * 8192))
    with torch.no_grad():
        weight_oi(a).view(-1)[:n_at] = 0
        weight_oi(b).view(-1)[:n_at - 1] = 0
    masks = SparsityMasks.capture(m)
    assert list(masks.masks) == ["0.mlp.up_proj"] and masks.free == {"1.mlp.up_proj": n_at - 1}
    assert int(masks.masks["0.mlp.up_proj"].sum()) == n_at and masks.enforced
    assert set(SparsityMasks.capture(m, keep_sparsity=True).masks) == {"0.mlp.up_proj", "1.mlp.up_proj"}
    off = SparsityMasks.capture(m, keep_sparsity=False)
    assert list(off.masks) == ["0.mlp.up_proj"] and not off.enforced


def test_masks_follow_the_conv1d_orientation():
    """GPT-2 stores ``[in, out]``: masking the gradient and re-applying the mask act on the same
    ``[out, in]`` entries (a square layer, so a transposed mask would go unnoticed by shapes)."""
    m, tok, ad = load("tiny-gpt2")
    layer = ad.blocks(m)[0].attn.c_proj                          # Conv1D 64 x 64
    with torch.no_grad():
        weight_oi(layer)[:10] = 0                                # the first 10 output rows
    masks = SparsityMasks.capture(m)
    assert masks.masks["0.attn.c_proj"][:10].all() and not masks.masks["0.attn.c_proj"][10:].any()
    x = _ids(tok)[:32].view(1, 32)
    m.train()
    m(input_ids=x, labels=x).loss.backward()
    masks.mask_grads(m)
    with torch.no_grad():
        layer.weight -= 10 * layer.weight.grad                   # a plain SGD step on the masked gradient
    w = weight_oi(layer)
    assert (w[:10] == 0).all() and (w[10:] != 0).all()
    with torch.no_grad():
        layer.weight += 1.0
    masks.apply(m)
    assert (weight_oi(layer)[:10] == 0).all() and (weight_oi(layer)[10:, :] != 0).any()


def test_a_lost_zero_raises(monkeypatch):
    m, tok, ad, _ = pruned("tiny-opt", "wanda-2:4")
    masks = SparsityMasks.capture(m)
    masks.check(m)
    with torch.no_grad():
        w = weight_oi(ad.blocks(m)[1].fc2)
        w[w == 0] = 0.5
    with pytest.raises(SparsityLostError, match=r"1\.fc2"):
        masks.check(m)
    # and through finetune: with the masking disabled the check after training fires
    m, tok, ad, _ = pruned("tiny-opt", "wanda-2:4")
    monkeypatch.setattr(SparsityMasks, "apply", lambda self, model: None)
    monkeypatch.setattr(SparsityMasks, "mask_grads", lambda self, model: None)
    ids = _ids(tok)
    with pytest.raises(SparsityLostError, match="no longer zero after fine-tuning"):
        finetune(m, ids[:256], ids[:64], lr=1e-3, **LM)


def test_lora_recovery_lowers_the_loss_and_keeps_the_zeros():
    m, tok, ad, before = pruned("tiny-llama", "sparsegpt-50%")
    ids = _ids(tok)
    res = finetune(m, ids[:256], ids[:256], method="lora", lora_r=8, lr=1e-2, seqlen=32, batch_size=4, max_epochs=20,
                   max_steps=16, eval_every=8, dev_windows=4, verbose=False)
    dev = [h["dev_ppl"] for h in res.history if h["dev_ppl"] is not None]
    # measured: 50591 -> 23291 with the adapters, 29900 merged with the zeros kept (the masked merge
    # drops the update at the pruned half of the weights)
    assert res.steps == 16 and res.best_dev_ppl < 0.6 * res.start_dev_ppl, dev
    assert res.final_dev_ppl != res.best_dev_ppl, "the merged model was not measured apart"
    assert res.final_dev_ppl < 0.75 * res.start_dev_ppl, (dev, res.final_dev_ppl)
    after = _weights(m, ad)
    assert all((after[k][w == 0] == 0).all() for k, w in before.items())
    assert res.sparsity_after == res.sparsity_before


def test_lora_failure_leaves_the_model_as_given():
    m, tok, ad = load("tiny-llama")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    ids = _ids(tok)

    def broken(model):
        raise RuntimeError("dev measure failed")
    with pytest.raises(RuntimeError, match="dev measure failed"):
        finetune(m, ids[:256], ids[:64], method="lora", dev_eval=broken, **LM)
    assert not any("lora" in n for n, _ in m.named_modules())
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("kw,match", [({"max_steps": -5}, "max_steps"), ({"max_steps": 0}, "max_steps"),
                                       ({"max_steps": 2.5}, "max_steps"), ({"batch_size": 0}, "batch_size"),
                                       ({"eval_every": 0}, "eval_every"), ({"lr": 0.0}, "lr"),
                                       ({"lr": float("nan")}, "lr"), ({"max_epochs": 0}, "max_epochs"),
                                       ({"seqlen": 1}, "seqlen"), ({"warmup_steps": -1}, "warmup_steps"),
                                       ({"method": "qlora"}, "method"),
                                       ({"method": "lora", "lora_r": 0}, "lora_r"),
                                       ({"method": "lora", "lora_alpha": -1}, "lora_alpha"),
                                       ({"method": "lora", "lora_dropout": 1.5}, "lora_dropout"),
                                       ({"keep_sparsity": "yes"}, "keep_sparsity"),
                                       ({"keep_sparsity": 1}, "keep_sparsity")])
def test_bad_finetune_arguments_fail_before_any_work(kw, match, capsys):
    m, tok, _ = load("tiny-llama")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ids = _ids(tok)
    args = {**LM, "verbose": True, **kw}
    with pytest.raises(ValueError, match=match):
        finetune(m, ids[:256], ids[:64], **args)
    assert capsys.readouterr().out == ""                          # not even the first dev evaluation
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_classifier_keep_sparsity_is_validated(toy_sentiment):
    m, tok, _ = load("tiny-llama")
    with pytest.raises(ValueError, match="keep_sparsity"):
        finetune_classifier(m, tok, *toy_sentiment(8), keep_sparsity="always", verbose=False)


def test_classifier_cache_key_says_the_zeros_are_kept(tmp_path):
    from minilib.eval.decision import decision_task
    loaded = load("tiny-llama")
    _prune(loaded.model, loaded.adapter, PRUNES["wanda-2:4"])
    task = decision_task("sst2", n_train=8, n_test=4, seed=0)
    kw = dict(method="lora", batch_size=4, directory=tmp_path, verbose=False)
    ft, _, info = finetuned_classifier(loaded, task, **kw)
    assert not info["cached"] and info["sparsity_after"] == info["sparsity_before"] == 0.5
    ft2, _, info2 = finetuned_classifier(loaded, task, **kw)
    assert info2["cached"] and info2["key"] == info["key"] and info2["sparsity"]["kept"] == info["sparsity"]["pruned"]
    masks = SparsityMasks.capture(loaded.model)
    assert masks.lost(ft2.model) == {} and masks.report(ft2.model)["sparsity"] == 0.5
    _, _, off = finetuned_classifier(loaded, task, keep_sparsity=False, **kw)   # the mask-less training: its own key
    assert off["key"] != info["key"] and off["sparsity_after"] < 0.5
    assert lora_targets(loaded.model) == info["lora_targets"]
