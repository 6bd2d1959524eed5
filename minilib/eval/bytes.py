"""Tokenizer-independent language-model measures: bits per byte over the same text.

Perplexity per token depends on the tokenizer: a vocabulary-pruned model spells the tokens it no
longer has in byte tokens, so its token stream is longer than the dense model's over the same text,
and "the first N tokens" of each stream are different text.  To compare models that tokenize
differently, score **the same characters** and divide the total negative log-likelihood by the
number of UTF-8 bytes:

    bits per byte = sum of NLL (nats) over every token of the text / (ln 2 * bytes of the text)

* ``text_chunks(text, chunk_bytes)`` cuts a text into consecutive pieces (at line ends where
  possible).  The chunks are the units of the bootstrap: each is scored on its own, every model sees
  exactly the same chunks.
* ``score_text(model, tokenizer, chunks)`` encodes each chunk with the model's own tokenizer, puts
  one context token in front (``bos``, else ``eos``: the same special token for every model), and
  scores **every** token of the chunk (long chunks are cut into windows of ``seqlen`` that overlap by
  one token, so each token is predicted exactly once).  The tokenizer must round-trip each chunk
  (``decode(encode(chunk)) == chunk``, checked): otherwise the model would be scored on other text.
  With a ``RemappedTokenizer`` the NLL of a base token spelt in several byte tokens is the sum over
  its pieces, so the two tokenizations line up token by token (``TextScore.spans``).
* ``bits_per_byte(score)`` with a 95% bootstrap interval over chunks; ``bpb_difference(a, b)`` the
  paired interval of ``a - b`` on the same chunks; ``perplexity_per_base_token`` (the NLL of the same
  text divided by the base tokenizer's token count: comparable across stages); ``agree_perplexity``:
  token perplexity of both models over the positions where their tokenizations agree (the base
  token is one kept token for both), with the paired ratio.

All intervals come from ``minilib.stats.bootstrap_ci`` (percentile bootstrap over chunks, seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from minilib.device import model_device
from minilib.stats import Interval, bootstrap_ci

LN2 = math.log(2.0)


class TextMismatchError(ValueError):
    """Two scores are not over the same text (or the same base tokens), so they cannot be paired."""


# --- the text ----------------------------------------------------------------------------------

def text_chunks(text: str, chunk_bytes: int = 1024, max_chunks: int | None = None) -> list[str]:
    """Consecutive pieces of ``text`` of at most ``chunk_bytes`` UTF-8 bytes each, cut after the last
    newline that fits (else the last space, else at a character boundary).  Their concatenation is
    the start of ``text`` (all of it when ``max_chunks`` is None); trailing whitespace-only pieces
    are dropped."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 16:
        raise ValueError(f"chunk_bytes must be an integer >= 16, got {chunk_bytes!r}")
    if max_chunks is not None and (isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 1):
        raise ValueError(f"max_chunks must be an integer >= 1 or None, got {max_chunks!r}")
    raw = text.encode("utf-8", errors="surrogatepass")
    chunks, pos = [], 0
    while pos < len(raw) and (max_chunks is None or len(chunks) < max_chunks):
        end = min(len(raw), pos + chunk_bytes)
        if end < len(raw):
            while end > pos + 1 and (raw[end] & 0xC0) == 0x80:  # never inside a character
                end -= 1
            piece = raw[pos:end]
            cut = piece.rfind(b"\n")
            if cut < len(piece) // 4:
                cut = max(cut, piece.rfind(b" "))
            if cut >= len(piece) // 4:
                end = pos + cut + 1
        chunks.append(raw[pos:end].decode("utf-8", errors="surrogatepass"))
        pos = end
    while chunks and not chunks[-1].strip():
        chunks.pop()
    if not chunks:
        raise ValueError("text gives no chunks (it is empty or only whitespace)")
    return chunks


def split_text(tokenizer, ids) -> str:
    """The text of a token split (decoded by the base tokenizer), without a partial character at
    either end (a split boundary may fall inside a multi-byte character)."""
    return tokenizer.decode(ids.tolist() if hasattr(ids, "tolist") else list(ids)).strip("\ufffd")


def text_bytes(chunks: list[str]) -> np.ndarray:
    """UTF-8 bytes of each chunk."""
    return np.array([len(c.encode("utf-8", errors="surrogatepass")) for c in chunks], dtype=np.int64)


# --- scoring -----------------------------------------------------------------------------------

@dataclass
class TextScore:
    """A model's NLL over chunks of text, per base-tokenizer token.

    ``nll[c][k]``: NLL (nats) of base token ``k`` of chunk ``c`` (the sum over its pieces when the
    model's tokenizer spells it in several tokens); ``spans[c][k]``: how many model tokens stand for
    it (1 = the tokenizations agree there); ``base_ids[c]``: the base token ids (to check that two
    scores line up); ``bytes``, ``tokens``: UTF-8 bytes and model tokens per chunk."""

    nll: list[np.ndarray]
    spans: list[np.ndarray]
    base_ids: list[np.ndarray]
    bytes: np.ndarray
    tokens: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return len(self.nll)

    def units(self) -> np.ndarray:
        """``[chunks, 4]``: NLL sum, bytes, base tokens, model tokens (the bootstrap's rows)."""
        return np.array([[float(n.sum()), b, len(n), t] for n, b, t in zip(self.nll, self.bytes, self.tokens)],
                        dtype=np.float64)

    @property
    def total_nll(self) -> float:
        return float(sum(n.sum() for n in self.nll))

    @property
    def bpb(self) -> float:
        """Bits per byte over every chunk."""
        return self.total_nll / (LN2 * float(self.bytes.sum()))

    @property
    def fallback_rate(self) -> float:
        """Share of base tokens the model's tokenizer spelt in more than one token."""
        n = sum(len(s) for s in self.spans)
        return float(sum(int((s > 1).sum()) for s in self.spans) / max(1, n))

    def to_json(self) -> dict:
        return {"chunks": self.chunks, "bytes": int(self.bytes.sum()), "base_tokens": int(sum(len(n) for n in self.nll)),
                "model_tokens": int(self.tokens.sum()), "nll_per_chunk": [float(n.sum()) for n in self.nll],
                "bytes_per_chunk": self.bytes.tolist(), **self.meta}


def _encode(tokenizer, chunk: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Model ids, spans per base token and base ids of one chunk."""
    if hasattr(tokenizer, "map_ids_spans") and hasattr(tokenizer, "base"):  # a RemappedTokenizer
        tokenizer.check_text(chunk)
        base = tokenizer.base.encode(chunk, add_special_tokens=False)
        ids, spans = tokenizer.map_ids_spans(base)
        return ids, np.asarray(spans, dtype=np.int64), np.asarray(base, dtype=np.int64)
    ids = tokenizer.encode(chunk, add_special_tokens=False)
    return ids, np.ones(len(ids), dtype=np.int64), np.asarray(ids, dtype=np.int64)


def context_token(tokenizer) -> int:
    """The token put in front of every chunk: ``bos``, else ``eos`` (kept by every pruned vocabulary)."""
    for name in ("bos_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            return int(v)
    raise ValueError("the tokenizer has neither a bos nor an eos token to start each chunk with; pass context_id")


@torch.no_grad()
def score_text(model, tokenizer, chunks: list[str], seqlen: int = 512, batch_size: int = 4,
               context_id: int | None = None, check: bool = True) -> TextScore:
    """NLL of every token of every chunk (see the module docstring).  ``check``: raise
    ``TextMismatchError`` if the tokenizer does not round-trip a chunk."""
    from minilib.eval.perplexity import check_seqlen
    if not isinstance(chunks, (list, tuple)) or not chunks or not all(isinstance(c, str) and c for c in chunks):
        raise ValueError("chunks must be a non-empty list of non-empty strings (see text_chunks)")
    seqlen = check_seqlen(model, seqlen)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    ctx = context_token(tokenizer) if context_id is None else int(context_id)
    encoded = []
    for i, c in enumerate(chunks):
        ids, spans, base = _encode(tokenizer, c)
        if not ids:
            raise ValueError(f"chunk {i} gives no tokens")
        if check:
            back = tokenizer.decode(ids)
            if back != c:
                raise TextMismatchError(f"the tokenizer does not round-trip chunk {i} ({c[:40]!r}...): bits per "
                                        f"byte would be measured on other text")
        encoded.append((ids, spans, base))
    # windows over [ctx] + ids with stride seqlen - 1: each token is a target exactly once
    windows = []  # (chunk, first target position in ids, token list)
    for ci, (ids, _, _) in enumerate(encoded):
        seq = [ctx] + list(ids)
        for s in range(0, len(seq) - 1, seqlen - 1):
            windows.append((ci, s, seq[s:s + seqlen]))
    order = sorted(range(len(windows)), key=lambda j: -len(windows[j][2]))
    per_token = [np.zeros(len(e[0]), dtype=np.float64) for e in encoded]
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(order), batch_size):
            group = [windows[j] for j in order[b:b + batch_size]]
            width = len(group[0][2])
            x = torch.zeros(len(group), width, dtype=torch.long)
            valid = torch.zeros(len(group), width - 1, dtype=torch.bool)
            for r, (_, _, toks) in enumerate(group):
                x[r, :len(toks)] = torch.tensor(toks)
                valid[r, :len(toks) - 1] = True
            x = x.to(device)
            logits = model(input_ids=x).logits[:, :-1]  # right padding: earlier positions are unaffected
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1),
                                  reduction="none").view(len(group), width - 1).double().cpu()
            for r, (ci, s, toks) in enumerate(group):
                per_token[ci][s:s + len(toks) - 1] = nll[r, :len(toks) - 1].numpy()
    finally:
        model.train(was_training)
    nll_base = []
    for (ids, spans, _), t in zip(encoded, per_token):
        starts = np.concatenate([[0], np.cumsum(spans)[:-1]])
        nll_base.append(np.add.reduceat(t, starts) if len(t) else t)
    return TextScore(nll=nll_base, spans=[e[1] for e in encoded], base_ids=[e[2] for e in encoded],
                     bytes=text_bytes(list(chunks)), tokens=np.array([len(e[0]) for e in encoded], dtype=np.int64),
                     meta={"seqlen": seqlen, "context_id": ctx})


# --- measures with intervals ---------------------------------------------------------------------

def _bpb(u: np.ndarray) -> float:
    return float(u[:, 0].sum() / (LN2 * u[:, 1].sum()))


def _per_base_token(u: np.ndarray) -> float:
    return float(u[:, 0].sum() / u[:, 2].sum())


def bits_per_byte(score: TextScore, seed: int = 0, n_resamples: int = 10_000) -> Interval:
    """Bits per byte with a 95% percentile-bootstrap interval over chunks."""
    return bootstrap_ci(score.units(), _bpb, n_resamples=n_resamples, seed=seed)


def _check_same_text(a: TextScore, b: TextScore, base: bool = False) -> None:
    if a.chunks != b.chunks or not np.array_equal(a.bytes, b.bytes):
        raise TextMismatchError(f"the scores are not over the same text ({a.chunks} vs {b.chunks} chunks, "
                                f"{int(a.bytes.sum())} vs {int(b.bytes.sum())} bytes)")
    if base and any(not np.array_equal(x, y) for x, y in zip(a.base_ids, b.base_ids)):
        raise TextMismatchError("the scores come from different base tokenizations of the text")


def bpb_difference(a: TextScore, b: TextScore, seed: int = 0, n_resamples: int = 10_000) -> Interval:
    """``bpb(a) - bpb(b)`` on the same chunks, with the paired 95% bootstrap interval."""
    _check_same_text(a, b)
    return bootstrap_ci(a.units(), _bpb, paired=b.units(), n_resamples=n_resamples, seed=seed)


def perplexity_per_base_token(score: TextScore, seed: int = 0, n_resamples: int = 10_000) -> Interval:
    """``exp(NLL of the text / base-tokenizer tokens)`` with its interval: the dense model's token
    perplexity when the model uses the base tokenizer, and the same normalisation for a model that
    spells some tokens in bytes (so the two are comparable)."""
    iv = bootstrap_ci(score.units(), _per_base_token, n_resamples=n_resamples, seed=seed)
    return Interval(*(math.exp(v) for v in iv))


def agree_perplexity(a: TextScore, b: TextScore, seed: int = 0,
                     n_resamples: int = 10_000) -> dict[str, Interval | float]:
    """Token perplexity of ``a`` and ``b`` over the base tokens that both encode as one token (where
    the tokenizations agree), and the paired ratio ``a / b``; ``share``: the fraction of base tokens
    that are such positions."""
    _check_same_text(a, b, base=True)
    ua, ub = [], []
    for na, nb, sa, sb in zip(a.nll, b.nll, a.spans, b.spans):
        m = (sa == 1) & (sb == 1)
        ua.append([float(na[m].sum()), int(m.sum())])
        ub.append([float(nb[m].sum()), int(m.sum())])
    ua, ub = np.array(ua, dtype=np.float64), np.array(ub, dtype=np.float64)
    if ua[:, 1].sum() == 0:
        raise TextMismatchError("the two tokenizations agree on no token")

    def mean_nll(u):
        return float(u[:, 0].sum() / max(u[:, 1].sum(), 1.0))
    ia = bootstrap_ci(ua, mean_nll, n_resamples=n_resamples, seed=seed)
    ib = bootstrap_ci(ub, mean_nll, n_resamples=n_resamples, seed=seed)
    d = bootstrap_ci(ua, mean_nll, paired=ub, n_resamples=n_resamples, seed=seed)
    def ex(iv):
        return Interval(*(math.exp(v) for v in iv))
    return {"a": ex(ia), "b": ex(ib), "ratio": ex(d), "share": float(ua[:, 1].sum() / sum(len(n) for n in a.nll))}
