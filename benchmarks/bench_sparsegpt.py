"""SparseGPT against a plain port of the reference algorithm, on the device that is present.

    python benchmarks/bench_sparsegpt.py [--shape auto|smollm2|tinyllama] [--tokens N] [--repeats 3]
                                         [--threads 1] [--model-precision] [--full]
                                         [--out results/bench_sparsegpt.json]
                                         [--precision-out results/sparsegpt_precision.json]

1. One transformer block of synthetic layers (random weights, random correlated inputs; no model is
   loaded): ``tinyllama`` is TinyLlama-1.1B's shapes (hidden 2048, FFN 5632, 4 KV heads of 64) at
   128 x 2048 tokens, used when CUDA is present; ``smollm2`` is SmolLM2-135M's (576, 1536, 192) at
   16 x 512 tokens, the CPU default.  Ours (one Hessian per distinct input: q/k/v and gate/up share,
   sub-blocked column walk) against ``tests/prune/reference_sparsegpt.py`` (one Hessian per layer,
   Algorithm 1 as published), both at 50% unstructured: wall time of the Hessian accumulation and of
   the solver (CUDA-synchronized ``Timer``), peak memory (peak RSS growth on CPU,
   ``max_memory_allocated`` on CUDA), each run in its own subprocess, ``--repeats`` runs per variant
   interleaved (medians printed), and the reconstruction
   error of both on the same Hessians; printed as ratios ours / reference.
2. Precision on the same block: the error (measured with the exact fp32 Hessian) after pruning with
   a Hessian accumulated from TF32-rounded inputs (what CUDA tensor cores read in TF32 mode; on the
   CPU the rounding is emulated) and from bf16-rounded inputs (the activations a bf16 forward keeps),
   relative to the fp32 Hessian's result.
3. ``--model-precision``: the embedded SmolLM2 pruned 50% with fp32 forwards, bf16 forwards
   (``forward_dtype="bfloat16"``) and TF32 Hessians: perplexity and mean layer error of each.
4. ``--full``: one whole ``prune_model`` run on the embedded model: wall time split into capture,
   block forwards, Hessian accumulation and solver, in forward passes over the calibration set.
5. On CUDA only: dense vs 2:4 semi-structured fp16 matmul on the model's and on larger shapes.

Parts 1-2 (and 4-5 when they run) are written with every repeat, the device, torch, the threads,
the shapes, the date and the load average to ``--out``; part 3 to ``--precision-out`` (``''``: do not
write).  ``python -m tools.tables`` renders the tables of docs/sparsegpt.md from them
(``minilib.tables.benchmarks``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
from pathlib import Path

SHAPES = {  # hidden, ffn, kv width, default tokens
    "smollm2": (576, 1536, 192, 16 * 512),
    "tinyllama": (2048, 5632, 256, 128 * 2048),
}
CHUNK = 2048  # tokens per add_batch
RESULTS = Path(__file__).resolve().parent.parent / "results"


def _layers(shape, seed=0):
    import torch
    d, f, kv, _ = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    outs = {"q": (d, d), "k": (kv, d), "v": (kv, d), "o": (d, d), "gate": (f, d), "up": (f, d), "down": (d, f)}
    return {n: torch.randn(o, i, generator=g) / i ** 0.5 for n, (o, i) in outs.items()}


GROUPS = {"attn": ["q", "k", "v"], "o": ["o"], "mlp": ["gate", "up"], "down": ["down"]}


def _inputs(shape, tokens, device, seed=1):
    """Correlated inputs per distinct layer input, chunk by chunk (generated, never all in memory)."""
    import torch
    d, f, _, _ = SHAPES[shape]
    widths = {"attn": d, "o": d, "mlp": d, "down": f}
    g = torch.Generator().manual_seed(seed)
    mix = {k: (torch.eye(w) + 0.3 * torch.randn(w, w, generator=g) / w ** 0.5).to(device) for k, w in widths.items()}
    scale = {k: (0.2 + torch.rand(w, generator=g) * 2).to(device) for k, w in widths.items()}  # uneven columns
    gd = torch.Generator(device=device).manual_seed(seed + 1)
    for s in range(0, tokens, CHUNK):
        n = min(CHUNK, tokens - s)
        yield {k: (torch.randn(n, w, generator=gd, device=device) * scale[k]) @ mix[k] for k, w in widths.items()}


def _peak_reset(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_memory import reset_hwm, rss_bytes
    reset_hwm()
    return rss_bytes()


def _peak(device, base):
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) - base
    from bench_memory import hwm_bytes
    return hwm_bytes() - base


def run_variant(variant: str, shape: str, tokens: int, repeats: int, threads: int, device: str, out) -> None:
    """In a fresh process: accumulate the Hessians and prune the block, ``variant`` = ours | reference."""
    import torch
    torch.set_num_threads(threads)
    from torch import nn
    from minilib.device import Timer
    from minilib.prune import SparseGPT, reconstruction_stats
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "prune"))
    from reference_sparsegpt import reference_sparsegpt
    dev = torch.device(device)
    W0 = {n: w.to(dev) for n, w in _layers(shape).items()}
    times = {"accumulate_s": [], "solve_s": []}  # one value per repeat
    errors = {}
    base = _peak_reset(dev)
    for _ in range(repeats):
        timer = Timer(dev)
        if variant == "ours":
            lin = {}
            for n, w in W0.items():
                lin[n] = nn.Linear(w.shape[1], w.shape[0], bias=False, device=dev)
                lin[n].weight.data.copy_(w)
            solvers = {k: SparseGPT({n: lin[n] for n in names}, dev) for k, names in GROUPS.items()}
            for chunk in _inputs(shape, tokens, dev):  # generating the inputs is not timed
                with timer("accumulate_s"):
                    for k, s in solvers.items():
                        s.add_batch(chunk[k])
            with timer("solve_s"):
                for s in solvers.values():
                    s.prune(0.5, measure_error=False)  # leaves s.H as it was (no copy kept)
            H = {k: s.H for k, s in solvers.items()}
            new = {n: lin[n].weight.data for n in W0}
            toks = solvers["attn"].tokens
        else:  # one Hessian per layer, accumulated as the reference does (running mean of 2 x x^T)
            Hs = {n: torch.zeros(w.shape[1], w.shape[1], device=dev) for n, w in W0.items()}
            nseen = 0
            for chunk in _inputs(shape, tokens, dev):
                m = chunk["attn"].shape[0]
                with timer("accumulate_s"):
                    for k, names in GROUPS.items():
                        x = chunk[k].t() * (2 / (nseen + m)) ** 0.5
                        for n in names:
                            Hs[n] *= nseen / (nseen + m)
                            Hs[n] += x @ x.t()
                nseen += m
            with timer("solve_s"):
                new = {n: reference_sparsegpt(w, Hs[n], 0.5) for n, w in W0.items()}
            H = {k: Hs[names[0]] * (nseen / 2) for k, names in GROUPS.items()}
            toks = nseen
        for k in times:
            times[k].append(timer.totals[k])
    peak = _peak(dev, base)
    for k, names in GROUPS.items():
        for n in names:
            errors[n] = reconstruction_stats(n, W0[n], new[n], H[k], toks)["rel_error"]
    out.put({"times": times, "peak": peak, "errors": errors})


def precision_errors(shape: str, tokens: int, device: str) -> dict:
    """Per layer: error (exact fp32 Hessian) after pruning with a TF32 / bf16-input Hessian, relative
    to pruning with the fp32 Hessian (``"ratio"``), and the errors themselves (``"rel_error"``)."""
    import torch
    from torch import nn
    from minilib.calib import Hessian
    from minilib.calib.accumulators import round_to_tf32
    from minilib.prune import SparseGPT, reconstruction_stats
    dev = torch.device(device)
    W0 = {n: w.to(dev) for n, w in _layers(shape).items()}
    hs = {p: {k: Hessian(W0[names[0]].shape[1], dev) for k, names in GROUPS.items()} for p in ("fp32", "tf32", "bf16")}
    for chunk in _inputs(shape, tokens, dev):
        for k, x in chunk.items():
            hs["fp32"][k].add_batch(x)
            hs["bf16"][k].add_batch(x.bfloat16())
            if dev.type == "cuda":  # the real tensor-core mode
                with _tf32():
                    hs["tf32"][k].add_batch(x)
            else:
                hs["tf32"][k].add_batch(round_to_tf32(x))
    err = {p: {} for p in hs}
    for p in hs:
        for k, names in GROUPS.items():
            lin = {}
            for n in names:
                lin[n] = nn.Linear(W0[n].shape[1], W0[n].shape[0], bias=False, device=dev)
                lin[n].weight.data.copy_(W0[n])
            s = SparseGPT(lin, dev)
            s.H, s.tokens = hs[p][k].H.clone(), hs[p][k].tokens
            s.prune(0.5, measure_error=False)
            for n in names:
                err[p][n] = reconstruction_stats(n, W0[n], lin[n].weight.data, hs["fp32"][k].H,
                                                 hs["fp32"][k].tokens)["rel_error"]
    return {"tf32_mode": "tensor cores" if dev.type == "cuda" else "emulated", "rel_error": err,
            "ratio": {p: {n: err[p][n] / err["fp32"][n] for n in err[p]} for p in ("tf32", "bf16")}}


class _tf32:
    def __enter__(self):
        import torch
        self.old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True

    def __exit__(self, *a):
        import torch
        torch.backends.cuda.matmul.allow_tf32 = self.old


def model_precision(threads: int, device: str) -> dict:
    """Part 3: the embedded SmolLM2 pruned with fp32 forwards, bf16 forwards and TF32 Hessians."""
    import torch
    torch.set_num_threads(threads)
    from minilib.data import calibration_set, corpus_splits, eval_windows
    from minilib.eval.perplexity import perplexity_ci, perplexity_ratio_ci
    from minilib.models import load
    from minilib.prune import prune_model
    setup = {"model": "smollm2-135m", "sparsity": 0.5, "calib_corpus": "c4", "calib": [8, 256], "heldout": [8, 256],
             "eval_corpus": "wiki", "eval": [8, 512], "seed": 0,
             "autocast": "bf16 autocast" if device == "cpu" else "bf16 autocast on CUDA",
             "tf32_mode": "tensor cores" if device.startswith("cuda") else "emulated"}
    _, tok, _ = load(setup["model"])
    calib = calibration_set(tok, setup["calib_corpus"], *setup["calib"], setup["seed"])
    held = eval_windows(corpus_splits(tok, setup["calib_corpus"])["dev"], setup["heldout"][1], setup["heldout"][0])
    test = corpus_splits(tok, setup["eval_corpus"])["test"]
    res, runs = {}, {}
    for name, label, kw in (("fp32", "fp32", {}), ("bf16 forwards", "bf16 forwards", {"forward_dtype": "bfloat16"}),
                            ("tf32 Hessians", f"TF32 Hessians ({setup['tf32_mode']})", {"hessian_precision": "tf32"})):
        model = load(setup["model"], device=device).model
        rep = prune_model(model, "sparsegpt", setup["sparsity"], calib=calib, heldout=held, device=device, **kw)
        res[name] = (rep, perplexity_ci(model, test, setup["eval"][1], max_windows=setup["eval"][0]))
        runs[name] = {"label": label, "kwargs": kw, "perplexity": res[name][1],
                      "mean_rel_error": float(rep.layers.rel_error.mean()),
                      "mean_heldout_rel_error": float(rep.layers.heldout_rel_error.mean()),
                      "layers": rep.layers[["block", "layer", "rel_error", "heldout_rel_error"]],
                      "sparsity": rep.overall["sparsity"], "timings": rep.timings}
        print(f"    {name:14s} perplexity {res[name][1]['ppl']:.3f}  mean layer error in-sample "
              f"{rep.layers.rel_error.mean():.5f}, held-out {rep.layers.heldout_rel_error.mean():.5f}; "
              f"{rep.timings['total_s']:.1f} s")
    for name in ("bf16 forwards", "tf32 Hessians"):
        r = perplexity_ratio_ci(res[name][1], res["fp32"][1])
        print(f"    {name} / fp32 perplexity: {r.estimate:.4f} [{r.low:.4f}, {r.high:.4f}] (paired over 8 windows)")
        runs[name]["ratio_vs_fp32"] = {"estimate": r.estimate, "low": r.low, "high": r.high}
    return {"setup": setup, "runs": runs}


def full_run(threads: int, nsamples: int, seqlen: int) -> dict:
    import copy
    import torch
    torch.set_num_threads(threads)
    from minilib.data import calibration_set
    from minilib.device import Timer, resolve_device
    from minilib.models import load
    from minilib.prune import prune_model
    model, tok, ad = load("smollm2-135m")
    calib = calibration_set(tok, "c4", nsamples, seqlen, 0)
    dev = resolve_device("auto")
    timer = Timer(dev)
    with timer("fwd"), torch.no_grad():
        for s in range(0, len(calib), 8):
            model(input_ids=calib[s:s + 8].to(dev))
    fwd = timer.totals["fwd"]
    rep = prune_model(copy.deepcopy(model), "sparsegpt", 0.5, calib=calib)
    tm = rep.timings
    print(f"[4] one forward pass over {nsamples}x{seqlen} calibration tokens: {fwd:.1f} s; SparseGPT 50%: "
          f"{tm['total_s']:.1f} s = {tm['total_s'] / fwd:.2f} forward passes")
    for k in ("capture_s", "forward_s", "stats_s", "solve_s"):
        print(f"    {k:10s} {tm[k]:8.1f} s  ({tm[k] / fwd:.2f} forward passes)")
    return {"nsamples": nsamples, "seqlen": seqlen, "forward_s": fwd, "timings": tm}


def semi_structured() -> list:
    import torch
    import torch.nn.functional as F
    from minilib.prune import mask_nm
    from minilib.prune.semistructured import check_backend, time_call
    from torch.sparse import to_sparse_semi_structured
    print(f"[5] CUDA 2:4 semi-structured vs dense fp16 matmul ({check_backend()}), median of 5 rounds of 10")
    rows = []
    for out_f, in_f in [(1536, 576), (576, 1536), (5632, 2048), (2048, 5632), (11008, 4096)]:
        for tokens in (128, 2048, 8192):
            w = torch.randn(out_f, in_f, device="cuda", dtype=torch.float16)
            w = w.masked_fill(mask_nm(w.abs().float(), 2, 4), 0)
            x = torch.randn(tokens, in_f, device="cuda", dtype=torch.float16)
            sw = to_sparse_semi_structured(w)
            td = time_call(lambda: F.linear(x, w), "cuda")
            ts = time_call(lambda: F.linear(x, sw), "cuda")
            print(f"    [{out_f}x{in_f}, {tokens} tokens] dense {td * 1e6:8.1f} us, 2:4 {ts * 1e6:8.1f} us, "
                  f"speed-up {td / ts:.2f}x")
            rows.append({"out": out_f, "in": in_f, "tokens": tokens, "dense_s": td, "sparse_s": ts})
    return rows


def main():
    import torch
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="auto", choices=["auto", *SHAPES])
    ap.add_argument("--tokens", type=int, default=0, help="calibration tokens (0: the shape's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)  # 1 is stable on a shared machine
    ap.add_argument("--model-precision", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "bench_sparsegpt.json"), help="parts 1-2 (4-5) as JSON; '' = do not write")
    ap.add_argument("--precision-out", default=str(RESULTS / "sparsegpt_precision.json"),
                    help="part 3 (--model-precision) as JSON; '' = do not write")
    a = ap.parse_args()
    if a.repeats < 1 or a.threads < 1:
        ap.error(f"--repeats and --threads must be >= 1, got {a.repeats} and {a.threads}")
    from minilib.tables.benchmarks import environment, write_bench
    torch.set_num_threads(a.threads)  # part 2 runs in this process
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shape = a.shape if a.shape != "auto" else ("tinyllama" if cuda else "smollm2")
    tokens = a.tokens or SHAPES[shape][3]
    print(f"device {device}{' (' + torch.cuda.get_device_name() + ')' if cuda else ''}, threads {a.threads}; "
          f"synthetic {shape}-shaped block (hidden {SHAPES[shape][0]}, FFN {SHAPES[shape][1]}, KV "
          f"{SHAPES[shape][2]}), {tokens} calibration tokens, SparseGPT 50%")
    env = environment(device, a.threads)
    ctx = mp.get_context("spawn")
    res = {v: {"times": {"accumulate_s": [], "solve_s": []}, "peaks": []} for v in ("ours", "reference")}
    for _ in range(a.repeats):  # one fresh process per run, the variants interleaved (load drift hits both)
        for variant in res:
            q = ctx.Queue()
            p = ctx.Process(target=run_variant, args=(variant, shape, tokens, 1, a.threads, device, q))
            p.start()
            one = q.get()
            p.join()
            for k, v in one["times"].items():
                res[variant]["times"][k] += v
            res[variant]["peaks"].append(one["peak"])
            res[variant]["errors"] = one["errors"]  # the same in every run (same weights, inputs, mask rule)
    for v in res.values():
        v["peak"] = statistics.median(v["peaks"])
    o, r = res["ours"], res["reference"]
    mb = 2 ** 20
    print(f"[1] {'':22s} {'ours':>10s} {'reference':>10s} {'ours/ref':>9s}")
    med = {v: {k: statistics.median(x) for k, x in res[v]["times"].items()} for v in res}
    for k in ("accumulate_s", "solve_s"):
        print(f"    {k:22s} {med['ours'][k]:10.3f} {med['reference'][k]:10.3f} {med['ours'][k] / med['reference'][k]:9.2f}")
    to, tr = (statistics.median(map(sum, zip(*res[v]["times"].values()))) for v in ("ours", "reference"))
    print(f"    {'total_s':22s} {to:10.3f} {tr:10.3f} {to / tr:9.2f}")
    what = "peak CUDA memory" if cuda else "peak RSS growth"
    print(f"    {what + ' (MiB)':22s} {o['peak'] / mb:10.1f} {r['peak'] / mb:10.1f} {o['peak'] / r['peak']:9.2f}")
    ratios = [o["errors"][n] / r["errors"][n] for n in o["errors"]]
    print(f"    reconstruction error ours / reference: median {statistics.median(ratios):.4f}, min {min(ratios):.4f}, "
          f"max {max(ratios):.4f} over {len(ratios)} layers")
    pe = precision_errors(shape, tokens, device)
    for p, d in pe["ratio"].items():
        v = list(d.values())
        print(f"[2] {p} Hessian inputs: error / fp32-Hessian error (exact Hessian): median {statistics.median(v):.5f},"
              f" min {min(v):.5f}, max {max(v):.5f} over {len(v)} layers")
    d, f, kv, _ = SHAPES[shape]
    out = {"shape": {"model": {"smollm2": "SmolLM2-135M", "tinyllama": "TinyLlama-1.1B"}[shape], "name": shape,
                     "hidden": d, "ffn": f, "kv": kv, "tokens": tokens, "chunk": CHUNK},
           "sparsity": 0.5, "repeats": a.repeats, "groups": GROUPS,
           "input_widths": {"attn": d, "o": d, "mlp": d, "down": f},
           "memory": "peak CUDA memory" if cuda else "peak RSS growth",
           "variants": {v: {"accumulate_s": res[v]["times"]["accumulate_s"], "solve_s": res[v]["times"]["solve_s"],
                            "median_s": med[v], "peak_bytes": res[v]["peaks"], "rel_error": res[v]["errors"]}
                        for v in res},
           "precision": pe}
    if a.model_precision:
        print("[3] SmolLM2-135M, SparseGPT 50%, 8 x 256 C4 calibration tokens, 8 x 256 held-out, 8 x 512 wiki test:")
        mp_env = environment(device, a.threads)
        mp_res = model_precision(a.threads, device)
        if a.precision_out:
            print(f"    written to {write_bench(a.precision_out, 'sparsegpt_precision', mp_env, mp_res)}")
    if a.full:
        out["full"] = full_run(a.threads, 32, 512)
    if cuda:
        out["semi_structured"] = semi_structured()
    else:
        print("[5] no CUDA: semi-structured 2:4 benchmark skipped")
    if a.out:
        print(f"written to {write_bench(a.out, 'bench_sparsegpt', env, out)} (python -m tools.tables renders the docs' tables)")


if __name__ == "__main__":
    main()
