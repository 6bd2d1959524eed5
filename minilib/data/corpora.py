"""Text corpora as token tensors, disjoint splits, calibration and evaluation windows.

Sources (``load_text``):

* an embedded name: ``wiki``, ``c4``, ``tiny`` (TinyStories), ``code``, ``technical``, ``multilingual``;
* a local ``.txt``/``.utf8``/``.md`` file (UTF-8), or a ``.jsonl`` file with a ``text`` field on every line;
* ``hf:<dataset>[:<config>]:<split>[:<field>]`` for users online, e.g. ``hf:wikitext:wikitext-2-raw-v1:test``.

Splits are contiguous, disjoint token ranges (``split_tokens``).  Calibration windows are random
and seeded, evaluation windows are contiguous and non-overlapping, and the two come from different
splits, so no token is used for both (the Mini-GPTs reference code calibrated and evaluated on the
same tokens).

Bad input fails early with an error that names it: a file that is not UTF-8, holds binary content
(a NUL byte: a UTF-16 or binary file) or is not valid JSON lines (``CorpusError`` naming
``file:line``), a file in another format (``.json``, ``.csv``, ``.parquet``, ...: ``CorpusError``
naming the file and the formats read), a corpus too short for a split or a window (``CorpusError``
naming the split and the corpus: the tensors ``TokenSplits`` gives carry that name, ``describe_ids``),
counts that are not positive integers (``TypeError`` / ``ValueError`` naming the argument and the
allowed range).
"""

from __future__ import annotations

import codecs
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

EMBEDDED_CORPORA = {
    "wiki": "wiki.utf8", "c4": "c4.utf8", "tiny": "tiny.utf8", "code": "code.utf8",
    "technical": "technical.utf8", "multilingual": "multilingual.utf8",
}
CORPUS_FORMATS = ("UTF-8 text (.txt, .utf8, .md, or another suffix) or JSON lines (.jsonl: one object with a "
                  "'text' field per line)")
# Suffixes of structured formats: read as raw text, their markup would be the corpus.
OTHER_FORMATS = {".json": "JSON", ".csv": "CSV",
                 ".tsv": "TSV", ".parquet": "Parquet", ".arrow": "Arrow", ".yaml": "YAML", ".yml": "YAML",
                 ".xml": "XML", ".html": "HTML", ".htm": "HTML", ".pdf": "PDF", ".docx": "Word", ".gz": "gzip",
                 ".zip": "zip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".pt": "PyTorch", ".npy": "NumPy"}
_DOC_TAG = re.compile(r"^</?doc[^>]*>\s*$", re.M)


class CorpusError(ValueError):
    """A corpus that does not exist, cannot be read, or is too short for what was asked."""


# --- argument and file checks (shared with minilib.data.tasks) -----------------------------------

def check_count(value, name: str, minimum: int = 1, optional: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (``None`` passes if ``optional``); else a TypeError or
    ValueError naming ``name`` and the allowed range.  Booleans and floats are not counts."""
    allowed = f"an integer >= {minimum}" + (" or None" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def _check_source(source, what: str) -> str:
    if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        raise TypeError(f"{what} must be a name or a path (str or Path), got {source!r}")
    return str(source)


def _check_tokenizer(tokenizer) -> None:
    if not callable(tokenizer):
        hint = " (pass the .tokenizer of a loaded model)" if hasattr(tokenizer, "tokenizer") else ""
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}{hint}")


def _check_ids(ids, name: str) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype.is_floating_point or ids.is_complex() \
            or ids.dtype == torch.bool:
        got = f"a {ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) \
            else type(ids).__name__
        raise TypeError(f"{name} must be a 1-D tensor of token ids (integers), got {got}")


def read_text_file(path: str | os.PathLike, error: type[Exception] = CorpusError) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped); a file that is not UTF-8 raises ``error``
    naming ``file:line`` and the offending byte."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a file")
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0

    def where(pos: int) -> str:
        line = data.count(b"\n", 0, pos) + 1
        return f"{path}:{line}", pos - (data.rfind(b"\n", 0, pos) + 1) + 1

    nul = data.find(b"\x00", skip)
    if nul >= 0:  # valid UTF-8, but no text holds NUL: a binary file, or UTF-16 (one NUL per ASCII letter)
        at, col = where(nul)
        raise error(f"{at}: binary content, not text (a NUL byte at column {col}; "
                    f"{data.count(0)} of its {len(data)} bytes are NUL); pass a UTF-8 text file "
                    "(a UTF-16 file: save it as UTF-8)")
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        pos = skip + e.start
        at, col = where(pos)
        raise error(f"{at}: not UTF-8 text (byte 0x{data[pos]:02x} at column {col}); "
                    "save the file as UTF-8") from None


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = CorpusError) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file; a line that is not
    valid JSON, or not a JSON object, raises ``error`` naming ``file:line``."""
    path = Path(path)
    for i, line in enumerate(read_text_file(path, error).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{i}: invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{i}: each line must be a JSON object, got {type(row).__name__} {line.strip()[:60]!r}")
        yield i, row


# --- text -----------------------------------------------------------------------------------------

def load_text(source: str | Path, field: str = "text") -> str:
    """The raw text of a corpus source (see the module docstring)."""
    s = _check_source(source, "corpus")
    if not isinstance(field, str) or not field:
        raise TypeError(f"field must be a non-empty string, got {field!r}")
    if s in EMBEDDED_CORPORA:
        from minilib import assets
        text = read_text_file(assets.fetch("corpora") / EMBEDDED_CORPORA[s])
        return _DOC_TAG.sub("", text) if s == "wiki" else text
    if s.startswith("hf:"):
        text = _hf_text(s[3:], field)
        if not text.strip():
            raise CorpusError(f"corpus {s} is empty")
        return text
    p = Path(s).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"corpus {s!r} is neither an embedded corpus ({', '.join(EMBEDDED_CORPORA)}) "
                                f"nor an existing file")
    if p.suffix.lower() in OTHER_FORMATS:
        fmt = OTHER_FORMATS[p.suffix.lower()]
        hint = "; convert it to .jsonl, one {\"text\": ...} object per line" if fmt == "JSON" else ""
        raise CorpusError(f"corpus {p}: {fmt} files are not read as corpora (their markup would be tokenized as "
                          f"text); corpus files are {CORPUS_FORMATS}{hint}")
    if p.suffix == ".jsonl":
        parts = []
        for i, row in iter_jsonl(p, CorpusError):
            if field not in row:
                raise CorpusError(f"{p}:{i}: row has no {field!r} field (fields: {sorted(row)})")
            if not isinstance(row[field], str):
                raise CorpusError(f"{p}:{i}: {field!r} must be a string, got {type(row[field]).__name__} "
                                  f"{row[field]!r:.60}")
            parts.append(row[field])
        text = "\n\n".join(parts)
    else:
        text = read_text_file(p, CorpusError)
    if not text.strip():
        raise CorpusError(f"corpus {p} is empty")
    return text


def _hf_text(spec: str, field: str) -> str:
    parts = spec.split(":")
    if len(parts) == 2:
        path, split = parts
        config = None
    elif len(parts) in (3, 4):
        path, config, split = parts[:3]
        field = parts[3] if len(parts) == 4 else field
    else:
        parts = []
    if not parts or not path or not split or not field:
        raise CorpusError(f"bad hf spec {spec!r}; use hf:<dataset>[:<config>]:<split>[:<field>]")
    import datasets
    ds = datasets.load_dataset(path, config or None, split=split)
    if field not in ds.column_names:
        raise CorpusError(f"hf:{spec}: no field {field!r}; fields: {ds.column_names} "
                          "(choose one with hf:<dataset>:<config>:<split>:<field>)")
    texts = ds[field]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise CorpusError(f"hf:{spec}: row {bad}: {field!r} must be a string, got {type(texts[bad]).__name__}")
    return "\n\n".join(texts)


def tokenize_text(tokenizer, text: str, chunk_chars: int = 20000, name: str | None = None) -> torch.Tensor:
    """Token ids of a long text as one 1-D LongTensor (no special tokens), tokenized in
    paragraph-aligned chunks so that no single call exceeds the tokenizer's limits.  ``name`` (the
    corpus) is used in error messages."""
    _check_tokenizer(tokenizer)
    what = f"corpus {name!r}" if name else "the text"
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    chunk_chars = check_count(chunk_chars, "chunk_chars")
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n", start, end)
            end = cut + 1 if cut > start else end
        chunks.append(text[start:end])
        start = end
    if not chunks:
        raise CorpusError(f"cannot tokenize {what}: it is empty")
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # chunks may exceed model_max_length; windows are cut later
    try:
        enc = tokenizer(chunks, add_special_tokens=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(level)
    ids = torch.tensor([t for ids in enc for t in ids], dtype=torch.long)
    if len(ids) == 0:
        raise CorpusError(f"{what} gives no tokens")
    return ids


def load_tokens(tokenizer, source: str | Path, max_chars: int | None = None) -> torch.Tensor:
    _check_tokenizer(tokenizer)
    max_chars = check_count(max_chars, "max_chars", optional=True)
    text = load_text(source)
    return tokenize_text(tokenizer, text[:max_chars] if max_chars else text, name=str(source))


# --- splits and windows ---------------------------------------------------------------------------

@dataclass
class TokenSplits:
    """Contiguous, disjoint token ranges of one corpus."""

    ids: torch.Tensor
    ranges: dict[str, tuple[int, int]]
    name: str = ""  # the corpus, for messages

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.ranges:
            raise KeyError(f"no split {name!r}{f' in corpus {self.name!r}' if self.name else ''}; "
                           f"splits are {list(self.ranges)}")
        a, b = self.ranges[name]
        part = self.ids[a:b]
        part.minilib_part = self.describe(name)  # for messages (describe_ids); a fresh view every time
        return part

    def describe(self, name: str) -> str:
        """``"the dev split of corpus 'wiki'"``: how messages name a split."""
        return f"the {name} split of {f'corpus {self.name!r}' if self.name else 'the corpus'}"

    def assert_disjoint(self) -> None:
        spans = sorted(self.ranges.values())
        for (a0, b0), (a1, b1) in zip(spans, spans[1:]):
            if a1 < b0:
                raise AssertionError(f"token ranges overlap: [{a0},{b0}) and [{a1},{b1})")


def describe_ids(ids, name: str | None = None, default: str = "corpus part") -> str:
    """How messages name a token tensor: ``name`` when given, else the split it is when it comes
    from ``TokenSplits`` (``"the dev split of corpus 'wiki'"``), else ``default``."""
    return name or getattr(ids, "minilib_part", None) or default


def check_fractions(fractions) -> dict[str, float]:
    """Split fractions: a non-empty dict of names to positive finite numbers summing to at most 1."""
    if not isinstance(fractions, dict) or not fractions:
        raise ValueError(f"fractions must be a non-empty dict of split names to fractions, got {fractions!r}")
    for k, f in fractions.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"split names must be non-empty strings, got {k!r} in {fractions}")
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not math.isfinite(f):
            raise ValueError(f"fraction of split {k!r} must be a number in (0, 1], got {f!r}")
    total = sum(fractions.values())
    if any(f <= 0 for f in fractions.values()) or total > 1 + 1e-9:
        raise ValueError(f"fractions must be positive and sum to at most 1, got {fractions}")
    return {k: float(f) for k, f in fractions.items()}


def split_tokens(ids: torch.Tensor, fractions: dict[str, float], name: str | None = None) -> TokenSplits:
    """Cut ``ids`` into contiguous disjoint parts, in the order given (fractions sum to <= 1).
    ``name`` (the corpus) is used in error messages."""
    _check_ids(ids, "ids")
    fractions = check_fractions(fractions)
    what = f"corpus {name!r}" if name else "the corpus"
    n, start, ranges = len(ids), 0, {}
    for part, f in fractions.items():
        end = min(n, start + int(round(f * n)))
        if end <= start:
            raise CorpusError(f"split {part!r} of {what} would be empty: {what} has {n} tokens and the split "
                              f"takes {f:g} of them (it needs a corpus of at least about {math.ceil(1 / f)} tokens)")
        ranges[part] = (start, end)
        start = end
    out = TokenSplits(ids, ranges, name or "")
    out.assert_disjoint()
    return out


def calibration_windows(ids: torch.Tensor, n: int, seqlen: int, seed: int = 0,
                        name: str | None = None) -> torch.Tensor:
    """``n`` random windows ``[n, seqlen]`` from ``ids``, seeded (as SparseGPT/Wanda sample C4).
    ``name`` (e.g. "calib split of 'c4'") is used in error messages."""
    _check_ids(ids, "ids")
    n, seqlen = check_count(n, "n"), check_count(seqlen, "seqlen")
    seed = check_count(seed, "seed", minimum=0)
    if len(ids) < seqlen:
        raise CorpusError(f"{describe_ids(ids, name)} has {len(ids)} tokens, too short for windows of {seqlen}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen + 1, (n,), generator=g)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None,
                 name: str | None = None) -> torch.Tensor:
    """Contiguous, non-overlapping windows ``[nw, seqlen]`` (the SparseGPT/Wanda protocol);
    ``max_windows=None`` keeps them all."""
    _check_ids(ids, "ids")
    seqlen = check_count(seqlen, "seqlen")
    max_windows = check_count(max_windows, "max_windows", optional=True)
    nw = len(ids) // seqlen
    if nw < 1:
        raise CorpusError(f"{describe_ids(ids, name)} has {len(ids)} tokens, too short for one window of {seqlen}")
    if max_windows is not None:
        nw = min(nw, max_windows)
    return ids[: nw * seqlen].view(nw, seqlen)


# The default protocol: calibration from the first part, evaluation from the held-out end.
DEFAULT_FRACTIONS = {"calib": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1}


def corpus_splits(tokenizer, source: str | Path, fractions: dict[str, float] | None = None,
                  max_chars: int | None = None) -> TokenSplits:
    """Tokenize a corpus and cut it into disjoint parts (default: calib/train/dev/test)."""
    fractions = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    _check_source(source, "corpus")
    return split_tokens(load_tokens(tokenizer, source, max_chars), fractions, name=str(source))


def calibration_set(tokenizer, corpus: str | Path = "c4", nsamples: int = 32, seqlen: int = 512,
                    seed: int = 0) -> torch.Tensor:
    """``nsamples`` seeded random windows ``[nsamples, seqlen]`` from the ``calib`` split of ``corpus``
    (the SparseGPT/Wanda calibration protocol, on held-in text only)."""
    nsamples, seqlen = check_count(nsamples, "nsamples"), check_count(seqlen, "seqlen")
    seed = check_count(seed, "seed", minimum=0)
    return calibration_windows(corpus_splits(tokenizer, corpus)["calib"], nsamples, seqlen, seed)
