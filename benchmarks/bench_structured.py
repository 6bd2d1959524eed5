"""Forward latency of FFN-pruned models relative to the dense one, beside the FLOP-count ideal.

    python benchmarks/bench_structured.py [--model smollm2-135m] [--seqlen 128] [--repeats 5]

On CPU (always): fp32, batch 1.  On CUDA (when present) also fp16 with a batch of ``--gpu-batch``
sequences: 30% random removal with the kept widths as they fall, and rounded to multiples of 8
(``remove_neurons(..., multiple_of=8, scores=...)``), because fp16 tensor-core GEMMs are slow on
widths that are not multiples of 8 (measured on an H100: 1.35x the dense latency unrounded, 0.93x rounded).

Neurons are removed physically (random, seeded, independently per layer) at 10/30/50%.  The ideal
ratio is FLOPs(pruned)/FLOPs(dense) per forward: 2 * (weights of every linear layer, LM head
included) per token, plus the attention score/value products (4 * T * hidden per layer and token,
causal half for decoders).  Timings on a shared machine are noisy: medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings

import torch

from minilib.eval import layer_sparsity
from minilib.models import load
from minilib.models.adapters import adapter_for
from minilib.prune import mask_neurons, remove_neurons, score_neurons_random


def forward_flops(model, seqlen: int, is_decoder: bool) -> float:
    lin = float((layer_sparsity(model)["params"]).sum())
    a = adapter_for(model)
    attn = 4 * seqlen * model.config.hidden_size * a.n_blocks(model) * (0.5 if is_decoder else 1.0)
    return seqlen * (2 * lin + attn)


@torch.no_grad()
def _time(model, x) -> float:
    from minilib.device import Timer
    timer = Timer(x.device)  # synchronizes CUDA
    with timer("t"):
        model(input_ids=x)
    return timer.totals["t"]


def gpu_widths(name: str, seqlen: int, batch: int, repeats: int) -> None:
    """fp16 on CUDA: dense vs 30% random FFN removal, widths as they fall vs rounded to multiples of 8."""
    from minilib.models import ffn_widths
    from minilib.prune.apply import WidthWarning
    base = load(name, device="cuda", dtype=torch.float16).model.eval()
    models = {"dense": base}
    for label, mult in (("30% random", 1), ("30% random, widths rounded to 8", 8)):
        pm = copy.deepcopy(base)
        scores = score_neurons_random(pm, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WidthWarning)
            remove_neurons(pm, mask_neurons(scores, 0.3), multiple_of=mult, scores=scores if mult > 1 else None)
        models[label] = pm.eval()
    x = torch.randint(0, base.get_input_embeddings().num_embeddings, (batch, seqlen), device="cuda",
                      generator=torch.Generator(device="cuda").manual_seed(0))
    for mod in models.values():
        for _ in range(3):
            _time(mod, x)
    times = {k: [] for k in models}
    for _ in range(repeats):
        for k, mod in models.items():
            times[k].append(_time(mod, x))
    dense = statistics.median(times["dense"])
    print(f"\nCUDA fp16, batch {batch} x {seqlen}, {repeats} interleaved rounds; dense median {dense * 1e3:.2f} ms")
    for k, mod in models.items():
        ratio = statistics.median(t / d for t, d in zip(times[k], times["dense"]))
        w = ffn_widths(mod)
        print(f"{k:>34s}: {statistics.median(times[k]) * 1e3:8.2f} ms, ratio {ratio:.3f}; widths "
              f"{min(w)}-{max(w)}, multiples of 8: {sum(v % 8 == 0 for v in w)}/{len(w)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)  # 1 is stable on a shared machine
    ap.add_argument("--gpu-batch", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.model, device="cpu")  # the CPU part; CUDA below
    ratios = (0.1, 0.3, 0.5)
    models = {0.0: m.model}
    for r in ratios:  # random, seeded, independent per layer
        pm = copy.deepcopy(m.model)
        remove_neurons(pm, mask_neurons(score_neurons_random(pm, 0), r))
        models[r] = pm.eval()
    dense_flops = forward_flops(m.model, a.seqlen, m.adapter.is_decoder)
    x = torch.randint(0, m.model.get_input_embeddings().num_embeddings, (1, a.seqlen),
                      generator=torch.Generator().manual_seed(0))
    for mod in models.values():
        _time(mod, x)  # warm-up
    # interleaved rounds (dense, 10%, 30%, 50%, dense, ...) so that load drift on a shared machine
    # hits every model alike; the ratio is the median over rounds of pruned/dense in the same round
    times = {r: [] for r in models}
    for _ in range(a.repeats):
        for r, mod in models.items():
            times[r].append(_time(mod, x))
    dense = statistics.median(times[0.0])
    print(f"{a.model}: seqlen {a.seqlen}, batch 1, {a.threads} threads, {a.repeats} interleaved rounds; "
          f"dense median {dense * 1e3:.1f} ms")
    print(f"{'FFN removed':>12s} {'median ms':>10s} {'measured ratio':>15s} {'ideal (FLOPs)':>14s}")
    for r in ratios:
        ratio = statistics.median(t / d for t, d in zip(times[r], times[0.0]))
        ideal = forward_flops(models[r], a.seqlen, m.adapter.is_decoder) / dense_flops
        print(f"{r:>12.0%} {statistics.median(times[r]) * 1e3:>10.1f} {ratio:>15.3f} {ideal:>14.3f}")
    if torch.cuda.is_available():
        gpu_widths(a.model, a.seqlen * 4, a.gpu_batch, a.repeats)
    else:
        print("no CUDA: the fp16 width-rounding comparison is skipped")


if __name__ == "__main__":
    main()
