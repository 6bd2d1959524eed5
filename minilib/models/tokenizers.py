"""The real GPT-2 tokenizer, rebuilt offline from the ``gpt2.tiktoken`` file shipped by openai-whisper.

``tiktoken`` files list each token's bytes with its rank; Hugging Face's byte-level BPE wants a
``vocab.json`` (token string -> id) and a ``merges.txt`` (ordered pairs).  The merge that creates a
token of rank r is found by running BPE on its bytes with only the merges of rank < r: that ends in
exactly two parts, and those are the pair.  No library does this conversion offline, hence this
module.
"""

from __future__ import annotations

import base64
import binascii
import json
from functools import lru_cache
from pathlib import Path

from minilib import assets

EOT = "<|endoftext|>"
EOT_ID = 50256


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _merge_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best, best_i = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            return parts
        parts = parts[:best_i] + [parts[best_i] + parts[best_i + 1]] + parts[best_i + 2:]


def tiktoken_to_hf(tiktoken_file: Path, out_dir: Path) -> None:
    """Write ``vocab.json`` and ``merges.txt`` for GPT-2 from a ``.tiktoken`` rank file."""
    ranks: dict[bytes, int] = {}
    path = Path(tiktoken_file)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise assets.AssetError(f"{path}: cannot read the tiktoken file ({type(e).__name__}: {e})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            token, rank = base64.b64decode(tok, validate=True), int(rank)
        except (ValueError, binascii.Error):
            raise assets.AssetError(f"{path}:{i}: expected '<base64 token> <rank>', got {line[:60]!r}") from None
        if token in ranks or not token:
            raise assets.AssetError(f"{path}:{i}: {'empty' if not token else 'duplicate'} token {token!r}")
        ranks[token] = rank
    if len(ranks) != EOT_ID:
        raise assets.AssetError(f"{tiktoken_file} has {len(ranks)} tokens, expected {EOT_ID} (GPT-2)")
    if sorted(ranks.values()) != list(range(EOT_ID)):
        raise assets.AssetError(f"{tiktoken_file}: ranks are not 0..{EOT_ID - 1}, each once")
    enc = bytes_to_unicode()
    to_str = lambda b: "".join(enc[x] for x in b)  # noqa: E731
    vocab = {to_str(t): r for t, r in ranks.items()}
    vocab[EOT] = EOT_ID
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        parts = _merge_parts(ranks, tok, rank)
        if len(parts) != 2:
            raise assets.AssetError(f"token of rank {rank} is not the merge of two tokens")
        merges.append(f"{to_str(parts[0])} {to_str(parts[1])}")
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def gpt2_tokenizer_dir() -> Path:
    """A Hugging Face tokenizer folder for GPT-2, built once in the cache."""
    src = assets.fetch("gpt2-bpe") / "gpt2.tiktoken"

    def build(stage: Path) -> None:
        from transformers import GPT2TokenizerFast
        tiktoken_to_hf(src, stage)
        vocab = json.loads((stage / "vocab.json").read_text(encoding="utf-8"))
        merges = [tuple(line.split(" "))
                  for line in (stage / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]]
        tok = GPT2TokenizerFast(vocab=vocab, merges=merges, unk_token=EOT, bos_token=EOT, eos_token=EOT,
                                model_max_length=1024)
        # a build that went wrong is refused here, never cached: GPT-2's own ids for a known text
        # (tiktoken's gpt2 encoding gives [15496, 995, 0] for "Hello world!")
        got = tok("Hello world!").input_ids
        if len(tok) != EOT_ID + 1 or got != [15496, 995, 0]:
            raise assets.AssetError(f"the rebuilt GPT-2 tokenizer is wrong: {len(tok)} tokens, "
                                    f"'Hello world!' -> {got}, expected 50257 and [15496, 995, 0]")
        tok.save_pretrained(stage)

    return assets.derived("gpt2-tokenizer", build, inputs={"tiktoken": "openai-whisper==20250625", "v": 2})


def gpt2_tokenizer():
    """The real GPT-2 tokenizer (``GPT2TokenizerFast``), offline."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir())


def read_tokenizer(path, **kwargs):
    """The tokenizer saved in the folder ``path`` by ``save_pretrained``, read back as the class that
    wrote it (``tokenizer_class`` of its ``tokenizer_config.json``; ``AutoTokenizer`` without one).

    For folders this library wrote (``save_model``, the exports).  ``AutoTokenizer`` ignores the
    saved class for the model types transformers 5.x pins to their own tokenizer class (``qwen2``:
    ``Qwen2Tokenizer``), which it rebuilds from the vocabulary and merges alone, with its own
    pre-tokenizer and without ``ignore_merges``: other ids than the ones saved (a GPT-2 tokenizer
    splits digits differently, an exported pruned vocabulary falls apart into bytes)."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
    cfg = Path(path) / "tokenizer_config.json"
    name = json.loads(cfg.read_text()).get("tokenizer_class") if cfg.is_file() else None
    cls = tokenizer_class_from_name(name) if isinstance(name, str) and name else None
    return (cls or AutoTokenizer).from_pretrained(path, **kwargs)
