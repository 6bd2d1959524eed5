"""Tokenizer-independent measures: chunks of the same text, bits per byte, paired intervals."""

import math

import numpy as np
import pytest
import torch

from minilib.eval import lm_nll
from minilib.eval.bytes import (TextMismatchError, agree_perplexity, bits_per_byte, bpb_difference, context_token,
                                perplexity_per_base_token, score_text, text_bytes, text_chunks)
from minilib.models import load
from minilib.prune import mask_vocab, remove_vocab
from minilib.models.vocab import token_counts

TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun.\n"
        "One day the cat saw a big dog. The dog was kind and they played together all day.\n") * 6
ODD = "Quantum chromodynamics: naïve café, 日本語, emoji 😀.\nThe cat saw a dog.\n"


@pytest.fixture(scope="module")
def llama():
    m = load("tiny-llama")
    return m.model, m.tokenizer


def test_chunks_cover_the_text_and_respect_the_byte_budget():
    text = TEXT + ODD * 3 + "x" * 300  # a long run without a newline or space is cut at a character boundary
    ch = text_chunks(text, 64)
    assert "".join(ch) == text
    assert all(len(c.encode()) <= 64 for c in ch)
    assert all(c.endswith(("\n", " ")) for c in ch[:5])  # cut after a line end or a space where one fits
    multi = text_chunks("日本語" * 40, 16)  # 3-byte characters: never split inside one
    assert "".join(multi) == "日本語" * 40 and all(len(c.encode()) <= 16 for c in multi)
    assert text_chunks(text, 64, max_chunks=3) == ch[:3]
    assert list(text_bytes(ch[:2])) == [len(c.encode()) for c in ch[:2]]


@pytest.mark.parametrize("kw, match", [({"chunk_bytes": 8}, "chunk_bytes"), ({"max_chunks": 0}, "max_chunks"),
                                       ({"chunk_bytes": 64.0}, "chunk_bytes")])
def test_chunks_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        text_chunks(TEXT, **kw)
    with pytest.raises(ValueError, match="no chunks"):
        text_chunks("   \n ")


def test_score_is_the_nll_of_every_token_once(llama):
    model, tok = llama
    ch = text_chunks(TEXT, 200, 4)
    s = score_text(model, tok, ch, seqlen=256)
    ctx = context_token(tok)
    for c, nll in zip(ch, s.nll):  # each chunk fits one window: the NLL of [ctx] + ids, every token once
        ids = torch.tensor([[ctx] + tok.encode(c, add_special_tokens=False)])
        with torch.no_grad():
            ref = lm_nll(model, ids, reduction="sum").item()
        assert len(nll) == ids.shape[1] - 1
        assert nll.sum() == pytest.approx(ref, rel=1e-5)
    assert s.bpb == pytest.approx(s.total_nll / math.log(2) / sum(len(c.encode()) for c in ch))
    # a short window cuts a chunk into pieces overlapping by one token: still every token exactly once
    short = score_text(model, tok, ch, seqlen=16)
    assert [len(n) for n in short.nll] == [len(n) for n in s.nll] and np.all(short.tokens == s.tokens)
    assert short.total_nll > 0 and np.isfinite(short.total_nll)


def test_score_rejects_text_the_tokenizer_does_not_round_trip():
    m = load("tiny-bert")  # WordPiece lower-cases and re-spaces: not the same text
    with pytest.raises(TextMismatchError, match="round-trip chunk 0"):
        score_text(m.model, m.tokenizer, ["Hello, World!"], seqlen=32, context_id=m.tokenizer.cls_token_id)
    with pytest.raises(ValueError, match="non-empty list"):
        score_text(m.model, m.tokenizer, [], seqlen=32)


def test_vocab_pruned_model_scored_on_the_same_text(llama):
    model, tok = llama
    pruned = load("tiny-llama").model
    pruned.load_state_dict(model.state_dict())
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    rtok, _ = remove_vocab(pruned, tok, mask_vocab(token_counts(ids.repeat(20), len(tok)), tok))
    ch = text_chunks(TEXT + ODD, 128)
    dense, small = score_text(model, tok, ch, seqlen=64), score_text(pruned, rtok, ch, seqlen=64)
    assert np.array_equal(dense.bytes, small.bytes)
    assert small.fallback_rate > 0 and dense.fallback_rate == 0  # the odd words are spelt in bytes
    assert small.tokens.sum() > dense.tokens.sum()
    assert all(len(a) == len(b) for a, b in zip(dense.nll, small.nll))  # lined up per base token
    # where both tokenize alike, the pruned softmax runs over a subset: a kept token can only gain probability
    ag = agree_perplexity(small, dense, n_resamples=200)
    assert ag["ratio"].estimate <= 1 + 1e-6 and 0.5 < ag["share"] < 1
    d = bpb_difference(small, dense, n_resamples=200)
    assert d.estimate == pytest.approx(small.bpb - dense.bpb)
    assert d.low <= d.estimate <= d.high
    self_d = bpb_difference(dense, dense, n_resamples=200)
    assert self_d == (0.0, 0.0, 0.0)
    iv = bits_per_byte(dense, n_resamples=200)
    assert iv.low < iv.estimate < iv.high and iv.estimate == pytest.approx(dense.bpb)
    ppl = perplexity_per_base_token(dense, n_resamples=200)  # the dense model: its own token perplexity
    n_tokens = sum(len(n) for n in dense.nll)
    assert ppl.estimate == pytest.approx(math.exp(dense.total_nll / n_tokens))
    with pytest.raises(TextMismatchError, match="same text"):
        bpb_difference(dense, score_text(model, tok, ch[:-1], seqlen=64))
