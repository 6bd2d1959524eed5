"""What pruning buys at inference: latency and throughput per format and phase, memory and checkpoint size.

    python benchmarks/bench_inference.py [--model smollm2-135m] [--quick] [--out results/bench_inference.json]

Formats (each from the same dense model, on the device the benchmark runs on):

* ``dense``                -- the model as loaded;
* ``dense with zeros``     -- 50% unstructured (magnitude: which weights are zero does not change the
  dense kernels' work), still dense tensors;
* ``2:4 semi-structured``  -- 2:4 (magnitude) in PyTorch's semi-structured format (``to_semi_structured``;
  CUDA only, in fp16 or bf16: recorded as not measured elsewhere);
* ``FFN uniform``          -- 30% of every FFN's neurons removed (max-product score), equal widths;
* ``FFN non-uniform``      -- 30% overall, later blocks pruned harder (a linear layer profile);
* ``vocabulary``           -- the embedding and LM head cut to the tokens of the wiki corpus;
* ``<format>, exported``   -- each physically smaller format exported to a plain Hugging Face folder
  (``export_hf``) and loaded back by stock transformers: non-uniform FFN widths come back padded to the
  widest layer, so what the export saves is measured, not assumed.

Every format is timed in one dtype (``--dtype``; ``auto``: float16 on CUDA, so that the 2:4 format's
ratio is to a dense model of its own dtype, float32 on the CPU); sizes are those of the models as built
and saved.  Phases: prefill of one sequence at each ``--prefill`` length (no KV cache), and decoding (KV cache,
greedy) of ``--new-tokens`` tokens after a 16-token prompt at each ``--batch`` size, reported as
seconds per token step and tokens per second.  Rounds are interleaved over the formats (a shared
machine's drift hits each alike); the ratio to dense is the median over rounds of format / dense in
the same round.  Memory: parameter bytes; checkpoint: the safetensors bytes of the saved folder.
Writes ``--out`` with every repeat, the device and the numerics record, and a figure
(``figures/bench_inference.pdf``/``.png``); ``python -m tools.tables`` renders its table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minilib.determinism import numerics_record
from minilib.device import Timer
from minilib.models import load, save_model, token_counts
from minilib.prune import mask_neurons, mask_vocab, prune_model, remove_neurons, remove_vocab, score_neurons_maxprod
from minilib.tables.benchmarks import environment, write_bench

PROMPT = 16


def param_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def folder_weight_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*.safetensors"))


def build_formats(model_name: str, device: torch.device, tmp: Path,
                  half: torch.dtype = torch.float16) -> tuple[dict, dict]:
    """``{name: model}`` and ``{name: info}`` (params, bytes, checkpoint bytes, what was done); the 2:4
    semi-structured format (CUDA only) is built in ``half`` (float16 or bfloat16, what its kernels take)."""
    from transformers import AutoModelForCausalLM

    from minilib.data import corpus_splits
    from minilib.export import export_hf
    models, info = {}, {}

    def add(name, model, tok=None, ckpt=None, note=""):
        models[name] = model.to(device).eval()
        if ckpt is None and tok is not None:
            ckpt = tmp / name.replace(" ", "_").replace(",", "").replace(":", "-")
            save_model(model, tok, ckpt)
        info[name] = {"params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
                      "param_bytes": param_bytes(model), "note": note,
                      "checkpoint_bytes": folder_weight_bytes(ckpt) if ckpt is not None else None}

    def exported(name, model, tok):
        out = tmp / (name.replace(" ", "_") + "_hf")
        rep = export_hf(model, tok, out)
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=next(model.parameters()).dtype)
        add(f"{name}, exported", hf, ckpt=out,
            note=f"stock transformers; FFN width {rep['ffn_width']}, padding {rep['padding_params']:,} params")

    base = load(model_name, device="cpu")
    add("dense", base.model, base.tokenizer)
    m = load(model_name, device="cpu")
    prune_model(m.model, "magnitude", 0.5, device="cpu")
    add("dense with zeros", m.model, m.tokenizer, note="50% unstructured magnitude, dense tensors")
    if device.type == "cuda":
        from minilib.prune import to_semi_structured
        m = load(model_name, device="cpu")
        prune_model(m.model, "magnitude", nm=(2, 4), device="cpu")
        semi = m.model.to(device=device, dtype=half)
        to_semi_structured(semi)
        add("2:4 semi-structured", semi, note=f"{str(half).removeprefix('torch.')}, torch semi-structured sparse")
    for name, profile in (("FFN uniform", None), ("FFN non-uniform", "linear")):
        m = load(model_name, device="cpu")
        scores = score_neurons_maxprod(m.model)
        prof = None if profile is None else np.linspace(0.5, 1.5, len(scores))
        remove_neurons(m.model, mask_neurons(scores, 0.3, profile=prof))
        add(name, m.model, m.tokenizer, note="30% of FFN neurons removed" + (", later blocks more" if prof is not None
                                                                              else ", equal widths"))
        exported(name, m.model, m.tokenizer)
    m = load(model_name, device="cpu")
    ids = corpus_splits(m.tokenizer, "wiki")["train"]
    counts = token_counts(ids, m.model.get_input_embeddings().num_embeddings)
    remap, _ = remove_vocab(m.model, m.tokenizer, mask_vocab(counts, m.tokenizer, min_tokens=256))
    add("vocabulary", m.model, remap,
        note=f"{m.model.get_input_embeddings().num_embeddings:,} tokens kept (those of wiki)")
    exported("vocabulary", m.model, remap)
    return models, info


@torch.no_grad()
def time_prefill(model, x) -> float:
    timer = Timer(x.device)
    with timer("t"):
        model(input_ids=x, use_cache=False)
    return timer.totals["t"]


@torch.no_grad()
def time_decode(model, prompt, new_tokens: int) -> float:
    """Seconds per token step of greedy decoding with the KV cache (the prompt's prefill not timed)."""
    out = model(input_ids=prompt, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    timer = Timer(prompt.device)
    with timer("t"):
        for _ in range(new_tokens):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
    return timer.totals["t"] / new_tokens


def measure(models: dict, device, prefill: list[int], batches: list[int], new_tokens: int, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    vocab = min(m.get_input_embeddings().num_embeddings for m in models.values())  # ids every format has
    cases = [("prefill", T, 1) for T in prefill] + [("decode", PROMPT, b) for b in batches]
    rows = []
    for phase, T, B in cases:
        x = torch.randint(0, vocab, (B, T), generator=g).to(device)
        run = (lambda mod, x=x: time_prefill(mod, x)) if phase == "prefill" else \
            (lambda mod, x=x: time_decode(mod, x, new_tokens))
        for mod in models.values():
            run(mod)  # warm-up
        times = {n: [] for n in models}
        for _ in range(repeats):
            for n, mod in models.items():
                times[n].append(run(mod))
        for n in models:
            med = statistics.median(times[n])
            ratio = statistics.median(t / d for t, d in zip(times[n], times["dense"]))
            tokens = T * B if phase == "prefill" else B
            rows.append({"format": n, "phase": phase, "tokens": T, "batch": B, "repeats": times[n],
                         "median_s": med, "ratio_to_dense": ratio, "tokens_per_s": tokens / med})
        print(f"{phase} T={T} B={B}: " + ", ".join(f"{n} {r['ratio_to_dense']:.2f}x" for n, r in
                                                    zip(models, rows[-len(models):])))
    return rows


def figure(res: dict, path_stem: str, figures_dir: str | None) -> list[Path]:
    """The figure of ``res``, drawn by ``minilib.plotting.plot_bench_inference`` (what
    ``python -m minilib.figures --only bench_inference`` draws from results/bench_inference.json)."""
    from minilib.plotting import plot_bench_inference, save_figure
    return save_figure(plot_bench_inference(res), path_stem, figures_dir)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda'")
    ap.add_argument("--prefill", type=int, nargs="+", default=None, help="prefill lengths (default 512 2048)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="prefill 128 and 512 (unless --prefill), decode 8 tokens, "
                    "3 rounds")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                    help="dtype every format is timed in ('auto': float16 on CUDA, where the 2:4 semi-structured "
                         "kernels need it, so that its ratio is to a dense model of the same dtype; float32 on the CPU)")
    ap.add_argument("--out", default="results/bench_inference.json")
    ap.add_argument("--figures-dir", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.prefill, a.new_tokens, a.repeats = a.prefill or [128, 512], 8, 3
    a.prefill = a.prefill or [512, 2048]
    for name, vals in (("--prefill", a.prefill), ("--batch", a.batch), ("--new-tokens", [a.new_tokens]),
                       ("--repeats", [a.repeats])):
        if any(v < 1 for v in vals):
            ap.error(f"{name} must be >= 1, got {vals}")
    if a.threads:
        torch.set_num_threads(a.threads)
    from minilib.device import resolve_device
    device = resolve_device(a.device)
    t0 = time.perf_counter()
    dtype = (torch.float16 if device.type == "cuda" else torch.float32) if a.dtype == "auto" else getattr(torch, a.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        half = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16
        models, info = build_formats(a.model, device, Path(tmp), half)   # sizes as built and saved
        for name, m in models.items():   # timed in one dtype: a ratio to dense is the format's, not the dtype's
            if name != "2:4 semi-structured":
                m.to(dtype)
        rows = measure(models, device, a.prefill, a.batch, a.new_tokens, a.repeats)
    res = {"model": a.model, "dtype": str(dtype).removeprefix("torch."), "repeats": a.repeats, "new_tokens": a.new_tokens,
           "prompt": PROMPT, "formats": info, "rows": rows, "not_measured": [] if device.type == "cuda" else
           [{"format": "2:4 semi-structured", "why": "PyTorch's semi-structured kernels need CUDA"}],
           "numerics": numerics_record(), "wall_s": time.perf_counter() - t0}
    res["env"] = environment(device, torch.get_num_threads())
    write_bench(a.out, "bench_inference", res["env"], {k: v for k, v in res.items() if k != "env"})
    figure(res, "bench_inference", a.figures_dir)
    print(f"wrote {a.out} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
