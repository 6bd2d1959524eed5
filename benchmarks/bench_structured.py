"""CPU forward latency of FFN-pruned models relative to the dense one, beside the FLOP-count ideal.

    python benchmarks/bench_structured.py [--model smollm2-135m] [--seqlen 128] [--repeats 5]

Neurons are removed physically (random, seeded, independently per layer) at 10/30/50%.  The ideal
ratio is FLOPs(pruned)/FLOPs(dense) per forward: 2 * (weights of every linear layer, LM head
included) per token, plus the attention score/value products (4 * T * hidden per layer and token,
causal half for decoders).  Timings on a shared machine are noisy: medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

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
    t = time.perf_counter()
    model(input_ids=x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)  # 1 is stable on a shared machine
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.model)
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


if __name__ == "__main__":
    main()
