"""The measured tables of docs/sparsegpt.md, generated from the benchmarks' results JSON.

The benchmark scripts measure and write their raw values (every repeat, the device, the torch
version, the threads, the shapes, the date and the machine's load) through ``write_bench``; the
functions of ``TABLES`` render them (``python -m tools.tables``), so no measured number in the docs is
typed by hand:

* ``results/bench_sparsegpt.json`` (``benchmarks/bench_sparsegpt.py``, parts 1-2): ours vs the plain
  port of the reference on one synthetic block (``bench_sparsegpt``), and the effect of TF32/bf16
  Hessian inputs on that block's layer errors (``bench_sparsegpt_precision``);
* ``results/sparsegpt_precision.json`` (``bench_sparsegpt.py --model-precision``, part 3): the whole
  embedded model pruned with fp32 forwards, bf16 forwards and TF32 Hessians (``sparsegpt_precision``);
* ``results/bench_memory.json`` (``benchmarks/bench_memory.py``): the memory model of block-by-block
  pruning, predicted vs measured peak (``bench_memory``);
* ``results/bench_inference.json`` (``benchmarks/bench_inference.py``): latency per output format and
  phase relative to dense, parameter and checkpoint bytes (``bench_inference``);
* ``results/bench_sparsegpt_cuda.json``, ``results/bench_inference_cuda.json``: the same two benchmarks
  on a lent GPU (``benchmarks/device_check.py``, one device call; TinyLlama-shaped block, random-weight
  SmolLM2 with the 2:4 semi-structured format); until one has come back their blocks say so.

A missing JSON raises ``MissingBenchResults`` (both a ``FileNotFoundError`` and a ``ValueError``), a
JSON of another format a ``ValueError``; both say which command re-creates it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

FORMAT = 1  # bump when the layout of the JSON changes; older files are then refused with "re-run ..."

COMMANDS = {  # the command that (re)creates each file, as the docs were generated
    "bench_sparsegpt": "python benchmarks/bench_sparsegpt.py --threads 1 --repeats 3",
    "sparsegpt_precision": "python benchmarks/bench_sparsegpt.py --threads 1 --repeats 3 --model-precision",
    "bench_memory": "python benchmarks/bench_memory.py --threads 1 --sizes 8x256,64x256 --repeats 2",
    "bench_inference": "python benchmarks/bench_inference.py --threads 1 --repeats 3",
    # on a lent GPU, one device call: ``benchmarks/device_check.py`` (its docstring); the files come back
    # under these names
    "bench_sparsegpt_cuda": "python3 benchmarks/device_check.py run --out-dir $OUT",
    "bench_inference_cuda": "python3 benchmarks/device_check.py run --out-dir $OUT",
}
NOT_ON_A_GPU = ("Not measured on a GPU yet: no session has been lent one since this benchmark was prepared. "
                "`benchmarks/device_check.py` runs it in one device call (its docstring says how); the file "
                "then goes to `results/{file}.json` and this block is regenerated from it.")

MIB = 2 ** 20


class MissingBenchResults(FileNotFoundError, ValueError):
    """A benchmark's results JSON does not exist (yet)."""


# --- writing (the benchmark scripts) ------------------------------------------------------------

def environment(device, threads: int) -> dict:
    """Where and how a benchmark runs: device, torch, threads, CPU count, date, load average now."""
    import torch
    dev = str(device)
    env = {"device": dev, "device_name": cpu_name(), "torch": torch.__version__,
           "python": platform.python_version(), "threads": int(threads), "cpu_count": os.cpu_count(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "argv": " ".join(sys.argv), "loadavg_start": _loadavg()}
    if dev.startswith("cuda"):
        env["device_name"] = torch.cuda.get_device_name(torch.device(dev))
        env["cuda"] = torch.version.cuda
    return env


from minilib.determinism import cpu_name  # noqa: E402  (one reader of the CPU's name)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def write_bench(path: str | os.PathLike, name: str, env: dict, data: dict) -> Path:
    """Write ``data`` with its ``env`` (``environment(...)``; the load average now is added as the end's)
    atomically to ``path`` as ``{"benchmark": name, "format": FORMAT, "env": ..., **data}``."""
    from minilib.results import write_results
    if name not in COMMANDS:
        raise ValueError(f"name must be one of {sorted(COMMANDS)}, got {name!r}")
    env = {"loadavg_end": _loadavg(), **env}  # an env that already has it keeps it
    return write_results(path, {"benchmark": name, "format": FORMAT, "env": env, **data})


# --- reading ------------------------------------------------------------------------------------

def load_bench(results_dir: str | os.PathLike, name: str, need: tuple = (), file: str | None = None) -> dict:
    """``results/<file>.json`` (``file``: ``name``, else e.g. ``bench_inference_cuda`` for benchmark
    ``bench_inference`` run on a GPU); missing, of another format or benchmark, or without the keys
    ``need`` -> an error naming the command that re-creates it."""
    file = file or name
    p = Path(results_dir) / f"{file}.json"
    again = f"re-run `{COMMANDS[file]}`"
    if not p.is_file():
        raise MissingBenchResults(f"{p} is missing: {again} to create it")
    try:
        res = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON ({e}): {again}") from None
    if not isinstance(res, dict) or res.get("format") != FORMAT or res.get("benchmark") != name:
        got = res.get("format") if isinstance(res, dict) else None
        raise ValueError(f"{p} is in an old format (format {got!r}, this version reads format {FORMAT} of "
                         f"benchmark {name!r}): {again}")
    missing = [k for k in ("env", *need) if k not in res or res[k] is None]
    if missing:
        raise ValueError(f"{p} has no {missing}: it was written by an older or partial run; {again}")
    return res


def _med_range(v, fmt: str = ".2f", unit: str = "") -> str:
    v = list(v)
    m = statistics.median(v)
    if len(v) == 1:
        return f"{m:{fmt}}{unit}"
    return f"{m:{fmt}}{unit} ({min(v):{fmt}}-{max(v):{fmt}})"


def _where(env: dict) -> str:
    dev = env["device"].split(":")[0]
    what = "CPU" if dev == "cpu" else f"{env['device_name']}"
    th = f", {env['threads']} thread{'s' if env['threads'] != 1 else ''}" if dev == "cpu" else ""
    load = [x for x in (env.get("loadavg_start"), env.get("loadavg_end")) if x is not None]
    lavg = ""
    if load:
        lo, hi = min(load), max(load)
        lavg = (f"; 1-minute load average {lo:.1f}" + (f"-{hi:.1f}" if hi - lo >= 0.05 else "")
                + f" on {env['cpu_count']} cores")
    return f"{what}{th}, torch {env['torch']}, {env['date'][:10]}{lavg}"


def _noisy(env: dict) -> str:
    load = [x for x in (env.get("loadavg_start"), env.get("loadavg_end")) if x is not None]
    if load and env.get("cpu_count") and max(load) > env["cpu_count"]:
        return " (a shared machine loaded beyond its cores: absolute times are noisy and slow; the ratios are the point)"
    return ""


# --- part 1: ours vs the reference port -------------------------------------------------------

def table_speed(results_dir: Path, file: str = "bench_sparsegpt") -> str:
    """Ours vs the plain reference port on one synthetic block: times (median and range of the
    repeats), peak memory, reconstruction error; ratios ours / reference."""
    res = load_bench(results_dir, "bench_sparsegpt", ("shape", "variants", "groups", "input_widths"), file)
    env, sh, v = res["env"], res["shape"], res["variants"]
    o, r = v["ours"], v["reference"]
    n_rep = len(o["accumulate_s"])
    lines = [f"{_where(env)}; one synthetic block of the shapes of {sh['model']} (hidden {sh['hidden']}, FFN "
             f"{sh['ffn']}, KV {sh['kv']}), {sh['tokens']:,} calibration tokens, SparseGPT {res['sparsity']:.0%} "
             f"against the plain port of the reference on the same layers and inputs; median (range) of {n_rep} "
             f"runs, each in a fresh process, the variants interleaved{_noisy(env)}.", "",
             "| | ours | reference port | ours / reference: ratio of medians (range over pairs of runs) |",
             "|---|---|---|---|"]

    def ratio(a, b):
        m = statistics.median(a) / statistics.median(b)
        if len(a) == 1 and len(b) == 1:
            return f"{m:.2f}"
        return f"{m:.2f} ({min(a) / max(b):.2f}-{max(a) / min(b):.2f})"

    tot = {k: [x + y for x, y in zip(d["accumulate_s"], d["solve_s"])] for k, d in (("o", o), ("r", r))}
    for label, a, b in (("Hessian accumulation", o["accumulate_s"], r["accumulate_s"]),
                        ("solver", o["solve_s"], r["solve_s"]), ("total", tot["o"], tot["r"])):
        lines.append(f"| {label} | {_med_range(a, unit=' s')} | {_med_range(b, unit=' s')} | {ratio(a, b)} |")
    mem = res.get("memory", "peak RSS growth")
    po, pr = ([x / MIB for x in d["peak_bytes"]] for d in (o, r))
    lines.append(f"| {mem} | {_med_range(po, '.1f', ' MiB')} | {_med_range(pr, '.1f', ' MiB')} | {ratio(po, pr)} |")
    er = [o["rel_error"][n] / r["rel_error"][n] for n in o["rel_error"]]
    lines.append(f"| reconstruction error | | | median {statistics.median(er):.4f}, range {min(er):.4f}-"
                 f"{max(er):.4f} over {len(er)} layers |")
    # the Hessian work from the shapes: one c x c product per distinct input (ours) or per layer (reference)
    w = res["input_widths"]
    ours_work = sum(w[g] ** 2 for g in res["groups"])
    ref_work = sum(len(names) * w[g] ** 2 for g, names in res["groups"].items())
    terms = {}
    for g, names in res["groups"].items():
        terms.setdefault(w[g], [0, 0])
        terms[w[g]][0] += 1
        terms[w[g]][1] += len(names)

    def expr(i):
        return " + ".join(f"{c[i]} x {wd}^2" if c[i] > 1 else f"{wd}^2" for wd, c in terms.items())
    acc = statistics.median(o["accumulate_s"]) / statistics.median(r["accumulate_s"])
    sol = statistics.median(r["solve_s"]) / statistics.median(o["solve_s"])
    worst = max(abs(x - 1) for x in er)
    lo, hi = min(po) / max(pr), max(po) / min(pr)
    peak = ("the runs do not resolve a difference in peak memory (its range over pairs of runs spans 1)"
            if lo <= 1 <= hi else f"ours peaked {'lower' if hi < 1 else 'higher'} in every pair of runs")
    lines += ["", f"Hessian work from the shapes ({len(w)} shared Hessians against {sum(map(len, res['groups'].values()))} "
              f"per-layer ones): ({expr(0)}) / ({expr(1)}) = {ours_work / ref_work:.2f} multiply-adds per token; "
              f"measured accumulation ratio {acc:.2f}.  The solver ran {sol:.1f}x as fast as the reference port's; "
              f"the layers' reconstruction errors differ by at most {worst:.2%}; {peak}."]
    return "\n".join(lines)


# --- part 2: TF32 / bf16 Hessian inputs on the block ---------------------------------------------

def table_block_precision(results_dir: Path) -> str:
    """Per layer: error with a TF32 / bf16-input Hessian relative to the fp32 Hessian's (median and
    range over the layers)."""
    res = load_bench(results_dir, "bench_sparsegpt", ("shape", "precision"))
    env, sh, pr = res["env"], res["shape"], res["precision"]
    tf32 = "emulated" if pr["tf32_mode"] == "emulated" else "tensor cores"
    lines = [f"One synthetic {sh['model']}-shaped block, {sh['tokens']:,} calibration tokens, SparseGPT "
             f"{res['sparsity']:.0%}; {_where(env)}, TF32 {tf32}:", "",
             f"| Hessian accumulated from | error / error with the fp32 Hessian, over the {len(pr['ratio']['tf32'])} layers |",
             "|---|---|"]
    labels = {"tf32": f"TF32-rounded inputs ({tf32})", "bf16": "bf16-rounded inputs"}
    worst = 0.0
    for p, label in labels.items():
        x = list(pr["ratio"][p].values())
        worst = max(worst, max(abs(v - 1) for v in x))
        lines.append(f"| {label} | median {statistics.median(x):.5f}, range {min(x):.5f}-{max(x):.5f} |")
    lines += ["", f"So rounding the Hessian's inputs to TF32 or bf16 changed the layer-wise error by at most "
              f"{worst:.2%} on this block."]
    return "\n".join(lines)


# --- part 3: the whole model --------------------------------------------------------------------

CORPORA = {"c4": "C4", "wiki": "Wikipedia"}  # the embedded corpora's names in prose

def table_model_precision(results_dir: Path) -> str:
    """The embedded model pruned with fp32 forwards, bf16 forwards and TF32 Hessians: perplexity
    (bootstrap over windows), mean layer errors, and each run / fp32 (paired bootstrap over windows)."""
    from minilib.eval.perplexity import perplexity_ratio_ci
    res = load_bench(results_dir, "sparsegpt_precision", ("setup", "runs"))
    env, s, runs = res["env"], res["setup"], res["runs"]
    if "fp32" not in runs:
        raise ValueError(f"sparsegpt_precision.json has no 'fp32' run: re-run `{COMMANDS['sparsegpt_precision']}`")
    tf32 = "emulated" if s.get("tf32_mode") == "emulated" else "tensor cores"
    fp = runs["fp32"]["perplexity"]
    cc, ec = (CORPORA.get(s[k], s[k]) for k in ("calib_corpus", "eval_corpus"))
    lines = [f"`{s['model']}`, SparseGPT {s['sparsity']:.0%}, {s['calib'][0]} x {s['calib'][1]} {cc} "
             f"calibration tokens, {s['heldout'][0]} x {s['heldout'][1]} held-out {cc} tokens, "
             f"perplexity on {fp['windows']} x {fp['seqlen']} {ec} test tokens (95% bootstrap "
             f"interval over windows; ratios paired over the windows); one run each; {_where(env)}, "
             f"{s.get('autocast', 'bf16 autocast')}, TF32 {tf32}:", "",
             "| run | perplexity | mean layer error, in-sample | mean layer error, held-out | "
             "perplexity / fp32 run (95% CI, paired over windows) |", "|---|---|---|---|---|"]
    verdicts = []
    for name, r in runs.items():
        p = r["perplexity"]
        cell = ""
        if name != "fp32":
            ci = perplexity_ratio_ci(p, fp)
            cell = f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"
            if ci.low <= 1 <= ci.high:
                verdicts.append(f"* {r['label']}: no change of perplexity resolved (the interval contains 1).")
            else:
                verdicts.append(f"* {r['label']}: perplexity {ci.estimate - 1:+.1%} [{ci.low - 1:+.1%}, "
                                f"{ci.high - 1:+.1%}] on these windows.")
        lines.append(f"| {r['label']} | {p['ppl']:.2f} [{p['ci95_low']:.2f}, {p['ci95_high']:.2f}] | "
                     f"{r['mean_rel_error']:.5f} | {r['mean_heldout_rel_error']:.5f} | {cell} |")
    return "\n".join(lines + [""] + verdicts)


# --- the memory model ---------------------------------------------------------------------------

TERM_LABELS = {"activations (2 copies)": "activations (2 copies)",
               "captured block arguments": "captured arguments",
               "Hessians of one block": "Hessians of a block",
               "solver of the largest group": "largest solver group",
               "forward temporaries (one batch)": "forward temporaries",
               "one block on the device": "the block on the device"}


def table_memory(results_dir: Path) -> str:
    """Predicted vs measured extra peak memory of block-by-block SparseGPT per calibration size."""
    res = load_bench(results_dir, "bench_memory", ("model", "runs"))
    env, runs = res["env"], res["runs"]
    if not runs:
        raise ValueError(f"bench_memory.json has no runs: re-run `{COMMANDS['bench_memory']}`")
    terms = list(runs[0]["terms"])
    cuda = any("cuda_peak" in x for rep in runs for x in rep["repeats"])
    n_rep = {len(r["repeats"]) for r in runs}
    how = "" if n_rep == {1} else f"; median (range) of {'/'.join(map(str, sorted(n_rep)))} processes"
    note = f"`{res['model']}`"
    if res.get("model_choice") == "auto":
        note += (" (`--model auto`: the largest embedded decoder in the cache; "
                 + ("`gemma3-270m` was not fetched" if res["model"] != "gemma3-270m" else "the optional one") + ")")
    head = ["calibration", *[TERM_LABELS.get(t, t) for t in terms], "predicted extra peak",
            "measured extra peak RSS", "measured / predicted"] + (["CUDA peak allocated"] if cuda else [])
    lines = [f"{note}, parameters {runs[0]['model_bytes'] / MIB:.0f} MiB; SparseGPT {res.get('sparsity', 0.5):.0%}; "
             f"{_where(env)}; one fresh process per run{how}:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    meas, allm, over = [], [], []
    for r in runs:
        m = [x["peak"] - x["rss_before"] for x in r["repeats"]]
        meas.append(statistics.median(m))
        allm.append(m)
        over += [f"{r['n']} x {r['T']}" for x in m if x > sum(r["terms"].values())][:1]
        pred = sum(r["terms"].values())
        row = [f"{r['n']} x {r['T']} tokens", *[f"{r['terms'][t] / MIB:.1f} MiB" for t in terms],
               f"{pred / MIB:.1f} MiB", _med_range([x / MIB for x in m], ".1f", " MiB"),
               _med_range([x / pred for x in m])]
        if cuda:
            row.append(_med_range([x["cuda_peak"] / MIB for x in r["repeats"]], ".1f", " MiB"))
        lines.append("| " + " | ".join(row) + " |")
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        dm = meas[-1] - meas[0]
        lo, hi = min(allm[-1]) - max(allm[0]), max(allm[-1]) - min(allm[0])
        dp = sum(b["terms"].values()) - sum(a["terms"].values())
        rng = f" (range over pairs of processes {lo / MIB:.1f}-{hi / MIB:.1f} MiB)" if hi > lo else ""
        lines += ["", f"Growing the calibration set from {a['n']} x {a['T']} to {b['n']} x {b['T']} tokens grew "
                  f"the measured peak by {dm / MIB:.1f} MiB{rng} against {dp / MIB:.1f} MiB predicted ({dm / dp:.2f})"
                  + (": the terms that grow with the calibration set underestimate the growth." if lo > dp else
                     ": the terms that grow with the calibration set overestimate the growth." if hi < dp else ".")]
    lines += ["", "Every measured peak is below its prediction: the model is an upper bound on these runs." if not over
              else f"The measured peak exceeds the prediction at {', '.join(over)} tokens: the model is not an upper "
              "bound there."]
    return "\n".join(lines)


def table_inference(results_dir: Path, file: str = "bench_inference") -> str:
    """Per format: parameters, bytes, and latency relative to dense per phase (median over rounds)."""
    res = load_bench(results_dir, "bench_inference", ("rows", "formats"), file)
    rows, info = res["rows"], res["formats"]
    cases = list(dict.fromkeys((r["phase"], r["tokens"], r["batch"]) for r in rows))
    head = [f"prefill {t}" if p == "prefill" else f"decode, batch {b}" for p, t, b in cases]
    timed = f", every format timed in {res['dtype']}" if res.get("dtype") else ""
    out = [f"{res['model']} on {_where(res['env'])}{timed}{_noisy(res['env'])}. Latency / dense: median over "
           f"{res['repeats']} interleaved rounds of format / dense in the same round (below 1 = faster); decoding "
           f"{res['new_tokens']} tokens with the KV cache after a {res['prompt']}-token prompt.", "",
           "| format | params | parameter MiB | checkpoint MiB | " + " | ".join(head) + " |",
           "|---|---|---|---|" + "---|" * len(head)]
    for f, i in info.items():
        cells = []
        for c in cases:
            r = next((r for r in rows if r["format"] == f and (r["phase"], r["tokens"], r["batch"]) == c), None)
            cells.append(f"{r['ratio_to_dense']:.2f}" if r else "")
        ck = f"{i['checkpoint_bytes'] / MIB:.1f}" if i.get("checkpoint_bytes") else ""
        out.append(f"| {f} | {i['params']:,} | {i['param_bytes'] / MIB:.1f} | {ck} | " + " | ".join(cells) + " |")
    for nm in res.get("not_measured", []):
        out.append(f"\n{nm['format']}: not measured here ({nm['why']}).")
    notes = [f"* {f}: {i['note']}" for f, i in info.items() if i.get("note")]
    return "\n".join(out + [""] + notes)


def on_a_gpu(table, file: str):
    """``table`` of ``results/<file>.json`` (a GPU run of ``benchmarks/device_check.py``), or, while no
    GPU run has come back, the sentence that says so and how to run it."""
    def render(results_dir: Path) -> str:
        try:
            return table(results_dir, file)
        except MissingBenchResults:
            return NOT_ON_A_GPU.format(file=file)
    render.__doc__ = f"{table.__doc__.splitlines()[0]} On a GPU: results/{file}.json."
    return render


TABLES = {"bench_inference_cuda": on_a_gpu(table_inference, "bench_inference_cuda"),
          "bench_sparsegpt_cuda": on_a_gpu(table_speed, "bench_sparsegpt_cuda"),
          "bench_inference": table_inference, "bench_sparsegpt": table_speed, "bench_sparsegpt_precision": table_block_precision,
          "sparsegpt_precision": table_model_precision, "bench_memory": table_memory}
