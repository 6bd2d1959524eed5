"""Vocabulary pruning: mask -> remove rows -> remapped tokenizer; logits kept, round trips, mismatches."""

import json

import pytest
import torch

from minilib.data import CorpusError
from minilib.eval import lm_nll, perplexity
from minilib.models import (PlanMismatchError, RemappedTokenizer, adapter_for, ffn_widths, keep_vocab_rows, load,
                            load_model, make_vocab_map, save_model, token_counts)
from minilib.prune import mask_threshold, mask_vocab, score_neurons_l1
from minilib.studies.contextual import collect_l1_stats as collect_neuron_stats
from minilib.studies.contextual import prune_neurons, prune_vocabulary


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
    assert rep.after["vocab"] < 400 and rep.params_after < rep.params_before / 3
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
    back = load_model(tmp_path / "m")
    m2, t2 = back.model, back.tokenizer
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
    keep = ~mask_vocab(token_counts(ids.flip(0)[:50].repeat(40), 50257), tok2)
    keep[torch.nonzero(~keep).flatten()[: len(rtok) - int(keep.sum())]] = True
    keep_vocab_rows(other, make_vocab_map(keep, tok2))
    with pytest.raises(PlanMismatchError):
        load_remapped_tokenizer(tmp_path / "m", other)


def test_vocab_counts_too_small():
    model, tok, _ = load("tiny-gpt2")
    with pytest.raises(CorpusError, match="token counts cover 10 tokens"):
        prune_vocabulary(model, tok, torch.arange(10))

