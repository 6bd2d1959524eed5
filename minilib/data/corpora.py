"""Text corpora as token tensors, disjoint splits, calibration and evaluation windows.

Sources (``load_text``):

* an embedded name: ``wiki``, ``c4``, ``tiny`` (TinyStories), ``code``, ``technical``, ``multilingual``;
* a local ``.txt``/``.utf8``/``.md`` file, or a ``.jsonl`` file with a ``text`` field;
* ``hf:<dataset>[:<config>]:<split>[:<field>]`` for users online, e.g. ``hf:wikitext:wikitext-2-raw-v1:test``.

Splits are contiguous, disjoint token ranges (``split_tokens``).  Calibration windows are random
and seeded, evaluation windows are contiguous and non-overlapping, and the two come from different
splits, so no token is used for both (the Mini-GPTs reference code calibrated and evaluated on the
same tokens).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED_CORPORA = {
    "wiki": "wiki.utf8", "c4": "c4.utf8", "tiny": "tiny.utf8", "code": "code.utf8",
    "technical": "technical.utf8", "multilingual": "multilingual.utf8",
}
_DOC_TAG = re.compile(r"^</?doc[^>]*>\s*$", re.M)


class CorpusError(ValueError):
    """A corpus that does not exist or is too short for what was asked."""


def load_text(source: str | Path, field: str = "text") -> str:
    """The raw text of a corpus source (see the module docstring)."""
    s = str(source)
    if s in EMBEDDED_CORPORA:
        from minilib import assets
        text = (assets.fetch("corpora") / EMBEDDED_CORPORA[s]).read_text(encoding="utf-8")
        return _DOC_TAG.sub("", text) if s == "wiki" else text
    if s.startswith("hf:"):
        return _hf_text(s[3:], field)
    p = Path(s).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"corpus {s!r} is neither an embedded corpus ({', '.join(EMBEDDED_CORPORA)}) "
                                f"nor an existing file")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        if rows and field not in rows[0]:
            raise CorpusError(f"{p}: jsonl rows have no {field!r} field (fields: {sorted(rows[0])})")
        text = "\n\n".join(str(r[field]) for r in rows)
    else:
        text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise CorpusError(f"corpus {p} is empty")
    return text


def _hf_text(spec: str, field: str) -> str:
    import datasets
    parts = spec.split(":")
    if len(parts) == 2:
        path, split = parts
        config = None
    elif len(parts) in (3, 4):
        path, config, split = parts[:3]
        field = parts[3] if len(parts) == 4 else field
    else:
        raise CorpusError(f"bad hf spec {spec!r}; use hf:<dataset>[:<config>]:<split>[:<field>]")
    ds = datasets.load_dataset(path, config or None, split=split)
    return "\n\n".join(ds[field])


def tokenize_text(tokenizer, text: str, chunk_chars: int = 20000) -> torch.Tensor:
    """Token ids of a long text as one 1-D LongTensor (no special tokens), tokenized in
    paragraph-aligned chunks so that no single call exceeds the tokenizer's limits."""
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        chunks.append(text[start:end])
        start = end
    if not chunks:
        raise CorpusError("cannot tokenize an empty text")
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # chunks may exceed model_max_length; windows are cut later
    try:
        enc = tokenizer(chunks, add_special_tokens=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(level)
    return torch.tensor([t for ids in enc for t in ids], dtype=torch.long)


def load_tokens(tokenizer, source: str | Path, max_chars: int | None = None) -> torch.Tensor:
    text = load_text(source)
    return tokenize_text(tokenizer, text[:max_chars] if max_chars else text)


@dataclass
class TokenSplits:
    """Contiguous, disjoint token ranges of one corpus."""

    ids: torch.Tensor
    ranges: dict[str, tuple[int, int]]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.ranges:
            raise KeyError(f"no split {name!r}; splits are {list(self.ranges)}")
        a, b = self.ranges[name]
        return self.ids[a:b]

    def assert_disjoint(self) -> None:
        spans = sorted(self.ranges.values())
        for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
            if a1 < b0:
                raise AssertionError(f"token ranges overlap: [{a0},{b0}) and [{a1},{b1})")


def split_tokens(ids: torch.Tensor, fractions: dict[str, float]) -> TokenSplits:
    """Cut ``ids`` into contiguous disjoint parts, in the order given (fractions sum to <= 1)."""
    total = sum(fractions.values())
    if any(f <= 0 for f in fractions.values()) or total > 1 + 1e-9:
        raise ValueError(f"fractions must be positive and sum to at most 1, got {fractions}")
    n, start, ranges = len(ids), 0, {}
    for name, f in fractions.items():
        end = min(n, start + int(round(f * n)))
        if end <= start:
            raise CorpusError(f"split {name!r} would be empty ({n} tokens in the corpus)")
        ranges[name] = (start, end)
        start = end
    out = TokenSplits(ids, ranges)
    out.assert_disjoint()
    return out


def calibration_windows(ids: torch.Tensor, n: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``n`` random windows ``[n, seqlen]`` from ``ids``, seeded (as SparseGPT/Wanda sample C4)."""
    if n < 1 or seqlen < 1:
        raise ValueError(f"need n >= 1 and seqlen >= 1, got n={n}, seqlen={seqlen}")
    if len(ids) < seqlen:
        raise CorpusError(f"corpus part has {len(ids)} tokens, too short for windows of {seqlen}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen + 1, (n,), generator=g)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Contiguous, non-overlapping windows ``[nw, seqlen]`` (the SparseGPT/Wanda protocol)."""
    nw = len(ids) // seqlen
    if nw < 1:
        raise CorpusError(f"corpus part has {len(ids)} tokens, too short for one window of {seqlen}")
    if max_windows is not None:
        nw = min(nw, max_windows)
    return ids[: nw * seqlen].view(nw, seqlen)


# The default protocol: calibration from the first part, evaluation from the held-out end.
DEFAULT_FRACTIONS = {"calib": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}


def corpus_splits(tokenizer, source: str | Path, fractions: dict[str, float] | None = None,
                  max_chars: int | None = None) -> TokenSplits:
    """Tokenize a corpus and cut it into disjoint parts (default: calib/train/dev/test)."""
    return split_tokens(load_tokens(tokenizer, source, max_chars), fractions or DEFAULT_FRACTIONS)


def calibration_set(tokenizer, corpus: str | Path = "c4", nsamples: int = 32, seqlen: int = 512,
                    seed: int = 0) -> torch.Tensor:
    """``nsamples`` seeded random windows ``[nsamples, seqlen]`` from the ``calib`` split of ``corpus``
    (the SparseGPT/Wanda calibration protocol, on held-in text only)."""
    return calibration_windows(corpus_splits(tokenizer, corpus)["calib"], nsamples, seqlen, seed)
