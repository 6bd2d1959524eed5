"""How far the same pruning moves between numerical settings that cannot be made bitwise identical,
and what the kernel pins of ``minilib.determinism`` cost.

    python benchmarks/bench_numerics.py [--configs pinned-1,pinned-2,native-1] [--methods sparsegpt,wanda]
                                        [--sparsities 0.5,0.7] [--nsamples 6] [--seqlen 256]
                                        [--eval-windows 4] [--eval-seqlen 256] [--jobs 2]
                                        [--speed-configs native-1,pinned-1,compatible-1,pinned-2]
                                        [--repeats 3] [--rounds 1] [--out results/numerics_spread.json]

1. Spread.  Every config is a fresh process whose environment is set before torch is imported:

   * ``pinned-T``: minilib's pins (``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2,STRICT``; ``AVX2`` when
     ``results/numerics_spread.json`` was measured) at ``T`` threads:
     what every AVX2 or AVX-512 machine computes with the same MKL branch;
   * ``native-T``: ``MINILIB_NUMERICS=native`` (no pins): on an AVX-512 CPU, ATen's AVX-512 kernels,
     i.e. what an unpinned AVX-512 machine computes (against ``pinned``: the AVX2/AVX-512 gap);
   * ``compatible-T``: the pins plus ``MKL_CBWR=COMPATIBLE``: MKL's vendor-neutral branch, standing
     in for a machine on which MKL runs another branch (Intel vs AMD);
   * ``repeat-T``: ``pinned-T`` again (the control: it must be identical).

   Each prunes the embedded SmolLM2 with every method at every sparsity (calibration: ``nsamples``
   windows of ``seqlen`` tokens of the C4 calib split, ``budget_windows`` seed 0) and measures
   perplexity on ``eval-windows`` x ``eval-seqlen`` tokens of the Wikipedia test split.  Per method
   and sparsity, against the first config: perplexity, the ratio, how many layers' masks differ, and
   the fraction of mask entries that differ.  ``--configs ''`` skips this part.
2. Speed (``--repeats`` > 0).  ``--rounds`` fresh processes per speed config, the configs
   interleaved, one process at a time: a forward of the dense model over 2 x 128 tokens, and one
   SparseGPT solve (50%, Hessian accumulation included) of block 0's q/k/v group (576 inputs) and of
   its down projection (1536 inputs) on the layers' real inputs (4 x 256 tokens); ``--repeats`` of
   each, round-robin after a warm-up.  Medians over all repeats, the ratio of medians to
   ``native-T`` and the range of the per-round ratios.  At more than one thread also the
   factorisation (Cholesky and triangular inverse of the down projection's Hessian) on the threads
   and on one thread: the cost of the solver's ``serial_cpu``.  On an AMD CPU ``pinned`` differs from
   ``native`` only by ATen's ISA (MKL refuses ``MKL_CBWR=AVX2`` there), so the cost of MKL's AVX2
   branch on an Intel AVX-512 CPU is not measured by a run on AMD.

The configs set the pinned variables themselves (the caller's values of them are not passed on).
Written with ``minilib.tables.benchmarks.write_bench`` (every value, each process's
``minilib.determinism.numerics_record()``, the environment) to ``--out``.  Default run: about 5
minutes on 2 cores (the 1-thread configs run ``--jobs`` at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
NAME = "numerics_spread"
# (the command that made results/numerics_spread.json; registered in minilib.tables.benchmarks.COMMANDS at run time)
COMMAND = "python benchmarks/bench_numerics.py --configs pinned-1,pinned-2,native-1,compatible-1 --rounds 2"
MODEL = "smollm2-135m"
FORWARD = (2, 128)        # windows x tokens of the timed forward
SOLVE_TOKENS = (4, 256)   # windows x tokens whose inputs feed the timed solves
KINDS = {  # config kind -> environment changes (applied to a copy of this process's environment)
    "pinned": {},
    "repeat": {},
    "native": {"MINILIB_NUMERICS": "native"},
    "compatible": {"MKL_CBWR": "COMPATIBLE"},
}
PINNED_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR")


def parse_config(name: str) -> tuple[str, int]:
    kind, _, th = name.rpartition("-")
    if kind not in KINDS or not th.isdigit() or int(th) < 1:
        raise ValueError(f"config {name!r} must be <kind>-<threads> with kind one of {sorted(KINDS)}, e.g. pinned-2")
    return kind, int(th)


def config_env(name: str) -> dict:
    """The child's environment: this one without the pins and thread variables (so that minilib sets
    its defaults there, not here), plus the config's changes."""
    kind, threads = parse_config(name)
    env = {k: v for k, v in os.environ.items() if k not in PINNED_VARS and k != "MINILIB_NUMERICS"}
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.update(KINDS[kind])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# --- the child processes ----------------------------------------------------------------------------

def _setup(threads: int):
    import minilib  # noqa: F401  (the pins, before torch)
    import torch
    torch.set_num_threads(threads)
    from minilib.models import load
    from minilib.studies.sparsegpt import budget_windows, calibration_pool
    return torch, load, budget_windows, calibration_pool


def worker_spread(job: dict) -> dict:
    import numpy as np
    torch, load, budget_windows, calibration_pool = _setup(job["threads"])
    from minilib.data import corpus_splits
    from minilib.determinism import check_pins, numerics_record, weights_digest, zero_digests
    from minilib.eval import perplexity
    from minilib.prune import prune_model
    check_pins()
    _, tok, _ = load(MODEL)
    calib = budget_windows(calibration_pool(tok, "c4", job["seqlen"]), job["nsamples"], 0)
    test = corpus_splits(tok, "wiki")["test"]
    runs = {}
    for method in job["methods"]:
        for s in job["sparsities"]:
            model, _, ad = load(MODEL)
            t = time.perf_counter()
            prune_model(model, method, s, calib=calib, device="cpu", measure_error=False)
            prune_s = time.perf_counter() - t
            ppl = perplexity(model, test, job["eval_seqlen"], max_windows=job["eval_windows"])
            from minilib.calib.passes import linear_keys
            from minilib.models.linear import weight_oi
            zeros = np.concatenate([np.packbits((weight_oi(l) == 0).numpy().ravel())
                                    for l in linear_keys(model, ad).values()])
            key = f"{method}@{s:g}"
            np.save(Path(job["tmp"]) / f"{job['config']}-{key}.npy", zeros)
            runs[key] = {"method": method, "sparsity": s, "perplexity": ppl, "prune_s": prune_s,
                         "masks": zero_digests(model, ad), "weights": weights_digest(model)}
    return {"numerics": numerics_record(), "runs": runs}


def worker_speed(job: dict) -> dict:
    torch, load, _, _ = _setup(job["threads"])
    from minilib.calib.accumulators import LastBatch
    from minilib.calib.passes import calibrate
    from minilib.data import corpus_splits, eval_windows
    from minilib.determinism import check_pins, numerics_record, serial_cpu
    from minilib.prune.sparsegpt import SparseGPT
    check_pins()
    model, tok, ad = load(MODEL)
    test = corpus_splits(tok, "wiki")["test"]
    x = eval_windows(test, FORWARD[1], FORWARD[0])
    layers = ad.linear_layers(ad.blocks(model)[0])
    qkv = {k: layers[k] for k in layers if k.split(".")[-1] in ("q_proj", "k_proj", "v_proj")}
    down = {k: layers[k] for k in layers if k.endswith("down_proj")}
    if len(qkv) != 3 or len(down) != 1:
        raise RuntimeError(f"{MODEL}: expected q/k/v and down_proj in block 0, got {sorted(layers)}")
    # the layers' real inputs, from a copy cut to block 0 (the capture needs no later block)
    one, _, _ = load(MODEL)
    del ad.blocks(one)[1:]
    one.config.num_hidden_layers = 1
    taps = {"0." + next(iter(qkv)): LastBatch("input"), "0." + next(iter(down)): LastBatch("input")}
    inputs = []
    calib = eval_windows(test, SOLVE_TOKENS[1], SOLVE_TOKENS[0])
    for i in range(len(calib)):
        calibrate(one, calib[i:i + 1], taps, batch_size=1)
        inputs.append([t.value.clone() for t in taps.values()])
    del one

    def forward():
        with torch.no_grad():
            model(input_ids=x)

    def solve(group, which):
        def run():
            saved = {k: l.weight.detach().clone() for k, l in group.items()}
            s = SparseGPT(group)
            for inp in inputs:
                s.add_batch(inp[which])
            s.prune(0.5, measure_error=False)
            with torch.no_grad():
                for k, l in group.items():
                    l.weight.copy_(saved[k])
        return run

    s = SparseGPT(down)
    for inp in inputs:
        s.add_batch(inp[1])
    H = s.H + 0.01 * torch.diag(s.H).mean() * torch.eye(s.columns)
    eye = torch.eye(s.columns)

    def factor():
        L, _ = torch.linalg.cholesky_ex(H.flip(0, 1))
        torch.linalg.solve_triangular(L, eye, upper=False)

    def factor_serial():
        with serial_cpu():
            factor()
    fns = {"forward_s": forward, "solve_qkv_s": solve(qkv, 0), "solve_down_s": solve(down, 1),
           "factor_down_s": factor_serial}
    if job["threads"] > 1:
        fns["factor_down_threaded_s"] = factor
    res = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(job["repeats"]):  # round-robin, so that a change of the machine's load hits every one
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            res[k].append(time.perf_counter() - t)
    return {"numerics": numerics_record(), **res}


def run_child(job: dict) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = f.name
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job), "--worker-out", out]
        p = subprocess.run(cmd, env=config_env(job["config"]), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"config {job['config']} ({job['part']}) failed (exit {p.returncode}):\n"
                               f"{p.stderr[-3000:]}")
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def run_jobs(jobs: list[dict], parallel: int) -> dict:
    """Multi-thread configs run alone; 1-thread configs ``parallel`` at a time."""
    out = {}
    singles = [j for j in jobs if j["threads"] == 1]
    for j in jobs:
        if j["threads"] > 1:
            t = time.perf_counter()
            out[j["config"]] = run_child(j)
            print(f"    {j['part']} {j['config']}: {time.perf_counter() - t:.0f} s", flush=True)
    with ThreadPoolExecutor(max(1, parallel)) as ex:
        t = time.perf_counter()
        for j, r in zip(singles, ex.map(run_child, singles)):
            out[j["config"]] = r
        if singles:
            print(f"    {singles[0]['part']} {', '.join(j['config'] for j in singles)}: "
                  f"{time.perf_counter() - t:.0f} s ({parallel} at a time)", flush=True)
    return {j["config"]: out[j["config"]] for j in jobs}


# --- comparing -----------------------------------------------------------------------------------------

def compare(spread: dict, tmp: str) -> list[dict]:
    import numpy as np
    configs = list(spread)
    ref = configs[0]
    rows = []
    for key, r0 in spread[ref]["runs"].items():
        z0 = np.unpackbits(np.load(Path(tmp) / f"{ref}-{key}.npy"))
        for c in configs:
            r = spread[c]["runs"][key]
            z = np.unpackbits(np.load(Path(tmp) / f"{c}-{key}.npy"))
            diff = [k for k in r["masks"] if r["masks"][k] != r0["masks"][k]]
            rows.append({"method": r["method"], "sparsity": r["sparsity"], "config": c, "reference": ref,
                         "perplexity": r["perplexity"], "ratio": r["perplexity"] / r0["perplexity"],
                         "identical": r["weights"] == r0["weights"] and r["perplexity"] == r0["perplexity"],
                         "layers_differing": len(diff), "layers": len(r["masks"]),
                         "first_layer_differing": diff[0] if diff else None,
                         "mask_entries_differing": float((z0 != z).mean())})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per method and sparsity: the range of perplexity over the configs and max/min."""
    out = []
    for key in dict.fromkeys((r["method"], r["sparsity"]) for r in rows):
        ppl = [r["perplexity"] for r in rows if (r["method"], r["sparsity"]) == key]
        out.append({"method": key[0], "sparsity": key[1], "min": min(ppl), "max": max(ppl),
                    "median": statistics.median(ppl), "max_over_min": max(ppl) / min(ppl), "configs": len(ppl)})
    return out


def speed_summary(speed: dict, configs: list[str]) -> dict:
    """Medians over every repeat of every round; against ``native-T`` of the same thread count (when
    it ran) the ratio of medians and the range of the per-round ratios; printed."""
    med = {c: {k: statistics.median([v for r in rs for v in r[k]]) for k in rs[0] if k.endswith("_s")}
           for c, rs in speed.items()}
    ratios = {}
    for c in configs:
        th = parse_config(c)[1]
        ref = f"native-{th}"
        print(f"    {c:14s} " + ", ".join(f"{k[:-2]} {v * 1e3:.0f} ms" for k, v in med[c].items()))
        if ref in speed and ref != c:
            ratios[c] = {"reference": ref}
            for k in med[c]:
                if k in med[ref]:
                    per_round = [statistics.median(a[k]) / statistics.median(b[k])
                                 for a, b in zip(speed[c], speed[ref])]
                    ratios[c][k] = {"ratio": med[c][k] / med[ref][k], "rounds": per_round}
            print(f"    {'':14s} / {ref}: " + ", ".join(
                f"{k[:-2]} x{v['ratio']:.3f} (rounds {min(v['rounds']):.3f}-{max(v['rounds']):.3f})"
                for k, v in ratios[c].items() if k != "reference"))
        if "factor_down_threaded_s" in med[c]:
            m = med[c]
            per_round = [statistics.median(r["factor_down_s"]) / statistics.median(r["factor_down_threaded_s"])
                         for r in speed[c]]
            ratios.setdefault(c, {})["factor_serial_over_threaded"] = {
                "ratio": m["factor_down_s"] / m["factor_down_threaded_s"], "rounds": per_round}
            print(f"    {'':14s} factorisation on one thread / on {th}: "
                  f"x{m['factor_down_s'] / m['factor_down_threaded_s']:.3f} (rounds {min(per_round):.3f}-"
                  f"{max(per_round):.3f}); on one thread it is {m['factor_down_s'] / m['solve_down_s']:.1%} "
                  f"of the down projection's solve")
    return {"runs": speed, "medians": med, "ratios": ratios}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="pinned-1,pinned-2,native-1")
    ap.add_argument("--methods", default="sparsegpt,wanda")
    ap.add_argument("--sparsities", default="0.5,0.7")
    ap.add_argument("--nsamples", type=int, default=6, help="calibration windows (SparseGPT needs >= 1536 tokens)")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=4)
    ap.add_argument("--eval-seqlen", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=2, help="1-thread configs run this many at a time")
    ap.add_argument("--speed-configs", default="native-1,pinned-1,compatible-1,pinned-2")
    ap.add_argument("--repeats", type=int, default=3, help="speed repeats per process (0: no speed part)")
    ap.add_argument("--rounds", type=int, default=1, help="speed: fresh processes per config, interleaved")
    ap.add_argument("--out", default=str(RESULTS / f"{NAME}.json"), help="'' = do not write")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:  # a child: config_env put this checkout first on PYTHONPATH
        job = json.loads(a.worker)
        res = (worker_spread if job["part"] == "spread" else worker_speed)(job)
        Path(a.worker_out).write_text(json.dumps(res))
        return 0
    try:
        configs = [c.strip() for c in a.configs.split(",") if c.strip()]
        speed_configs = [c.strip() for c in a.speed_configs.split(",") if c.strip()] if a.repeats else []
        for c in configs + speed_configs:
            parse_config(c)
        methods = [m.strip() for m in a.methods.split(",") if m.strip()]
        sparsities = [float(s) for s in a.sparsities.split(",") if s.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not methods or not sparsities:
        ap.error("--methods and --sparsities must each name at least one")
    if not configs and not speed_configs:
        ap.error("nothing to do: --configs is empty and there is no speed part")
    if len(set(configs)) != len(configs) or len(set(speed_configs)) != len(speed_configs):
        ap.error("a config may appear only once in --configs / --speed-configs (use repeat-T for a second run)")
    bad = [m for m in methods if m not in ("sparsegpt", "wanda", "magnitude")]
    if bad:
        ap.error(f"unknown methods {bad}")
    if min(a.nsamples, a.seqlen, a.eval_windows, a.eval_seqlen, a.rounds) < 1 or a.repeats < 0:
        ap.error("--nsamples, --seqlen, --eval-windows, --eval-seqlen, --rounds must be >= 1, --repeats >= 0")
    if "sparsegpt" in methods and a.nsamples * a.seqlen < 1536:
        ap.error(f"sparsegpt needs >= 1536 calibration tokens for {MODEL} (the down projection's width); "
                 f"got {a.nsamples} x {a.seqlen}")

    sys.path.insert(0, str(ROOT))  # the minilib of this checkout, as the children get it
    from minilib.tables import benchmarks as bench
    from minilib.determinism import numerics_record
    bench.COMMANDS.setdefault(NAME, COMMAND)  # write_bench/load_bench know the benchmarks by name
    threads = max(parse_config(c)[1] for c in configs + speed_configs)
    env = bench.environment("cpu", threads)
    t0 = time.perf_counter()
    setup = {"model": MODEL, "calib": [a.nsamples, a.seqlen], "calib_corpus": "c4", "seed": 0,
             "eval": [a.eval_windows, a.eval_seqlen], "eval_corpus": "wiki", "methods": methods,
             "sparsities": sparsities, "configs": {c: {"kind": parse_config(c)[0], "threads": parse_config(c)[1],
                                                       "env": KINDS[parse_config(c)[0]]} for c in configs}}
    data = {"setup": setup}
    if configs:
        print(f"[1] spread: {', '.join(configs)}; {', '.join(methods)} at {sparsities}, calibration {a.nsamples} x "
              f"{a.seqlen}, perplexity on {a.eval_windows} x {a.eval_seqlen}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [{"part": "spread", "config": c, "threads": parse_config(c)[1], "methods": methods,
                     "sparsities": sparsities, "nsamples": a.nsamples, "seqlen": a.seqlen,
                     "eval_windows": a.eval_windows, "eval_seqlen": a.eval_seqlen, "tmp": tmp} for c in configs]
            spread = run_jobs(jobs, a.jobs)
            rows = compare(spread, tmp)
        for r in rows:
            same = "identical" if r["identical"] else (f"{r['layers_differing']}/{r['layers']} layers' masks differ "
                                                       f"({r['mask_entries_differing']:.3%} of entries)")
            print(f"    {r['method']:9s} {r['sparsity']:.0%} {r['config']:14s} ppl {r['perplexity']:10.4f}  "
                  f"x{r['ratio']:.4f} vs {r['reference']}  {same}")
        summary = summarise(rows)
        for s in summary:
            print(f"    {s['method']:9s} {s['sparsity']:.0%}: perplexity {s['min']:.3f}-{s['max']:.3f} over "
                  f"{s['configs']} configs, max/min {s['max_over_min']:.4f}")
        runs = {c: {"numerics": r["numerics"], "runs": {k: {kk: vv for kk, vv in v.items() if kk != "masks"}
                                                         for k, v in r["runs"].items()}} for c, r in spread.items()}
        data.update({"comparisons": rows, "summary": summary, "spread_runs": runs})
    if speed_configs:
        print(f"[2] speed: {', '.join(speed_configs)}; {a.rounds} rounds of fresh processes, the configs "
              f"interleaved, {a.repeats} repeats each", flush=True)
        speed = {c: [] for c in speed_configs}
        for r in range(a.rounds):  # timings: one process at a time
            for c in speed_configs:
                speed[c].append(run_child({"part": "speed", "config": c, "threads": parse_config(c)[1],
                                           "repeats": a.repeats}))
        data["speed"] = speed_summary(speed, speed_configs)
        data["speed"]["setup"] = {"forward": list(FORWARD), "solve_tokens": list(SOLVE_TOKENS), "repeats": a.repeats,
                                  "rounds": a.rounds,
                                  "solve": "SparseGPT 50% of block 0's q/k/v group (576 inputs) and down_proj "
                                           "(1536 inputs), Hessian accumulation included; factor: Cholesky and "
                                           "triangular inverse of the down projection's Hessian"}
    data["wall_s"] = time.perf_counter() - t0
    data["parent_numerics"] = numerics_record()
    if a.out:
        print(f"written to {bench.write_bench(a.out, NAME, env, data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
