"""SparseGPT cost on the embedded decoder: wall time, peak memory, forward passes vs solver.

    python benchmarks/bench_sparsegpt.py [--nsamples 32 --seqlen 512 --threads 2 --solver-blocks 2]

1. One plain forward pass over the calibration set (the unit of cost).
2. The whole SparseGPT 50% run (``prune_model``): wall time, breakdown (capture / block forwards /
   Hessian accumulation / solver) and peak RSS; total in forward-pass equivalents.
3. Solver only, on the real Hessians of the first ``--solver-blocks`` blocks: ours (shared Hessian per
   input, sub-blocked column walk) against a straightforward per-layer port of the reference
   algorithm (Frantar & Alistarh, Algorithm 1; ``tests/prune/reference_sparsegpt.py``), same weights and
   Hessians: median times, ratio, and the reconstruction errors of both.
4. On CUDA only: dense vs 2:4 semi-structured matmul on the model's layer shapes.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import torch

import sys
from pathlib import Path

from minilib.calib import capture_block_inputs
from minilib.data import calibration_set
from minilib.hooks import forward_hooks
from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.prune import SparseGPT, prune_model, reconstruction_stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "prune"))
from reference_sparsegpt import reference_sparsegpt  # noqa: E402  (the plain port the tests check against)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--solver-blocks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-full", action="store_true", help="only the solver comparison")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads={torch.get_num_threads()} model={a.model} calibration={a.nsamples}x{a.seqlen}")
    model, tok, ad = load(a.model)
    calib = calibration_set(tok, "c4", a.nsamples, a.seqlen, 0)

    if not a.skip_full:
        t = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(calib), 8):
                model(input_ids=calib[s:s + 8])
        fwd = time.perf_counter() - t
        print(f"\n[1] one forward pass over the calibration set: {fwd:.1f} s "
              f"({calib.numel() / fwd:.0f} tok/s); peak RSS so far {peak_rss_gb():.2f} GB")
        rep = prune_model(copy.deepcopy(model), "sparsegpt", 0.5, calib=calib)
        tm = rep.timings
        other = tm["total_s"] - tm["capture_s"] - tm["forward_s"] - tm["stats_s"] - tm["solve_s"]
        print(f"[2] SparseGPT 50%: total {tm['total_s']:.1f} s = {tm['total_s'] / fwd:.2f} forward passes; "
              f"peak RSS {peak_rss_gb():.2f} GB (model {sum(p.numel() for p in model.parameters()) * 4 / 2**30:.2f} GB, "
              f"calibration activations {calib.numel() * model.config.hidden_size * 4 / 2**30:.3f} GB)")
        for k in ("capture_s", "forward_s", "stats_s", "solve_s"):
            print(f"    {k:10s} {tm[k]:8.1f} s  ({tm[k] / fwd:.2f} forward passes)")
        print(f"    {'report':10s} {other:8.1f} s  (reconstruction errors, block moves)")
        print(f"    solver / block forwards = {tm['solve_s'] / tm['forward_s']:.2f}; "
              f"achieved sparsity {rep.overall['sparsity']:.4f}")

    # --- [3] solver only on real Hessians --------------------------------------------------------
    cap = capture_block_inputs(model, calib[: max(4, 2048 // a.seqlen + 1)])
    inps = cap.hidden
    ours_t, ref_t, rows = 0.0, 0.0, []
    for bi in range(a.solver_blocks):
        block = ad.blocks(model)[bi]
        layers = ad.linear_layers(block)
        hs = {n: SparseGPT({n: m}) for n, m in layers.items()}
        with forward_hooks({m: (lambda s: lambda mod, i, o: s.add_batch(i[0]))(hs[n]) for n, m in layers.items()}):
            outs = [block(h, *aa, **kw) for h, (aa, kw) in zip(inps, cap.args[bi])]
        groups = {}
        for n in layers:  # same Hessian <=> same input
            key = next((g for g in groups if torch.equal(hs[g].H, hs[n].H)), n)
            groups.setdefault(key, []).append(n)
        W0 = {n: weight_oi(m).clone() for n, m in layers.items()}

        def ours():  # solver time as the solver measures it (without its error report)
            t = 0.0
            for lead, g in groups.items():
                for n in g:
                    weight_oi(layers[n]).copy_(W0[n])
                s = SparseGPT({n: layers[n] for n in g})
                s.H, s.tokens = hs[lead].H.clone(), hs[lead].tokens
                t += sum(st["time_s"] for st in s.prune(0.5))
            return t, {n: weight_oi(layers[n]).clone() for n in layers}

        def ref():
            return {n: reference_sparsegpt(W0[n], hs[n].hessian(), 0.5) for n in layers}

        runs = [ours() for _ in range(a.repeats)]
        t_o, w_o = statistics.median(r[0] for r in runs), runs[-1][1]
        t_r, w_r = timed(ref, a.repeats)
        ours_t += t_o
        ref_t += t_r
        for n in layers:
            e_o = reconstruction_stats(n, W0[n], w_o[n], hs[n].H, hs[n].tokens)["error"]
            e_r = reconstruction_stats(n, W0[n], w_r[n], hs[n].H, hs[n].tokens)["error"]
            rows.append((bi, n, e_o, e_r))
        for n in layers:
            weight_oi(layers[n]).copy_(W0[n])
        inps = outs
        print(f"[3] block {bi}: groups {list(groups.values())}; solver ours {t_o:.2f} s, reference port {t_r:.2f} s")
    print(f"[3] solver total over {a.solver_blocks} blocks: ours {ours_t:.2f} s, reference port {ref_t:.2f} s, "
          f"speed-up x{ref_t / ours_t:.2f}")
    ratios = [eo / er for _, _, eo, er in rows if er > 0]
    print(f"    reconstruction error ours / reference: median {statistics.median(ratios):.4f}, "
          f"max {max(ratios):.4f} over {len(ratios)} layers")

    # --- [4] GPU semi-structured -----------------------------------------------------------------
    if torch.cuda.is_available():
        from torch.sparse import to_sparse_semi_structured
        from minilib.prune import mask_nm
        print("[4] CUDA 2:4 semi-structured vs dense fp16 matmul (median of 50)")
        for out_f, in_f in [(1536, 576), (576, 1536), (4096, 4096)]:
            w = torch.randn(out_f, in_f, device="cuda", dtype=torch.float16)
            w = w.masked_fill(mask_nm(w.abs().float(), 2, 4), 0)
            x = torch.randn(4096, in_f, device="cuda", dtype=torch.float16)
            sw = to_sparse_semi_structured(w)
            for name, f in (("dense", lambda: torch.nn.functional.linear(x, w)),
                            ("2:4", lambda: torch.nn.functional.linear(x, sw))):
                for _ in range(5):
                    f()
                torch.cuda.synchronize()
                ts = []
                for _ in range(50):
                    s = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - s)
                print(f"    [{out_f}x{in_f}] {name:5s} {statistics.median(ts) * 1e6:8.1f} us")
    else:
        print("[4] no CUDA: semi-structured 2:4 benchmark skipped")


if __name__ == "__main__":
    main()
