"""Checkpoint sizes of the export formats, and how often the exported tokenizer of a pruned
vocabulary gives ``RemappedTokenizer``'s ids.

    python benchmarks/bench_export.py [--model smollm2-135m] [--out results/export_sizes.json]

Sizes: the model is pruned by magnitude (no calibration needed; the format sizes do not depend on
which weights are zero, only on how many and in what pattern) and exported as

* dense fp32 (``export_hf``, the reference),
* 50% unstructured, stored dense and as ``sparse-bitmask``,
* 2:4, stored as ``sparse-24-bitmask``,
* 2:4 + 4-bit per-channel (round to nearest), ``pack-quantized`` and ``naive-quantized``,

and each folder's safetensors bytes are read from disk.  Every export checks its own round trip.

Tokenizer: the vocabulary is pruned to the tokens of the first half of a corpus (the contextual
study's rule, ``mask_vocab``), then on the last 10% of the corpus every pre-tokenized word that
``RemappedTokenizer`` encodes without fallback is compared with the exported tokenizer's ids
(share with a Wilson 95% interval).  Writes ``--out`` (JSON) and rewrites the tables of
``--docs`` (docs/export.md, between the ``export-tables`` markers) from it; ``--docs-only`` rebuilds
the tables from an existing JSON without measuring.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from minilib.export import export_compressed, export_hf, remap_tokenizer
from minilib.io import write_text
from minilib.models import load, token_counts
from minilib.models.vocab import RemappedTokenizer, make_vocab_map
from minilib.prune import mask_vocab, prune_model
from minilib.stats import wilson_interval

CASES = [  # name, prune_model kwargs, export_compressed kwargs (None: export_hf)
    ("dense fp32", None, None),
    ("50% unstructured, dense", dict(sparsity=0.5), dict()),
    ("50% unstructured, sparse-bitmask", dict(sparsity=0.5), dict(sparse_format="sparse-bitmask")),
    ("2:4, sparse-24-bitmask", dict(nm=(2, 4)), dict(sparse_format="sparse-24-bitmask")),
    ("2:4 + 4-bit, pack-quantized", dict(nm=(2, 4), wbits=4), dict(quant_format="pack-quantized")),
    ("2:4 + 4-bit, naive-quantized", dict(nm=(2, 4), wbits=4), dict(quant_format="naive-quantized")),
]


def sizes(model_name: str, tmp: Path) -> list[dict]:
    rows = []
    for name, pkw, ekw in CASES:
        m = load(model_name, device="cpu")
        rep = prune_model(m.model, "magnitude", **pkw) if pkw is not None else None
        out = tmp / name.replace(" ", "_").replace(",", "").replace(":", "-").replace("%", "pct").replace("+", "")
        t = time.perf_counter()
        if ekw is None:
            info = export_hf(m.model, m.tokenizer, out)
        else:
            info = export_compressed(m.model, m.tokenizer, out, rep, **ekw)
        row = {"case": name, "sparse_format": info.get("sparse_format", "dense"),
               "quant_format": info.get("quant_format"), "wbits": info.get("wbits", 16),
               "structure": info.get("structure"), "sparsity": info.get("sparsity", 0.0),
               "layer_params": info.get("layer_params"), "weights_bytes": info["bytes"]["weights"],
               "total_bytes": info["bytes"]["total"], "export_s": time.perf_counter() - t,
               "max_abs_diff": info.get("max_abs_diff", 0.0)}
        rows.append(row)
        print(f"{name:36s} {row['weights_bytes'] / 2**20:9.1f} MiB  ({row['export_s']:.1f} s)", flush=True)
        for f in sorted(out.rglob("*"), reverse=True):  # free the disk before the next case
            f.unlink() if f.is_file() else f.rmdir()
        out.rmdir()
        del m
    dense = rows[0]["weights_bytes"]
    for r in rows:
        r["ratio_to_dense"] = r["weights_bytes"] / dense
    return rows


def tokenizer_agreement(tokenizer, corpus: str) -> dict:
    from minilib.data import load_text
    text = load_text(corpus)
    n = len(text)
    calib, held = text[: n // 2], text[n - n // 10:]
    ids = torch.tensor(tokenizer(calib, add_special_tokens=False)["input_ids"])
    keep = ~mask_vocab(token_counts(ids, len(tokenizer)), tokenizer)
    rtok = RemappedTokenizer(tokenizer, make_vocab_map(keep, tokenizer))
    new, info = remap_tokenizer(rtok)
    backend = tokenizer.backend_tokenizer
    words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(held)]
    same = clean = fb_words = 0
    ref_tokens = new_tokens = 0
    for w in words:
        rtok.reset_counts()
        ref = rtok.map_ids([t.id for t in backend.model.tokenize(w)])
        got = [t.id for t in new.backend_tokenizer.model.tokenize(w)]
        ref_tokens += len(ref)
        new_tokens += len(got)
        if rtok.fallback_count:
            fb_words += 1
            continue
        clean += 1
        same += got == ref
    lo, hi = wilson_interval(same, clean)
    enc = new(held)["input_ids"]
    return {"corpus": corpus, "kept": info["vocab_after"], "vocab": info["vocab_before"],
            "fallback": rtok.vmap.fallback, "merges_kept": info.get("merges_after"),
            "unreachable_tokens": info.get("unreachable_tokens"), "lossless": info["lossless"],
            "roundtrip": new.decode(enc) == held, "words": len(words), "words_fallback": fb_words,
            "words_clean": clean, "same_ids": same, "agreement": same / max(1, clean), "ci95_low": lo,
            "ci95_high": hi, "tokens_ratio": new_tokens / max(1, ref_tokens)}


BEGIN, END = "<!-- export-tables:begin (benchmarks/bench_export.py) -->", "<!-- export-tables:end -->"


def docs_tables(result: dict) -> str:
    """The two Markdown tables of docs/export.md, from the benchmark's JSON."""
    mib = 2 ** 20
    out = [f"Checkpoint sizes, {result['model']} (safetensors bytes on disk; compressed-tensors "
           f"{result['compressed_tensors']}, transformers {result['transformers']}):", "",
           "| model | sparse format | quantization | weights (MiB) | vs dense fp32 | export (s) |",
           "|---|---|---|---|---|---|"]
    for r in result["sizes"]:
        q = f"{r['wbits']}-bit {r['quant_format']}" if r["quant_format"] else "none (fp32)"
        out.append(f"| {r['case'].split(',')[0]} | {r['sparse_format']} | {q} | {r['weights_bytes'] / mib:.1f} | "
                   f"{r['ratio_to_dense']:.3f} | {r['export_s']:.1f} |")
    out += ["", "Exported tokenizer of a pruned vocabulary vs `RemappedTokenizer` (vocabulary: tokens of the "
            "first half of the corpus; words: the last 10%, pre-tokenized; *clean* = encoded by "
            "`RemappedTokenizer` without fallback):", "",
            "| tokenizer | corpus | kept / vocabulary | fallback | unreachable kept tokens | clean words | "
            "same ids [95% CI] | tokens vs RemappedTokenizer | decode(encode(text)) == text |",
            "|---|---|---|---|---|---|---|---|---|"]
    for a in result["tokenizer"]:
        out.append(f"| {a['tokenizer']} | {a['corpus']} | {a['kept']:,} / {a['vocab']:,} | {a['fallback']} | "
                   f"{a['unreachable_tokens']:,} | {a['words_clean']:,} | {a['agreement']:.4f} "
                   f"[{a['ci95_low']:.4f}, {a['ci95_high']:.4f}] | x{a['tokens_ratio']:.3f} | "
                   f"{'yes' if a['roundtrip'] else 'no'} |")
    return "\n".join(out)


def update_docs(docs: Path, result: dict) -> None:
    text = docs.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{docs} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_text(docs, f"{head}{BEGIN}\n{docs_tables(result)}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--corpora", default="tiny,wiki")
    ap.add_argument("--out", default="results/export_sizes.json")
    ap.add_argument("--docs", default="docs/export.md")
    ap.add_argument("--docs-only", action="store_true", help="rebuild the docs tables from --out, measure nothing")
    args = ap.parse_args()
    if args.docs_only:
        update_docs(Path(args.docs), json.loads(Path(args.out).read_text()))
        print(f"updated {args.docs}")
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_export.") as tmp:
        rows = sizes(args.model, Path(tmp))
    from minilib.models.tokenizers import gpt2_tokenizer
    toks = {args.model: load(args.model, device="cpu").tokenizer, "gpt2": gpt2_tokenizer()}
    agreement = []
    for tname, tok in toks.items():
        for corpus in args.corpora.split(","):
            a = {"tokenizer": tname, **tokenizer_agreement(tok, corpus)}
            agreement.append(a)
            print(f"tokenizer {tname:14s} {corpus:6s} kept {a['kept']:6d}/{a['vocab']}  same ids on "
                  f"{a['same_ids']}/{a['words_clean']} clean words = {a['agreement']:.4f} "
                  f"[{a['ci95_low']:.4f}, {a['ci95_high']:.4f}]  tokens x{a['tokens_ratio']:.3f}", flush=True)
    import compressed_tensors
    import transformers
    result = {"model": args.model, "torch": torch.__version__, "transformers": transformers.__version__,
              "compressed_tensors": compressed_tensors.__version__, "sizes": rows, "tokenizer": agreement}
    write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    if Path(args.docs).is_file():
        update_docs(Path(args.docs), result)
        print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
