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

import torch

from minilib.eval import forward_throughput, layer_sparsity
from minilib.models import load
from minilib.models.adapters import adapter_for
from minilib.pruning import apply_ffn_masks, mask_ffn, score_random


def forward_flops(model, seqlen: int, is_decoder: bool) -> float:
    lin = float((layer_sparsity(model)["params"]).sum())
    a = adapter_for(model)
    attn = 4 * seqlen * model.config.hidden_size * a.n_blocks(model) * (0.5 if is_decoder else 1.0)
    return seqlen * (2 * lin + attn)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.model)
    dense_flops = forward_flops(m.model, a.seqlen, m.adapter.is_decoder)
    dense = forward_throughput(m.model, a.seqlen, 1, a.repeats)["latency_s"]
    print(f"{a.model}: seqlen {a.seqlen}, {a.threads} threads, median of {a.repeats}; dense latency {dense * 1e3:.1f} ms")
    print(f"{'FFN removed':>12s} {'latency ms':>11s} {'measured':>9s} {'ideal (FLOPs)':>14s}")
    for ratio in (0.1, 0.3, 0.5):
        pm = copy.deepcopy(m.model)
        apply_ffn_masks(pm, mask_ffn(score_random(pm, 0), ratio), verbose=False)
        lat = forward_throughput(pm, a.seqlen, 1, a.repeats)["latency_s"]
        ideal = forward_flops(pm, a.seqlen, m.adapter.is_decoder) / dense_flops
        print(f"{ratio:>12.0%} {lat * 1e3:>11.1f} {lat / dense:>9.3f} {ideal:>14.3f}")
        del pm


if __name__ == "__main__":
    main()
