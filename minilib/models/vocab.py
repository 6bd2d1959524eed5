"""A pruned vocabulary: which token ids a model keeps, and a tokenizer that speaks the new ids.

* ``VocabMap``: old id <-> new id (``kept[new] = old``), with a fingerprint written into the model
  config (``minilib_vocab_sha``) so that a mapping is never used with another model.
* ``keep_vocab_rows`` keeps only the rows ``vmap.kept`` of the input embedding and the LM head (tied
  or untied), in place -- the physical surgery; ``minilib.prune.remove_vocab`` drives it from a mask.
* ``RemappedTokenizer`` wraps the original tokenizer: it encodes to the new ids and decodes them
  back, so the pruned model reads and writes text as before.  The model can only emit kept tokens.

**Fallback for a token outside the kept set** (counted in ``RemappedTokenizer.fallback_count``):

* ``"bytes"`` (the default wherever the tokenizer has byte tokens): the token is re-spelt as the
  byte tokens of its UTF-8 bytes, which are always kept.  Lossless: ``decode(encode(text)) == text``
  for every text the base tokenizer itself round-trips; the model just sees a longer, less usual
  tokenization.  Two kinds of byte alphabet are recognised (``byte_alphabet``): byte-level BPE
  (GPT-2, SmolLM2: each byte is a printable symbol) and SentencePiece BPE with ``byte_fallback``
  (``<0x41>`` tokens).  A byte-level vocabulary may lack some byte symbols: SmolLM2 has 235 of the
  256, missing ``0x04 0x06 0x13 0x14 0x16 0x1D`` (control characters), ``0xC0 0xC1 0xF5``-``0xFF``
  (never in valid UTF-8) and ``0xF1 0xF2`` (lead bytes of the unassigned planes 4-11).  Its own
  tokenizer silently drops such bytes, so no token is built from them and the fallback still
  covers every token; text containing them cannot be encoded losslessly by any tokenizer of this
  vocabulary, and ``RemappedTokenizer.encode`` raises ``VocabError`` naming the character instead of
  dropping it.  A token whose bytes cannot be spelt raises ``VocabError`` when the map is built.
* ``"unk"`` (only for tokenizers without byte tokens, e.g. BERT WordPiece; or when asked for): the
  token becomes the unknown token (or, without one, the end-of-text token), which is always kept.
  Lossy, and counted.

Saved with the model by ``minilib.models.save_model`` (``vocab_map.json``).  No pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn

from minilib.models.adapters import adapter_for
from minilib.models.surgery import PlanMismatchError

MAP_FILE = "vocab_map.json"
CONFIG_KEY = "minilib_vocab_sha"
FALLBACKS = ("bytes", "unk")
SPIECE_SPACE = "\u2581"  # SentencePiece's word-boundary symbol


class VocabError(ValueError):
    """A vocabulary mapping that cannot be built, or text that a pruned vocabulary cannot encode losslessly."""


# --- the byte alphabet of a tokenizer ------------------------------------------------------------

def _backend_state(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return {}
    try:
        return json.loads(backend.to_str())
    except (AttributeError, ValueError):
        return {}


def _has_component(node, kind: str) -> bool:
    """True if a tokenizers pipeline component (possibly a Sequence) contains ``kind``."""
    if isinstance(node, dict):
        if node.get("type") == kind:
            return True
        return any(_has_component(v, kind) for v in node.values() if isinstance(v, (dict, list)))
    if isinstance(node, list):
        return any(_has_component(v, kind) for v in node)
    return False


def byte_alphabet(tokenizer) -> tuple[str, dict[int, int]] | None:
    """``(kind, {byte value: token id})`` of the single-byte tokens of a tokenizer, or None when it
    has no byte tokens (WordPiece, WordLevel, BPE without byte fallback).

    ``kind`` is ``"byte-level"`` (GPT-2-style byte-level BPE: each byte is a printable symbol) or
    ``"byte-fallback"`` (SentencePiece BPE with ``<0xXX>`` tokens).  The dict holds only the bytes the
    vocabulary has a token for (SmolLM2: 235 of 256)."""
    from minilib.models.tokenizers import bytes_to_unicode
    vocab = tokenizer.get_vocab()
    state = _backend_state(tokenizer)
    byte_level = hasattr(tokenizer, "byte_encoder") or _has_component(state.get("pre_tokenizer"), "ByteLevel") \
        or _has_component(state.get("decoder"), "ByteLevel")
    if byte_level:
        ids = {b: vocab[c] for b, c in bytes_to_unicode().items() if c in vocab}
        return ("byte-level", ids) if ids else None
    if (state.get("model") or {}).get("byte_fallback"):
        ids = {b: vocab[f"<0x{b:02X}>"] for b in range(256) if f"<0x{b:02X}>" in vocab}
        return ("byte-fallback", ids) if ids else None
    return None


def byte_level_ids(tokenizer) -> dict[str, int] | None:
    """``{byte symbol: id}`` of a byte-level BPE tokenizer's single-byte tokens (those it has), else None."""
    from minilib.models.tokenizers import bytes_to_unicode
    alpha = byte_alphabet(tokenizer)
    if alpha is None or alpha[0] != "byte-level":
        return None
    b2u = bytes_to_unicode()
    return {b2u[b]: i for b, i in alpha[1].items()}


def special_ids(tokenizer) -> list[int]:
    """Every special token id: ``all_special_ids``, the named special tokens, and added tokens marked special."""
    ids = set(tokenizer.all_special_ids)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            ids.add(int(v))
    for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(t, "special", False):
            ids.add(int(i))
    return sorted(ids)


def token_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in ``ids`` (any shape)."""
    ids = ids.flatten()
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return torch.bincount(ids, minlength=vocab_size)


class ByteSpeller:
    """The UTF-8 bytes of any token of a tokenizer with a byte alphabet (``byte_alphabet``)."""

    def __init__(self, tokenizer):
        from minilib.models.tokenizers import bytes_to_unicode
        alpha = byte_alphabet(tokenizer)
        if alpha is None:
            raise VocabError(f"{type(tokenizer).__name__} has no byte tokens (neither byte-level BPE nor "
                             f"SentencePiece byte fallback), so tokens cannot be spelt in bytes; use fallback='unk' "
                             f"(lossy: unseen tokens become the unknown token)")
        self.tokenizer = tokenizer
        self.kind, self.ids = alpha
        self.present = bytes(sorted(self.ids))
        self.missing = bytes(b for b in range(256) if b not in self.ids)
        self._id2tok = {i: t for t, i in tokenizer.get_vocab().items()}
        self._u2b = {c: b for b, c in bytes_to_unicode().items()}
        self._added = {int(i): t.content for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()}

    def spell(self, token_id: int) -> bytes:
        """The bytes of token ``token_id``; ``VocabError`` if it is not made of bytes this vocabulary has."""
        if token_id in self._added:
            b = self._added[token_id].encode("utf-8")
        else:
            s = self._id2tok.get(int(token_id))
            if s is None:
                raise VocabError(f"token id {token_id} is not in the vocabulary")
            if self.kind == "byte-level":
                try:
                    b = bytes(self._u2b[c] for c in s)
                except KeyError:
                    raise VocabError(f"token {token_id} ({s!r}) is not spelt in byte-level symbols") from None
            elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
                b = bytes([int(s[3:5], 16)])
            else:
                b = s.replace(SPIECE_SPACE, " ").encode("utf-8")
        bad = b.translate(None, delete=self.present)
        if bad:
            raise VocabError(f"token {token_id} ({self._id2tok.get(int(token_id))!r}) contains "
                             f"byte(s) {', '.join(f'0x{x:02X}' for x in sorted(set(bad)))} that have no token in "
                             f"this vocabulary: it cannot be spelt in byte tokens")
        return b

    def check_text(self, text: str) -> None:
        """``VocabError`` if ``text`` holds a byte with no token (no tokenizer of this vocabulary can keep it)."""
        if not self.missing:
            return
        raw = text.encode("utf-8", errors="surrogatepass")
        if len(raw.translate(None, delete=self.missing)) < len(raw):
            for i, ch in enumerate(text):
                bad = ch.encode("utf-8", errors="surrogatepass").translate(None, delete=self.present)
                if bad:
                    raise VocabError(f"text holds {ch!r} (U+{ord(ch):04X}) at character {i}: its UTF-8 byte "
                                     f"0x{bad[0]:02X} has no token in this vocabulary (the base tokenizer drops "
                                     f"it), so it cannot be encoded losslessly")


# --- the map -------------------------------------------------------------------------------------

def _sha(kept: list[int], old_size: int) -> str:
    return hashlib.sha256(json.dumps([old_size, kept]).encode()).hexdigest()[:16]


@dataclass
class VocabMap:
    """Old id <-> new id.  ``kept[new] = old``; ``old_to_new[old] = new`` or -1.  ``fallback_id``: the
    new id the ``"unk"`` fallback uses (-1 when none is needed)."""

    kept: list[int]
    old_size: int
    fallback: str
    fallback_id: int

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise VocabError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        self.old_to_new = torch.full((self.old_size,), -1, dtype=torch.long)
        self.old_to_new[torch.tensor(self.kept, dtype=torch.long)] = torch.arange(len(self.kept))
        self.sha = _sha(self.kept, self.old_size)

    @property
    def new_size(self) -> int:
        return len(self.kept)

    @property
    def lossless(self) -> bool:
        return self.fallback == "bytes"

    def to_json(self) -> dict:
        return {"kept": self.kept, "old_size": self.old_size, "fallback": self.fallback,
                "fallback_id": self.fallback_id, "sha": self.sha}

    @classmethod
    def from_json(cls, d: dict) -> "VocabMap":
        m = cls(list(d["kept"]), int(d["old_size"]), d["fallback"], int(d["fallback_id"]))
        if m.sha != d.get("sha"):
            raise PlanMismatchError("vocab_map.json is corrupt: its kept ids do not match its fingerprint")
        return m


def make_vocab_map(keep: torch.Tensor, tokenizer, fallback: str | None = None) -> VocabMap:
    """A ``VocabMap`` for a keep-mask.  ``fallback`` defaults to ``"bytes"`` when the tokenizer has byte
    tokens (``byte_alphabet``), else ``"unk"``.  With ``"bytes"`` every byte token must be kept and
    every pruned token must be spelt in them, else ``VocabError`` (never a silent lossy fallback)."""
    if keep.dtype != torch.bool or keep.dim() != 1:
        raise ValueError(f"keep must be a 1-D bool mask over the vocabulary, got {keep.dtype} {tuple(keep.shape)}")
    alpha = byte_alphabet(tokenizer)
    fallback = fallback or ("bytes" if alpha is not None else "unk")
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    kept = torch.nonzero(keep).flatten().tolist()
    if fallback == "bytes":
        speller = ByteSpeller(tokenizer)  # raises for a tokenizer without byte tokens
        lost = sorted(b for b, i in speller.ids.items() if i >= len(keep) or not keep[i])
        if lost:
            raise VocabError(f"the byte fallback needs every byte token kept; {len(lost)} are pruned (bytes "
                             f"{', '.join(f'0x{b:02X}' for b in lost[:8])}{' ...' if len(lost) > 8 else ''}); "
                             f"build the mask with minilib.prune.mask_vocab, which keeps them")
        bad = []
        for i in torch.nonzero(~keep).flatten().tolist():
            try:
                speller.spell(i)
            except VocabError as e:
                bad.append(str(e))
        if bad:
            raise VocabError(f"{len(bad)} pruned token(s) cannot be spelt in byte tokens, e.g. {bad[0]}")
        return VocabMap(kept, len(keep), "bytes", -1)
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    if unk is None or not keep[unk]:
        raise VocabError("the 'unk' fallback needs a kept unknown or end-of-text token; the tokenizer has none kept")
    return VocabMap(kept, len(keep), "unk", kept.index(int(unk)))


@torch.no_grad()
def keep_vocab_rows(model: nn.Module, vmap: VocabMap) -> dict[str, int]:
    """Keep only the rows ``vmap.kept`` of the input embedding and the LM head (tied or untied), in
    place; update the config's vocabulary size and special-token ids.  Returns a size report."""
    adapter = adapter_for(model)
    emb = adapter.input_embeddings(model)
    if emb.num_embeddings != vmap.old_size:
        raise PlanMismatchError(f"the mapping is for a vocabulary of {vmap.old_size}, the model has "
                                f"{emb.num_embeddings}")
    before = sum(p.numel() for p in model.parameters())
    idx = torch.tensor(vmap.kept, dtype=torch.long, device=emb.weight.device)
    head = adapter_for(model).lm_head(model)
    tied = head is not None and head.weight is emb.weight
    emb.weight = nn.Parameter(emb.weight.data[idx].clone())
    emb.num_embeddings = len(idx)
    if emb.padding_idx is not None:
        emb.padding_idx = int(vmap.old_to_new[emb.padding_idx]) if vmap.old_to_new[emb.padding_idx] >= 0 else None
    if head is not None:
        head.weight = emb.weight if tied else nn.Parameter(head.weight.data[idx].clone())
        if head.bias is not None:
            head.bias = nn.Parameter(head.bias.data[idx].clone())
        head.out_features = len(idx)
    cfg = model.config
    cfg.vocab_size = len(idx)
    for conf in (cfg, getattr(model, "generation_config", None)):
        for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            v = getattr(conf, k, None) if conf is not None else None
            if isinstance(v, int):
                setattr(conf, k, int(vmap.old_to_new[v]) if vmap.old_to_new[v] >= 0 else None)
            elif isinstance(v, list):
                setattr(conf, k, [int(vmap.old_to_new[x]) for x in v if vmap.old_to_new[x] >= 0])
    setattr(cfg, CONFIG_KEY, vmap.sha)
    after = sum(p.numel() for p in model.parameters())
    return {"vocab_before": vmap.old_size, "vocab_after": vmap.new_size, "params_before": before,
            "params_after": after, "tied": tied}


# --- the tokenizer -------------------------------------------------------------------------------

class RemappedTokenizer:
    """The original tokenizer, reading and writing the pruned model's ids.

    ``tok(text)["input_ids"]``, ``encode``, ``decode``, ``convert_ids_to_tokens`` work as on the base
    tokenizer (enough for ``minilib.data`` and ``minilib.eval``).  Tokens outside the kept set go
    through the fallback and are counted in ``fallback_count`` (of ``token_count`` tokens seen).
    ``encode_spans`` also says how many new ids each base token became (what tokenizer-independent
    measures need to line the two tokenizations up).
    """

    def __init__(self, base, vmap: VocabMap):
        self.base, self.vmap = base, vmap
        self._speller = ByteSpeller(base) if vmap.fallback == "bytes" else None
        self._spelt: dict[int, list[int]] = {}
        self.fallback_count = 0
        self.token_count = 0

    # --- ids ---------------------------------------------------------------------------------
    def _fallback(self, old: int) -> list[int]:
        if self._speller is None:
            return [self.vmap.fallback_id]
        new = self._spelt.get(old)
        if new is None:
            o2n = self.vmap.old_to_new
            pieces = [self._speller.ids[b] for b in self._speller.spell(old)]
            new = [int(o2n[i]) for i in pieces]
            if min(new) < 0:
                raise VocabError(f"token {old}: a byte token of its spelling is not kept")
            # the spelling must decode to the token's own text (checked once per token)
            if self.base.decode(pieces) != self.base.decode([old]):
                raise VocabError(f"token {old} ({self.base.convert_ids_to_tokens(old)!r}) spelt in bytes decodes to "
                                 f"{self.base.decode(pieces)!r}, not {self.base.decode([old])!r}")
            self._spelt[old] = new
        return new

    def map_ids_spans(self, old_ids) -> tuple[list[int], list[int]]:
        """Old ids -> ``(new ids, spans)``: ``spans[k]`` new ids stand for old token ``k`` (1 when it is
        kept, its byte length when it is spelt in bytes)."""
        old_ids = [int(i) for i in old_ids]
        new = self.vmap.old_to_new[torch.tensor(old_ids, dtype=torch.long)].tolist() if old_ids else []
        self.token_count += len(old_ids)
        if all(n >= 0 for n in new):
            return new, [1] * len(new)
        out, spans = [], []
        for o, n in zip(old_ids, new):
            if n >= 0:
                out.append(n)
                spans.append(1)
                continue
            self.fallback_count += 1
            f = self._fallback(o)
            out.extend(f)
            spans.append(len(f))
        return out, spans

    def map_ids(self, old_ids) -> list[int]:
        """Old ids -> new ids, with the fallback for tokens outside the kept set."""
        return self.map_ids_spans(old_ids)[0]

    def map_tensor(self, old_ids: torch.Tensor) -> torch.Tensor:
        """A 1-D tensor of old ids (e.g. a corpus split) -> 1-D tensor of new ids (may be longer)."""
        return torch.tensor(self.map_ids(old_ids.tolist()), dtype=torch.long)

    def unmap_ids(self, new_ids) -> list[int]:
        new_ids = [int(i) for i in new_ids]
        if any(i < 0 or i >= self.vmap.new_size for i in new_ids):
            raise IndexError(f"ids must lie in [0, {self.vmap.new_size}) for this pruned vocabulary")
        return [self.vmap.kept[i] for i in new_ids]

    def reset_counts(self) -> None:
        self.fallback_count = self.token_count = 0

    # --- text --------------------------------------------------------------------------------
    def check_text(self, text: str) -> None:
        """With the byte fallback: ``VocabError`` if ``text`` holds a byte no token of this vocabulary has."""
        if self._speller is not None:
            self._speller.check_text(text)

    def encode_spans(self, text: str, add_special_tokens: bool = False) -> tuple[list[int], list[int]]:
        """``(new ids, spans)`` of ``text``: ``spans[k]`` new ids stand for the base tokenizer's token ``k``."""
        self.check_text(text)
        return self.map_ids_spans(self.base.encode(text, add_special_tokens=add_special_tokens))

    # --- tokenizer interface -----------------------------------------------------------------
    def __call__(self, text, add_special_tokens: bool = True, **kw):
        for t in [text] if isinstance(text, str) else text:
            self.check_text(t)
        enc = self.base(text, add_special_tokens=add_special_tokens)
        ids = enc["input_ids"]
        if isinstance(text, str):
            return {"input_ids": self.map_ids(ids)}
        return {"input_ids": [self.map_ids(x) for x in ids]}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.check_text(text)
        return self.map_ids(self.base.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids, skip_special_tokens: bool = False, **kw) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.base.decode(self.unmap_ids(ids), skip_special_tokens=skip_special_tokens, **kw)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.base.convert_ids_to_tokens(self.vmap.kept[ids])
        return self.base.convert_ids_to_tokens(self.unmap_ids(ids))

    def _special(self, name):
        v = getattr(self.base, name)
        return None if v is None or self.vmap.old_to_new[v] < 0 else int(self.vmap.old_to_new[v])

    bos_token_id = property(lambda self: self._special("bos_token_id"))
    eos_token_id = property(lambda self: self._special("eos_token_id"))
    pad_token_id = property(lambda self: self._special("pad_token_id"))
    unk_token_id = property(lambda self: self._special("unk_token_id"))

    def __len__(self) -> int:
        return self.vmap.new_size

    def check_model(self, model: nn.Module) -> None:
        """Raise ``PlanMismatchError`` unless ``model`` was pruned with this mapping."""
        n = adapter_for(model).input_embeddings(model).num_embeddings
        sha = getattr(model.config, CONFIG_KEY, None)
        if n != self.vmap.new_size or sha != self.vmap.sha:
            raise PlanMismatchError(
                f"remapped tokenizer (vocabulary {self.vmap.new_size}, mapping {self.vmap.sha}) does not "
                f"belong to this model (vocabulary {n}, mapping {sha}); load the tokenizer saved with the model")
