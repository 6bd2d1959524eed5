"""Contextual pruning (Mini-GPTs) on tiny models: L1 statistics, thresholds, physical removal."""


import pytest
import torch

from minilib.data import CorpusError
from minilib.eval import lm_nll, parameters_by_type
from minilib.hooks import count_hooks
from minilib.models import (adapter_for, ffn_widths, load,
                            load_model, save_model)
from minilib.prune import SparsityError, check_threshold, mask_threshold, score_neurons_l1
from minilib.studies.contextual import collect_l1_stats as collect_neuron_stats
from minilib.studies.contextual import prune_neurons


TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 16


def mask_ffn_neurons(model, st, eps, criterion="any"):
    return mask_threshold(score_neurons_l1(model, st, criterion), eps)


def lm_loss(model, x):
    return lm_nll(model, x)


def save_pruned(model, tok, path, extra=None):
    return save_model(model, tok, path, extra=extra)


def load_remapped_tokenizer(path, model):
    tok = load_model(path).tokenizer
    tok.check_model(model)
    return tok


def windows(tok, n=8, seqlen=32):
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    return ids[: n * seqlen].view(n, seqlen)


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def zero_neurons(model, layer, idx):
    """Make FFN neurons ``idx`` of block ``layer`` output exactly zero (zero their up/gate rows)."""
    ffn = adapter_for(model).ffn(adapter_for(model).blocks(model)[layer])
    from minilib.models.linear import weight_oi
    with torch.no_grad():
        for part in ("up", "gate"):
            lin = getattr(ffn, part)
            if lin is not None:
                weight_oi(lin)[idx] = 0
                if lin.bias is not None:
                    lin.bias.data[idx] = 0


def test_stats_shapes_and_no_hook_leak(tiny_decoder):
    model, tok, ad = tiny_decoder
    st = collect_neuron_stats(model, windows(tok))
    assert count_hooks(model) == 0
    assert [s.numel() for s in st.ffn] == ffn_widths(model)
    for s in st.ffn + list(st.linear.values()):
        assert s.min() >= 0 and abs(float(s.max()) - 1.0) < 1e-9  # normalized to [0, 1]
    n_lin = sum(len(ad.linear_layers(b)) for b in ad.blocks(model))
    assert len(st.linear) == n_lin


def test_stats_hooks_removed_when_forward_raises(tiny_decoder):
    model, tok, _ = tiny_decoder
    bad = torch.full((1, 8), 10 ** 7)  # out-of-vocabulary id: the embedding raises
    with pytest.raises(Exception):
        collect_neuron_stats(model, bad.repeat(64, 1))
    assert count_hooks(model) == 0


def test_corpus_too_small_for_stats():
    model, tok, _ = load("tiny-llama")
    with pytest.raises(CorpusError, match="calibration has 8 tokens"):
        collect_neuron_stats(model, windows(tok)[:1, :8])


def test_removing_zero_neurons_keeps_logits(tiny_decoder):
    model, tok, ad = tiny_decoder
    idx = torch.tensor([0, 3, 7, 20, 64])
    zero_neurons(model, 0, idx)
    zero_neurons(model, 1, idx[:2])
    x = windows(tok)
    before = logits(model, x)
    st = collect_neuron_stats(model, x)
    # the zeroed neurons have norm 0 (GELU/SiLU/ReLU of 0 is 0); keep every other neuron with ε tiny
    assert torch.all(st.ffn[0][idx] == 0)
    rep = prune_neurons(model, st, 1e-12, verbose=False)
    assert rep.removed_per_layer == [5, 2]
    assert ffn_widths(model) == [128 - 5, 128 - 2]
    sb, sa = rep.before["sizes"], rep.after["sizes"]
    assert sa["ffn"] < sb["ffn"] and sb["embedding"] == sa["embedding"]
    torch.testing.assert_close(logits(model, x), before, atol=1e-5, rtol=1e-5)


def test_threshold_selects_exactly_under_eps():
    model, tok, ad = load("tiny-llama")
    st = collect_neuron_stats(model, windows(tok))
    for eps in (0.0, 0.05, 0.2, 0.5):
        masks = mask_ffn_neurons(model, st, eps, criterion="post_act")
        for m, s in zip(masks, st.ffn):
            assert torch.equal(m, s < eps)
        masks = mask_ffn_neurons(model, st, eps, criterion="any")
        for i, (m, s) in enumerate(zip(masks, st.ffn)):
            exp = (s < eps) | (st.linear[f"{i}.mlp.up_proj"] < eps) | (st.linear[f"{i}.mlp.gate_proj"] < eps)
            assert torch.equal(m, exp)
    rep = prune_neurons(model, st, 0.5, verbose=False)
    exp = [int(m.sum()) for m in mask_ffn_neurons(load("tiny-llama").model, st, 0.5)]
    assert rep.removed_per_layer == exp and sum(exp) > 0  # what was asked is what was done
    assert rep.table().set_index("type").loc["ffn", "after"] == parameters_by_type(model)["ffn"]


def test_bad_thresholds():
    model, tok, _ = load("tiny-gpt2")
    st = collect_neuron_stats(model, windows(tok))
    for bad in (-1e-3, float("nan"), float("inf"), "0.1", None):
        with pytest.raises(SparsityError, match="number >= 0"):
            check_threshold(bad)
    with pytest.raises(SparsityError, match="number >= 0"):
        mask_ffn_neurons(model, st, -0.1)
    with pytest.raises(SparsityError, match="remove every FFN neuron of layer 0"):
        mask_ffn_neurons(model, st, 1.5)
    other = load("tiny-llama").model  # statistics from another model: a clear error, not a KeyError
    with pytest.raises(ValueError, match="another model"):
        prune_neurons(other, st, 0.1, verbose=False)


def test_attention_mask_mode_zeroes_rows_only():
    model, tok, ad = load("tiny-opt")
    st = collect_neuron_stats(model, windows(tok))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    rep = prune_neurons(model, st, 0.3, attention="mask", verbose=False)
    assert rep.notes["rows_masked"] > 0 and rep.after["sizes"]["nonzeros"] < rep.before["sizes"]["nonzeros"]
    att = {n: s for n, s in shapes.items() if "self_attn" in n}
    assert all(dict(model.named_parameters())[n].shape == s for n, s in att.items())

