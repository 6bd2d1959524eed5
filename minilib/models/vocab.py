"""A pruned vocabulary: which token ids a model keeps, and a tokenizer that speaks the new ids.

* ``VocabMap``: old id <-> new id (``kept[new] = old``), with a fingerprint written into the model
  config (``minilib_vocab_sha``) so that a mapping is never used with another model.
* ``keep_vocab_rows`` keeps only the rows ``vmap.kept`` of the input embedding and the LM head (tied
  or untied), in place -- the physical surgery; ``minilib.prune.remove_vocab`` drives it from a mask.
* ``RemappedTokenizer`` wraps the original tokenizer: it encodes to the new ids and decodes them
  back, so the pruned model reads and writes text as before.  The model can only emit kept tokens.

**Fallback for a token outside the kept set** (counted in ``RemappedTokenizer.fallback_count``):

* ``"bytes"`` (default for byte-level BPE, e.g. SmolLM2, GPT-2): the token is re-spelt as its
  single-byte tokens, which are always kept.  Lossless: decoding gives the same text; the model
  just sees a longer, less usual tokenization.
* ``"unk"`` (default otherwise): the token becomes the tokenizer's unknown token (or, without one,
  the end-of-text token), which is always kept.  Lossy.

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


def byte_level_ids(tokenizer) -> dict[str, int] | None:
    """``{byte char: id}`` of the 256 single-byte tokens of a byte-level BPE tokenizer, else None."""
    from minilib.models.tokenizers import bytes_to_unicode
    vocab = tokenizer.get_vocab()
    chars = bytes_to_unicode().values()
    if all(c in vocab for c in chars):
        return {c: vocab[c] for c in chars}
    return None


def special_ids(tokenizer) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            ids.add(int(v))
    return sorted(ids)


def token_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in ``ids`` (any shape)."""
    ids = ids.flatten()
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return torch.bincount(ids, minlength=vocab_size)


def _sha(kept: list[int], old_size: int) -> str:
    return hashlib.sha256(json.dumps([old_size, kept]).encode()).hexdigest()[:16]


@dataclass
class VocabMap:
    """Old id <-> new id.  ``kept[new] = old``; ``old_to_new[old] = new`` or -1."""

    kept: list[int]
    old_size: int
    fallback: str
    fallback_id: int  # new id used by the "unk" fallback

    def __post_init__(self):
        self.old_to_new = torch.full((self.old_size,), -1, dtype=torch.long)
        self.old_to_new[torch.tensor(self.kept, dtype=torch.long)] = torch.arange(len(self.kept))
        self.sha = _sha(self.kept, self.old_size)

    @property
    def new_size(self) -> int:
        return len(self.kept)

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
    """A ``VocabMap`` for a keep-mask; ``fallback`` defaults to ``"bytes"`` for byte-level BPE."""
    byte_ids = byte_level_ids(tokenizer)
    fallback = fallback or ("bytes" if byte_ids is not None else "unk")
    if fallback not in ("bytes", "unk"):
        raise ValueError(f"fallback must be 'bytes' or 'unk', got {fallback!r}")
    if fallback == "bytes" and byte_ids is None:
        raise ValueError("the 'bytes' fallback needs a byte-level BPE tokenizer; use fallback='unk'")
    kept = torch.nonzero(keep).flatten().tolist()
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    if unk is None or not keep[unk]:
        raise ValueError("the tokenizer has no kept unknown or end-of-text token for the fallback")
    return VocabMap(kept, len(keep), fallback, kept.index(int(unk)))


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


class RemappedTokenizer:
    """The original tokenizer, reading and writing the pruned model's ids.

    ``tok(text)["input_ids"]``, ``encode``, ``decode``, ``convert_ids_to_tokens`` work as on the base
    tokenizer (enough for ``minilib.data`` and ``minilib.eval``).  Tokens outside the kept set go
    through the fallback and are counted in ``fallback_count`` (of ``token_count`` tokens seen).
    """

    def __init__(self, base, vmap: VocabMap):
        self.base, self.vmap = base, vmap
        self._bytes = byte_level_ids(base) if vmap.fallback == "bytes" else None
        self.fallback_count = 0
        self.token_count = 0

    # --- ids ---------------------------------------------------------------------------------
    def map_ids(self, old_ids) -> list[int]:
        """Old ids -> new ids, with the fallback for tokens outside the kept set."""
        old_ids = [int(i) for i in old_ids]
        new = self.vmap.old_to_new[torch.tensor(old_ids, dtype=torch.long)].tolist() if old_ids else []
        self.token_count += len(old_ids)
        if all(n >= 0 for n in new):
            return new
        out = []
        for o, n in zip(old_ids, new):
            if n >= 0:
                out.append(n)
                continue
            self.fallback_count += 1
            if self._bytes is not None:
                s = self.base.convert_ids_to_tokens(o)
                if s and all(c in self._bytes for c in s):
                    out.extend(int(self.vmap.old_to_new[self._bytes[c]]) for c in s)
                else:  # an added token that is not spelt in bytes
                    out.append(self.vmap.fallback_id)
            else:
                out.append(self.vmap.fallback_id)
        return out

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

    # --- tokenizer interface -----------------------------------------------------------------
    def __call__(self, text, add_special_tokens: bool = True, **kw):
        enc = self.base(text, add_special_tokens=add_special_tokens)
        ids = enc["input_ids"]
        if isinstance(text, str):
            return {"input_ids": self.map_ids(ids)}
        return {"input_ids": [self.map_ids(x) for x in ids]}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
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
