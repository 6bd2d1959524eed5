"""Contextual pruning on tiny models (unit) and on the embedded decoder (integration)."""

import json

import pytest
import torch

from minilib.contextual import (NeuronStats, RemappedTokenizer, check_eps, collect_neuron_stats, finetune,
                                load_pruned, load_remapped_tokenizer, lm_loss, mask_ffn_neurons, mask_vocab,
                                make_vocab_map, prune_neurons, prune_vocabulary, save_pruned, size_by_type,
                                token_counts)
from minilib.data import CorpusError, SchemaError, corpus_splits, load_mcq
from minilib.eval import perplexity
from minilib.hooks import count_hooks
from minilib.models import PlanMismatchError, adapter_for, ffn_widths, load

TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 16


def windows(tok, n=8, seqlen=32):
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    return ids[: n * seqlen].view(n, seqlen)


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


# --- statistics ---------------------------------------------------------------------------------

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


# --- thresholds and physical removal ------------------------------------------------------------

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
    assert rep.ffn_removed == [5, 2]
    assert ffn_widths(model) == [128 - 5, 128 - 2]
    assert rep.after["ffn"] < rep.before["ffn"] and rep.before["embedding"] == rep.after["embedding"]
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
    assert rep.ffn_removed == exp and sum(exp) > 0  # what was asked is what was done
    assert rep.table().set_index("type").loc["ffn", "after"] == size_by_type(model)["ffn"]


def test_bad_thresholds():
    model, tok, _ = load("tiny-gpt2")
    st = collect_neuron_stats(model, windows(tok))
    with pytest.raises(ValueError, match="must be >= 0"):
        check_eps(-1e-3)
    with pytest.raises(ValueError, match="must be >= 0"):
        mask_ffn_neurons(model, st, -0.1)
    with pytest.raises(ValueError, match="remove every FFN neuron of block 0"):
        mask_ffn_neurons(model, st, 1.5)


def test_attention_mask_mode_zeroes_rows_only():
    model, tok, ad = load("tiny-opt")
    st = collect_neuron_stats(model, windows(tok))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    rep = prune_neurons(model, st, 0.3, attention="mask", verbose=False)
    assert rep.rows_masked > 0 and rep.nonzeros_after < rep.nonzeros_before
    att = {n: s for n, s in shapes.items() if "self_attn" in n}
    assert all(dict(model.named_parameters())[n].shape == s for n, s in att.items())


# --- vocabulary ---------------------------------------------------------------------------------

@pytest.fixture
def vocab_pruned():
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    dense = load("tiny-llama").model
    dense.load_state_dict(model.state_dict())
    rtok, rep = prune_vocabulary(model, tok, ids.repeat(10), verbose=False)
    return model, dense, tok, rtok, rep, ids


def test_vocab_pruning_shrinks_and_keeps_logits(vocab_pruned):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    assert rep["vocab_after"] < 400 and rep["params_after"] < rep["params_before"] / 3
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    x_old = ids[:64][None]
    x_new = torch.tensor(rtok.map_ids(ids[:64].tolist()))[None]
    assert rtok.fallback_count == 0
    full = logits(dense, x_old)
    kept = torch.tensor(rtok.vmap.kept)
    torch.testing.assert_close(logits(model, x_new), full[..., kept], atol=1e-5, rtol=1e-5)
    # renormalising over fewer tokens can only raise the probability of a kept token
    assert perplexity(model, x_new) <= perplexity(dense, x_old) + 1e-6
    assert model.get_output_embeddings().weight.shape[0] == len(rtok)  # can only emit kept tokens


def test_remapped_tokenizer_round_trip_and_fallback(vocab_pruned):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    text = "Once upon a time there was a little cat. The cat saw a big dog."
    new = rtok(text, add_special_tokens=False)["input_ids"]
    assert rtok.decode(new) == text
    assert rtok.fallback_count == 0
    rtok.reset_counts()
    odd = "Quantum chromodynamics"  # words never seen: spelt in byte tokens, text preserved
    new = rtok.encode(odd, add_special_tokens=False)
    assert rtok.fallback_count > 0 and rtok.decode(new) == odd
    assert max(new) < len(rtok)
    assert rtok.eos_token_id == rtok.vmap.old_to_new[tok.eos_token_id]


def test_unk_fallback_is_lossy_but_counted():
    model, tok, _ = load("tiny-bert")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    rtok, rep = prune_vocabulary(model, tok, ids.repeat(20), verbose=False)
    assert rtok.vmap.fallback == "unk"
    new = rtok.encode("the cat saw a zebra", add_special_tokens=False)
    assert rtok.fallback_count == 1 and rtok.vmap.fallback_id in new


def test_save_load_round_trip(vocab_pruned, tmp_path):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    st = collect_neuron_stats(model, torch.tensor(rtok.map_ids(ids[:256].tolist())).view(8, 32))
    prune_neurons(model, st, 0.3, verbose=False)
    x = torch.tensor(rtok.map_ids(ids[:64].tolist()))[None]
    save_pruned(model, rtok, tmp_path / "m", extra={"eps": 0.3})
    m2, t2 = load_pruned(tmp_path / "m")
    assert isinstance(t2, RemappedTokenizer) and t2.vmap.kept == rtok.vmap.kept
    assert ffn_widths(m2) == ffn_widths(model)
    torch.testing.assert_close(logits(m2, x), logits(model, x))
    assert json.loads((tmp_path / "m" / "minilib_plan.json").read_text())["extra"]["eps"] == 0.3


def test_tokenizer_with_wrong_model(vocab_pruned, tmp_path):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    save_pruned(model, rtok, tmp_path / "m")
    with pytest.raises(PlanMismatchError, match="does not belong to this model"):
        load_remapped_tokenizer(tmp_path / "m", dense)
    other, tok2, _ = load("tiny-llama")  # same size, another mapping
    keep = mask_vocab(token_counts(ids.flip(0)[:50].repeat(40), 50257), tok2)
    keep[torch.nonzero(~keep).flatten()[: len(rtok) - int(keep.sum())]] = True
    from minilib.contextual import apply_vocab_pruning
    apply_vocab_pruning(other, make_vocab_map(keep, tok2))
    with pytest.raises(PlanMismatchError):
        load_remapped_tokenizer(tmp_path / "m", other)


def test_vocab_counts_too_small():
    model, tok, _ = load("tiny-gpt2")
    with pytest.raises(CorpusError, match="token counts cover 10 tokens"):
        prune_vocabulary(model, tok, torch.arange(10))


# --- fine-tuning, data, bad MCQ -----------------------------------------------------------------

def test_finetune_lowers_training_loss():
    torch.manual_seed(0)
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    x = ids[: 4 * 32].view(4, 32)
    with torch.no_grad():
        before = float(lm_loss(model, x))
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=None, seqlen=32, batch_size=4, lr=3e-3,
                   max_epochs=20, max_steps=20, eval_every=10, verbose=False)
    with torch.no_grad():
        after = float(lm_loss(model, x))
    assert res.steps == 20 and after < before - 0.5
    assert res.best_dev_ppl == min(h["dev_ppl"] for h in res.history if h["dev_ppl"] is not None)


def test_finetune_stops_early_at_target_and_keeps_best():
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=1e9, seqlen=32, batch_size=4, verbose=False)
    assert res.steps == 0 and "before training" in res.stopped


def test_splits_disjoint_on_domain_corpus():
    _, tok, _ = load("tiny-llama")
    sp = corpus_splits(tok, "tiny")
    sp.assert_disjoint()
    spans = sorted(sp.ranges.values())
    assert [s[0] for s in spans[1:]] == [s[1] for s in spans[:-1]]  # contiguous, no gap, no overlap
    used = torch.zeros(len(sp.ids), dtype=torch.int)
    for a, b in sp.ranges.values():
        used[a:b] += 1
    assert int(used.max()) == 1
    assert set(sp.ranges) == {"calib", "train", "dev", "test"}


def test_bad_mcq_schema(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(SchemaError, match="answer 5 is not an index"):
        load_mcq(str(f))
    f.write_text(json.dumps({"question": "Q?", "options": ["a", "b"], "answer": 0}) + "\n")
    with pytest.raises(SchemaError, match="missing field"):
        load_mcq(str(f))
