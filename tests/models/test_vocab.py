"""Vocabulary pruning: mask -> remove rows -> remapped tokenizer; logits kept, round trips, mismatches."""

import json

import pytest
import torch

from minilib.calib import collect_l1_stats
from minilib.data import CorpusError
from minilib.eval import perplexity
from minilib.models import (PlanMismatchError, RemappedTokenizer, ffn_widths, keep_vocab_rows, load, load_model,
                            make_vocab_map, save_model, token_counts)
from minilib.models.tokenizers import bytes_to_unicode
from minilib.models.vocab import VocabError, byte_alphabet, special_ids
from minilib.prune import mask_vocab
from minilib.studies.contextual import prune_neurons, prune_vocabulary


@pytest.fixture
def vocab_pruned(tiny_text):
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(tiny_text, add_special_tokens=False)["input_ids"])
    dense = load("tiny-llama").model
    dense.load_state_dict(model.state_dict())
    rtok, rep = prune_vocabulary(model, tok, ids.repeat(10), verbose=False)
    return model, dense, tok, rtok, rep, ids


def test_vocab_pruning_shrinks_and_keeps_logits(vocab_pruned, logits):
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


HELD_OUT = ("Résumé of the naïve café owner: 日本語のテキスト, Ελληνικά, emoji 😀🚀, tabs\tand\r\nCRLF, "
            "math ∑∫√, code `for (i = 0; i < n; ++i) { x[i] ^= 0xFF; }`, <|endoftext|> as plain text.\n")


def test_round_trip_on_held_out_text_never_replaces(vocab_pruned):
    """Any text, including tokens never seen when the vocabulary was chosen, comes back exactly, and no
    token becomes the end-of-text (or any other) token."""
    model, dense, tok, rtok, rep, ids = vocab_pruned
    assert rtok.vmap.fallback == "bytes" and rtok.vmap.lossless
    rtok.reset_counts()
    base = tok.encode(HELD_OUT, add_special_tokens=False)
    new, spans = rtok.encode_spans(HELD_OUT)
    assert rtok.decode(new) == HELD_OUT and len(spans) == len(base) and sum(spans) == len(new)
    assert rtok.fallback_count > 0.5 * len(base)  # mostly unseen: spelt in bytes, never replaced
    eos = rtok.eos_token_id
    assert new.count(eos) == base.count(tok.eos_token_id)  # only where the base tokenizer put one
    for k in range(0, len(base), 7):  # each base token is kept as itself or spelt by its own bytes
        a = sum(spans[:k])
        assert rtok.decode(new[a:a + spans[k]]) == tok.decode(base[k:k + 1])


def test_bytes_fallback_needs_byte_tokens_kept_and_refused_without_them():
    m = load("tiny-bert")
    keep = torch.ones(len(m.tokenizer), dtype=torch.bool)
    with pytest.raises(VocabError, match="no byte tokens"):
        make_vocab_map(keep, m.tokenizer, fallback="bytes")
    tok = load("tiny-gpt2").tokenizer
    keep = torch.ones(len(tok), dtype=torch.bool)
    keep[tok.convert_tokens_to_ids("a")] = False  # a single-byte token pruned by hand
    with pytest.raises(VocabError, match="every byte token kept"):
        make_vocab_map(keep, tok)
    with pytest.raises(ValueError, match="fallback must be one of"):
        make_vocab_map(~keep, tok, fallback="drop")


def _byte_level_without(byte: int):
    """A byte-level BPE tokenizer whose vocabulary lacks the single-byte token ``byte`` but has a token
    that contains it (as SmolLM2 lacks 21 byte symbols)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    b2u = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        if b != byte:
            vocab[b2u[b]] = len(vocab)
    vocab[b2u[byte] + "a"] = len(vocab)
    vocab["<eos>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>"), vocab


def test_missing_byte_fails_loudly():
    tok, vocab = _byte_level_without(ord("z"))
    kind, ids = byte_alphabet(tok)
    assert kind == "byte-level" and len(ids) == 255 and ord("z") not in ids
    assert tok.decode(tok.encode("lazy")) == "lay"  # the base tokenizer itself drops the byte
    keep = torch.ones(len(vocab), dtype=torch.bool)
    keep[vocab["za"]] = False
    with pytest.raises(VocabError, match=r"'za'.*0x7A"):  # a pruned token that cannot be spelt: refused
        make_vocab_map(keep, tok)
    keep[:] = True
    rtok = RemappedTokenizer(tok, make_vocab_map(keep, tok))
    assert rtok.decode(rtok.encode("lay")) == "lay"
    with pytest.raises(VocabError, match=r"'z' \(U\+007A\) at character 2"):  # never silently dropped
        rtok.encode("lazy")


def test_sentencepiece_byte_fallback_round_trip():
    """SentencePiece BPE with <0xXX> byte tokens (Llama-2, Gemma): pruned pieces are spelt in them."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast
    sp = "\u2581"
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for t in [sp, "t", "h", "e", "c", "a", "th", "the", sp + "the", "ca", "cat", sp + "cat"]:
        vocab[t] = len(vocab)
    merges = [("t", "h"), ("th", "e"), (sp, "the"), ("c", "a"), ("ca", "t"), (sp, "cat")]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend(sp), normalizers.Replace(" ", sp)])
    tk.decoder = decoders.Sequence([decoders.Replace(sp, " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert byte_alphabet(tok)[0] == "byte-fallback"
    keep = torch.ones(len(vocab), dtype=torch.bool)
    keep[[vocab[sp + "the"], vocab[sp + "cat"]]] = False
    rtok = RemappedTokenizer(tok, make_vocab_map(keep, tok))
    for text in ("the cat sat", "a cat, the cat", "thé 😀"):
        new = rtok.encode(text, add_special_tokens=False)
        assert rtok.decode(new) == text
    assert rtok.fallback_count >= 4


def test_unk_fallback_is_lossy_but_counted(tiny_text):
    model, tok, _ = load("tiny-bert")
    ids = torch.tensor(tok(tiny_text, add_special_tokens=False)["input_ids"])
    rtok, rep = prune_vocabulary(model, tok, ids.repeat(20), verbose=False)
    assert rtok.vmap.fallback == "unk"
    new = rtok.encode("the cat saw a zebra", add_special_tokens=False)
    assert rtok.fallback_count == 1 and rtok.vmap.fallback_id in new


def test_save_load_round_trip(vocab_pruned, tmp_path, logits):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    st = collect_l1_stats(model, torch.tensor(rtok.map_ids(ids[:256].tolist())).view(8, 32), scale="median")
    prune_neurons(model, st, 0.9, verbose=False)
    x = torch.tensor(rtok.map_ids(ids[:64].tolist()))[None]
    save_model(model, rtok, tmp_path / "m", extra={"eps": 0.3})
    back = load_model(tmp_path / "m")
    m2, t2 = back.model, back.tokenizer
    assert isinstance(t2, RemappedTokenizer) and t2.vmap.kept == rtok.vmap.kept
    assert ffn_widths(m2) == ffn_widths(model)
    torch.testing.assert_close(logits(m2, x), logits(model, x))
    assert json.loads((tmp_path / "m" / "minilib_plan.json").read_text())["extra"]["eps"] == 0.3


def test_tokenizer_with_wrong_model(vocab_pruned, tmp_path, load_remapped_tokenizer):
    model, dense, tok, rtok, rep, ids = vocab_pruned
    save_model(model, rtok, tmp_path / "m")
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



# --- the embedded model's tokenizer (SmolLM2) ------------------------------------------------------

@pytest.mark.integration
def test_smollm2_byte_fallback_is_lossless(smollm2):
    """SmolLM2's vocabulary lacks 21 of the 256 byte symbols.  Those bytes are either never in valid
    UTF-8 or dropped by SmolLM2's own tokenizer, so the byte fallback covers every token; a pruned
    vocabulary round-trips held-out text and refuses (never drops) text with a byte it has no token for."""
    from minilib.data import corpus_splits, load_text
    tok = smollm2.tokenizer
    kind, ids = byte_alphabet(tok)
    missing = sorted(set(range(256)) - set(ids))
    assert kind == "byte-level" and len(missing) == 21
    in_utf8 = set(range(0x80)) | set(range(0x80, 0xC0))  # every byte of some character's UTF-8: ASCII,
    for lo, hi in ((0x80, 0xD800), (0xE000, 0x110000)):    # continuation bytes, and the lead bytes (one code
        in_utf8.update(chr(cp).encode()[0] for cp in range(lo, hi, 64))  # point per block of 64 shares one)
    never = [b for b in missing if b not in in_utf8]
    possible = [b for b in missing if b in in_utf8]
    assert never == [0xC0, 0xC1] + list(range(0xF5, 0x100))
    assert possible == [0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2]
    for b in possible:  # SmolLM2's own tokenizer drops them: no token is ever built from them
        ch = chr(b) if b < 0x80 else chr(0x40000 if b == 0xF1 else 0x80000)
        assert tok.decode(tok.encode("a" + ch + "b", add_special_tokens=False)) != "a" + ch + "b"
    sp = corpus_splits(tok, "tiny")
    model = load("tiny-llama").model  # only the tokenizer matters here: a map needs no weights
    mask = mask_vocab(token_counts(sp["calib"], len(tok)), tok)
    assert not mask[list(ids.values())].any() and not mask[special_ids(tok)].any()
    vmap = make_vocab_map(~mask, tok)
    assert vmap.fallback == "bytes" and vmap.new_size < 5000
    rtok = RemappedTokenizer(tok, vmap)
    for corpus in ("multilingual", "code", "wiki"):  # out-of-domain for a TinyStories vocabulary
        text = load_text(corpus)[:20000]
        rtok.reset_counts()
        new = rtok.encode(text, add_special_tokens=False)
        assert rtok.decode(new) == text
        assert rtok.fallback_count > 0.2 * rtok.token_count
        assert new.count(rtok.vmap.old_to_new[0].item()) == 0  # nothing became <|endoftext|>
    with pytest.raises(VocabError, match="0x04 has no token"):
        rtok.encode("a\x04b")
    del model
