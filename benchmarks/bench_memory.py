"""Peak memory of block-by-block pruning: the memory model of docs/sparsegpt.md, predicted vs measured.

    python benchmarks/bench_memory.py [--model gemma3-270m|smollm2-135m] [--sizes 8x256,64x256] [--threads 1]
                                      [--repeats 1] [--out results/bench_memory.json]

The model is ``auto``: the largest embedded decoder in the cache (the optional ``gemma3-270m``,
else ``smollm2-135m``).  One fresh subprocess per calibration size, so no earlier peak hides a later
one.  In the child: RSS after imports (the interpreter), after loading the model, then the peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs`` right before the run) of
``prune_model(model, "sparsegpt", 0.5, calib, device=...)``.  Predicted extra memory of the run, on
top of the loaded model (every term in bytes):

* activations between blocks, two copies (a block's inputs and its outputs): ``2 n T d s_act``;
* the captured block arguments (rotary tables, masks), shared by the blocks: measured by capturing;
* the accumulators of one block: one ``c x c`` fp32 Hessian per distinct layer input (``4 c^2``);
* the solver of the largest group: its stacked weights twice (fp32, ``2 * 4 r c``), the dampened
  Hessian copy, its Cholesky factor and inverse factor, the identity (``4 * 4 c^2``);
* forward temporaries of one batch through one block: the FFN's hidden activations (up, gate,
  activation, product: ``4 B T f``), q/k/v/attention output (``4 B T d``), the attention scores
  (``B h T^2``) and the fp32 copy the hooks make of the widest input (``B T c_max``), times 4 bytes;
* on CUDA, the block itself (its parameters) on the device.

On CPU the blocks "move" to the CPU, where they already are, so the block term is 0.  The model on
the CPU is not counted in the pass's extra memory (it is there before and after); but a model loaded
from safetensors is mapped from its file lazily, and pruning writes every weight, so the pruned
weights become private memory: the child writes every weight once before the baseline (without that
the measured peak includes up to one more copy of the model).

Every process's values, the predicted terms, the device, torch, the threads, the date and the load
average are written to ``--out`` (``''``: do not write); ``python -m tools.tables`` renders the
table of docs/sparsegpt.md from it (``minilib.tables.benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results"

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def predict(model, calib, batch_size: int, device) -> dict:
    """The terms of the memory model (bytes) for ``prune_model(..., "sparsegpt")`` on ``calib``."""
    import torch
    from minilib.calib import capture_block_inputs
    from minilib.calib.passes import BlockStep
    from minilib.prune.oneshot import input_groups
    from minilib.device import Timer
    from minilib.models.adapters import adapter_for
    from minilib.models.linear import in_features, out_features

    ad = adapter_for(model)
    n, T = calib.shape
    cfg = model.config
    d = cfg.hidden_size
    block0 = ad.blocks(model)[0]
    f = ad.ffn(block0).width
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1)
    B = min(batch_size, n)
    s_act = next(model.parameters()).element_size()
    # which layers read the same tensor (as the driver groups them): one short forward of block 0
    cap = capture_block_inputs(model, calib[:1, :8], 1, None, ad)
    step = BlockStep(0, block0, cap.hidden, cap.args[0], ad, Timer())
    layers = step.linear_keys()
    groups, _ = input_groups(step)
    cols = [in_features(layers[g[0]]) for g in groups]
    rows = [sum(out_features(layers[k]) for k in g) for g in groups]
    big = max(range(len(groups)), key=lambda i: rows[i] * cols[i] + 4 * cols[i] ** 2)
    # captured arguments of all blocks (shared tensors counted once)
    full = capture_block_inputs(model, calib, batch_size, None, ad)
    seen_ids, arg_bytes = set(), 0

    def walk(o):
        nonlocal arg_bytes
        if isinstance(o, torch.Tensor):
            if o.data_ptr() not in seen_ids:
                seen_ids.add(o.data_ptr())
                arg_bytes += o.numel() * o.element_size()
        elif isinstance(o, (tuple, list)):
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            for x in o.values():
                walk(x)
    walk(full.args)
    del full
    terms = {
        "activations (2 copies)": 2 * n * T * d * s_act,
        "captured block arguments": arg_bytes,
        "Hessians of one block": sum(4 * c * c for c in cols),
        "solver of the largest group": 2 * 4 * rows[big] * cols[big] + 4 * 4 * cols[big] ** 2,
        "forward temporaries (one batch)": 4 * B * T * (4 * f + 4 * d + heads * T + max(cols)),
    }
    if torch.device(device).type == "cuda":
        terms["one block on the device"] = sum(p.numel() * p.element_size() for p in block0.parameters())
    return {"terms": terms, "groups": [len(g) for g in groups], "cols": cols}


def child(model_name: str, n: int, T: int, threads: int, device: str, out) -> None:
    r_start = rss_bytes()
    import gc

    import torch
    torch.set_num_threads(threads)
    from minilib.data import calibration_set
    from minilib.device import resolve_device
    from minilib.models import load
    from minilib.prune import prune_model
    r_imports = rss_bytes()
    model, tok, _ = load(model_name, device="cpu")
    calib = calibration_set(tok, "c4", n, T, 0)
    gc.collect()
    r_loaded = rss_bytes()
    with torch.no_grad():  # safetensors maps the file lazily: write every weight once so all of it is resident
        for prm in model.parameters():
            prm.mul_(1)
    gc.collect()
    r_model = rss_bytes()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    dev = resolve_device(device)
    pred = predict(model, calib, 8, dev)
    gc.collect()
    r_before = rss_bytes()
    if not reset_hwm():
        out.put({"error": "cannot reset the peak RSS (/proc/self/clear_refs); measure on Linux >= 4.0"})
        return
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rep = prune_model(model, "sparsegpt", 0.5, calib=calib, device=dev)
    res = {"n": n, "T": T, "rss_start": r_start, "rss_imports": r_imports, "rss_loaded": r_loaded, "rss_model": r_model,
           "model_bytes": model_bytes, "rss_before": r_before, "peak": hwm_bytes(), "pred": pred,
           "total_s": rep.timings["total_s"], "sparsity": rep.overall["sparsity"]}
    if dev.type == "cuda":
        res["cuda_peak"] = torch.cuda.max_memory_allocated(dev)
    out.put(res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="auto", help="auto: gemma3-270m when cached, else smollm2-135m")
    ap.add_argument("--sizes", default="8x256,64x256", help="calibration sizes n x seqlen, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per calibration size")
    ap.add_argument("--out", default=str(RESULTS / "bench_memory.json"), help="JSON of every run; '' = do not write")
    a = ap.parse_args()
    try:
        sizes = [tuple(int(v) for v in size.lower().split("x")) for size in a.sizes.split(",")]
        assert sizes and all(len(s) == 2 and min(s) >= 1 for s in sizes)
    except (ValueError, AssertionError):
        ap.error(f"--sizes must be 'NxT[,NxT...]' with positive integers, e.g. 16x256,48x256; got {a.sizes!r}")
    if a.repeats < 1 or a.threads < 1:
        ap.error(f"--repeats and --threads must be >= 1, got {a.repeats} and {a.threads}")
    from minilib.device import resolve_device
    from minilib.tables.benchmarks import environment, write_bench
    model = a.model
    if model == "auto":
        from minilib.assets import cache_dir
        model = "gemma3-270m" if (cache_dir() / "assets" / "gemma3-270m").is_dir() else "smollm2-135m"
    env = environment(resolve_device(a.device), a.threads)
    ctx = mp.get_context("spawn")
    rows, runs = [], []
    for n, T in sizes:
        reps = []
        for _ in range(a.repeats):
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(model, n, T, a.threads, a.device, q))
            p.start()
            res = q.get()
            p.join()
            if "error" in res:
                sys.exit(res["error"])
            reps.append(res)
        meas = [r["peak"] - r["rss_before"] for r in reps]
        rows.append(dict(reps[0], peak=reps[0]["rss_before"] + statistics.median(meas)))  # printed: the median
        runs.append({"n": n, "T": T, "terms": reps[0]["pred"]["terms"], "groups": reps[0]["pred"]["groups"],
                     "cols": reps[0]["pred"]["cols"], "model_bytes": reps[0]["model_bytes"],
                     "predicted": sum(reps[0]["pred"]["terms"].values()),
                     "repeats": [{k: v for k, v in r.items() if k not in ("pred", "n", "T", "model_bytes")}
                                 for r in reps]})
    mb = 2 ** 20
    r0 = rows[0]
    print(f"{model}: parameters {r0['model_bytes'] / mb:.0f} MiB; RSS after imports {r0['rss_imports'] / mb:.0f} MiB, "
          f"after loading the model {r0['rss_loaded'] / mb:.0f} MiB (safetensors maps the file lazily), after "
          f"writing every weight once {r0['rss_model'] / mb:.0f} MiB (+{(r0['rss_model'] - r0['rss_imports']) / mb:.0f} "
          f"MiB over the imports for {r0['model_bytes'] / mb:.0f} MiB of parameters)")
    print(f"distinct layer inputs per block: {len(r0['pred']['cols'])} (layers per input {r0['pred']['groups']}, "
          f"widths {r0['pred']['cols']})")
    for r in rows:
        terms = r["pred"]["terms"]
        predicted = sum(terms.values())
        measured = r["peak"] - r["rss_before"]
        print(f"\n[{r['n']} x {r['T']} calibration tokens]  SparseGPT 50% in {r['total_s']:.1f} s "
              f"(sparsity {r['sparsity']:.4f})")
        for k, v in terms.items():
            print(f"    {k:34s} {v / mb:9.1f} MiB")
        print(f"    {'predicted extra peak':34s} {predicted / mb:9.1f} MiB")
        print(f"    {'measured extra peak RSS':34s} {measured / mb:9.1f} MiB   (measured / predicted "
              f"{measured / predicted:.2f})")
        if "cuda_peak" in r:
            print(f"    {'CUDA peak allocated':34s} {r['cuda_peak'] / mb:9.1f} MiB")
    if len(rows) > 1:
        a_, b_ = rows[0], rows[-1]
        dm = (b_["peak"] - b_["rss_before"]) - (a_["peak"] - a_["rss_before"])
        dp = sum(b_["pred"]["terms"].values()) - sum(a_["pred"]["terms"].values())
        print(f"\ngrowth from {a_['n']}x{a_['T']} to {b_['n']}x{b_['T']}: measured {dm / mb:.1f} MiB, "
              f"predicted {dp / mb:.1f} MiB (ratio {dm / dp:.2f})")
    print(json.dumps({"model": model, "runs": [{k: v for k, v in r.items() if k != "pred"} | {
        "predicted": sum(r["pred"]["terms"].values())} for r in rows]}))
    if a.out:
        path = write_bench(a.out, "bench_memory", env, {"model": model, "model_choice": a.model, "sparsity": 0.5,
                                                       "batch_size": 8, "runs": runs})
        print(f"written to {path} (python -m tools.tables renders the docs' table)")


if __name__ == "__main__":
    main()
