"""The measured tables of docs/sparsegpt.md (minilib.tables.benchmarks): rendered from small
synthetic results JSON written by the benchmarks' own writer, and a clear "re-run ..." error when a
JSON is missing, of an old format or partial."""

import json
import math
from pathlib import Path

import pytest

from minilib.tables import benchmarks as bt
from tools import tables

ROOT = Path(__file__).resolve().parent.parent
MIB = 2 ** 20
ENV = {"device": "cpu", "device_name": "test cpu", "torch": "2.13.0", "python": "3.11", "threads": 1,
       "cpu_count": 2, "date": "2026-01-02T03:04:05+00:00", "argv": "bench", "loadavg_start": 9.0,
       "loadavg_end": 9.0}
GROUPS = {"attn": ["q", "k", "v"], "o": ["o"], "mlp": ["gate", "up"], "down": ["down"]}


def _sparsegpt(d: Path) -> None:
    bt.write_bench(d / "bench_sparsegpt.json", "bench_sparsegpt", ENV, {
        "shape": {"model": "Tiny", "name": "tiny", "hidden": 4, "ffn": 8, "kv": 2, "tokens": 4096, "chunk": 2048},
        "sparsity": 0.5, "repeats": 3, "groups": GROUPS, "input_widths": {"attn": 4, "o": 4, "mlp": 4, "down": 8},
        "memory": "peak RSS growth",
        "variants": {"ours": {"accumulate_s": [1.0, 2.0, 3.0], "solve_s": [1.0, 1.0, 1.0], "peak_bytes": [100 * MIB],
                              "rel_error": {"q": 1.0, "k": 1.1}},
                     "reference": {"accumulate_s": [4.0, 4.0, 5.0], "solve_s": [3.0, 3.0, 3.0], "peak_bytes": [200 * MIB],
                                   "rel_error": {"q": 1.0, "k": 1.0}}},
        "precision": {"tf32_mode": "emulated", "rel_error": {},
                      "ratio": {"tf32": {"q": 1.0, "k": 1.001, "v": 0.999}, "bf16": {"q": 1.002, "k": 0.9995, "v": 1.0}}}})


def _ppl(nll, T=4, ppl=None, lo=None, hi=None):
    ppl = ppl or math.exp(sum(nll) / (len(nll) * T))
    return {"ppl": ppl, "ci95_low": lo or ppl * 0.9, "ci95_high": hi or ppl * 1.1, "windows": len(nll),
            "seqlen": T + 1, "tokens": len(nll) * T, "nll": nll}


def _precision(d: Path) -> None:
    base = [8.0, 8.4, 7.6, 8.0]
    run = lambda label, nll, e: {"label": label, "perplexity": _ppl(nll), "mean_rel_error": e,  # noqa: E731
                                 "mean_heldout_rel_error": 2 * e}
    bt.write_bench(d / "sparsegpt_precision.json", "sparsegpt_precision", ENV, {
        "setup": {"model": "tiny-llama", "sparsity": 0.5, "calib_corpus": "c4", "calib": [8, 256], "heldout": [8, 256],
                  "eval_corpus": "wiki", "eval": [4, 5], "seed": 0, "autocast": "bf16 autocast", "tf32_mode": "emulated"},
        "runs": {"fp32": run("fp32", base, 0.01), "bf16 forwards": run("bf16 forwards", base, 0.011),
                 "tf32 Hessians": run("TF32 Hessians (emulated)", [x + 0.4 for x in base], 0.012)}})


def _memory(d: Path, repeats=((100, 80), (150,))) -> None:
    terms = lambda a: {"activations (2 copies)": a * MIB, "captured block arguments": MIB,  # noqa: E731
                       "Hessians of one block": 10 * MIB, "solver of the largest group": 20 * MIB,
                       "forward temporaries (one batch)": 60 * MIB}
    runs = []
    for (n, a), meas in zip(((8, 9), (64, 72)), repeats):
        runs.append({"n": n, "T": 256, "terms": terms(a), "model_bytes": 513 * MIB, "predicted": (a + 91) * MIB,
                     "repeats": [{"rss_before": 1000 * MIB, "peak": (1000 + m) * MIB} for m in meas]})
    bt.write_bench(d / "bench_memory.json", "bench_memory", ENV,
                   {"model": "smollm2-135m", "model_choice": "auto", "sparsity": 0.5, "runs": runs})


def test_speed_table_medians_ranges_and_ratios(tmp_path):
    _sparsegpt(tmp_path)
    out = bt.table_speed(tmp_path)
    assert "median (range) of 3 runs" in out and "4,096 calibration tokens" in out and "CPU, 1 thread" in out
    assert "load average 9.0" in out and "loaded beyond its cores" in out   # load 9 > 2 cores
    assert "| Hessian accumulation | 2.00 s (1.00-3.00) | 4.00 s (4.00-5.00) | 0.50 (0.20-0.75) |" in out
    assert "| solver | 1.00 s | 3.00 s | 0.33 (0.33-0.33) |" not in out                # constant runs keep a range
    assert "| solver | 1.00 s (1.00-1.00) | 3.00 s (3.00-3.00) | 0.33 (0.33-0.33) |" in out
    assert "| total | 3.00 s (2.00-4.00) | 7.00 s (7.00-8.00) | 0.43 (0.25-0.57) |" in out
    assert "| peak RSS growth | 100.0 MiB | 200.0 MiB | 0.50 |" in out              # one value each: no range
    assert "median 1.0500, range 1.0000-1.1000 over 2 layers" in out
    # the Hessian work from the stored shapes: (3 x 4^2 + 8^2) / (6 x 4^2 + 8^2) = 112 / 160
    assert "(3 x 4^2 + 8^2) / (6 x 4^2 + 8^2) = 0.70" in out and "4 shared Hessians against 7" in out
    assert "solver ran 3.0x as fast" in out and "differ by at most 10.00%" in out
    assert "ours peaked lower in every pair of runs" in out
    res = json.loads((tmp_path / "bench_sparsegpt.json").read_text())
    res["variants"]["ours"]["peak_bytes"] = [150 * MIB, 250 * MIB]
    (tmp_path / "bench_sparsegpt.json").write_text(json.dumps(res))
    out = bt.table_speed(tmp_path)
    assert "| peak RSS growth | 200.0 MiB (150.0-250.0) | 200.0 MiB | 1.00 (0.75-1.25) |" in out
    assert "do not resolve a difference in peak memory" in out


def test_block_precision_table(tmp_path):
    _sparsegpt(tmp_path)
    out = bt.table_block_precision(tmp_path)
    assert "| TF32-rounded inputs (emulated) | median 1.00000, range 0.99900-1.00100 |" in out
    assert "| bf16-rounded inputs | median 1.00000, range 0.99950-1.00200 |" in out
    assert "over the 3 layers" in out and "by at most 0.20% on this block" in out


def test_model_precision_table_pairs_over_windows(tmp_path):
    _precision(tmp_path)
    out = bt.table_model_precision(tmp_path)
    p = math.exp(2.0)
    assert f"| fp32 | {p:.2f} [{p * 0.9:.2f}, {p * 1.1:.2f}] | 0.01000 | 0.02000 |  |" in out
    assert "| bf16 forwards | " in out and "| 1.000 [1.000, 1.000] |" in out       # identical windows
    r = math.exp(0.1)                                                             # +0.1 nats per token, every window
    assert f"| {r:.3f} [{r:.3f}, {r:.3f}] |" in out
    assert "* bf16 forwards: no change of perplexity resolved" in out
    assert f"* TF32 Hessians (emulated): perplexity {r - 1:+.1%} [{r - 1:+.1%}, {r - 1:+.1%}]" in out
    assert "4 x 5 Wikipedia test tokens" in out and "8 x 256 C4 calibration" in out and "one run each" in out


def test_memory_table_and_growth(tmp_path):
    _memory(tmp_path)
    out = bt.table_memory(tmp_path)
    assert "`gemma3-270m` was not fetched" in out and "parameters 513 MiB" in out
    assert "median (range) of 1/2 processes" in out
    # 8 x 256: predicted 9 + 1 + 10 + 20 + 60 = 100 MiB, measured 80 and 100 -> median 90
    assert ("| 8 x 256 tokens | 9.0 MiB | 1.0 MiB | 10.0 MiB | 20.0 MiB | 60.0 MiB | 100.0 MiB | "
            "90.0 MiB (80.0-100.0) | 0.90 (0.80-1.00) |") in out
    assert "| 64 x 256 tokens | 72.0 MiB | 1.0 MiB | 10.0 MiB | 20.0 MiB | 60.0 MiB | 163.0 MiB | 150.0 MiB | 0.92 |" in out
    assert ("grew the measured peak by 60.0 MiB (range over pairs of processes 50.0-70.0 MiB) against 63.0 MiB "
            "predicted (0.95)." in out)
    assert "Every measured peak is below its prediction" in out
    _memory(tmp_path, repeats=((100, 120), (150,)))                                 # one process above 100 MiB
    assert "exceeds the prediction at 8 x 256 tokens" in bt.table_memory(tmp_path)
    _memory(tmp_path, repeats=((60, 62), (150, 160)))                               # growth 88-100 > 63 predicted
    assert "(range over pairs of processes 88.0-100.0 MiB) against 63.0 MiB predicted (1.49): the terms that grow " \
           "with the calibration set underestimate the growth." in bt.table_memory(tmp_path)


@pytest.mark.parametrize("name,fn,cmd", [
    ("bench_sparsegpt", bt.table_speed, "bench_sparsegpt.py --threads 1 --repeats 3`"),
    ("bench_sparsegpt", bt.table_block_precision, "bench_sparsegpt.py --threads 1 --repeats 3`"),
    ("sparsegpt_precision", bt.table_model_precision, "--model-precision`"),
    ("bench_memory", bt.table_memory, "bench_memory.py --threads 1 --sizes 8x256,64x256 --repeats 2`"),
    ("bench_inference", bt.table_inference, "bench_inference.py --threads 1 --repeats 3`"),
])
def test_missing_old_or_partial_json_says_what_to_rerun(tmp_path, name, fn, cmd):
    with pytest.raises(bt.MissingBenchResults, match=f"{name}.json is missing: re-run `python benchmarks/.*{cmd}"):
        fn(tmp_path)
    assert issubclass(bt.MissingBenchResults, ValueError) and issubclass(bt.MissingBenchResults, FileNotFoundError)
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"model": "m", "runs": []}))                        # the print-only format before
    with pytest.raises(ValueError, match=f"old format .*format None.*re-run `python benchmarks/.*{cmd}"):
        fn(tmp_path)
    p.write_text(json.dumps({"benchmark": name, "format": bt.FORMAT - 1, "env": ENV}))
    with pytest.raises(ValueError, match=f"format {bt.FORMAT - 1}.*re-run"):
        fn(tmp_path)
    p.write_text(json.dumps({"benchmark": name, "format": bt.FORMAT, "env": ENV}))  # right format, no data
    with pytest.raises(ValueError, match=r"has no \[.*re-run"):
        fn(tmp_path)
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*re-run"):
        fn(tmp_path)


def test_write_bench_records_environment_and_refuses_unknown_names(tmp_path):
    env = bt.environment("cpu", 1)
    assert env["threads"] == 1 and env["device"] == "cpu" and env["torch"] and env["date"][:2] == "20"
    path = bt.write_bench(tmp_path / "bench_memory.json", "bench_memory", env, {"model": "m", "runs": [{"n": 1}]})
    res = bt.load_bench(tmp_path, "bench_memory", ("model", "runs"))
    assert res["format"] == bt.FORMAT and res["runs"] == [{"n": 1}] and "loadavg_end" in res["env"]
    assert not list(tmp_path.glob(".*.tmp")) and path.is_file()                    # atomic: no leftovers
    with pytest.raises(ValueError, match="name must be one of"):
        bt.write_bench(tmp_path / "x.json", "bench_nope", env, {})


def test_tables_are_collected_used_in_docs_and_fill_blocks(tmp_path):
    found = tables.collect_tables()
    assert set(bt.TABLES) <= set(found) and all(found[k] is v for k, v in bt.TABLES.items())
    used = {b.name for d in tables.documents(ROOT) for b in tables.find_blocks(d.read_text(), str(d))}
    assert set(bt.TABLES) <= used  # every table appears in the README or a doc
    bench = {k: v for k, v in bt.TABLES.items()   # reproduce_timings*: tests/test_runner.py; *_cuda: test_device_check
             if not k.startswith("reproduce_timings") and not k.endswith("_cuda")}
    text = "".join(f"<!-- table:{n} -->\nold\n<!-- /table -->\n" for n in bench)
    new, stale, errors = tables.fill(text, bench, tmp_path, "doc.md")        # nothing measured yet
    assert new == text and not stale and len(errors) == len(bench) == 5
    assert all("results JSON is missing" in e and "re-run `python benchmarks/" in e for e in errors)
    _sparsegpt(tmp_path), _precision(tmp_path), _memory(tmp_path), _inference(tmp_path)
    new, stale, errors = tables.fill(text, bench, tmp_path, "doc.md")
    assert not errors and len(stale) == 5 and "old" not in new and "| reconstruction error |" in new


def _inference(d: Path) -> None:
    bt.write_bench(d / "bench_inference.json", "bench_inference", ENV, {
        "model": "tiny", "repeats": 3, "new_tokens": 8, "prompt": 16,
        "formats": {"dense": {"params": 1000, "param_bytes": 4000 * MIB, "checkpoint_bytes": 4000 * MIB, "note": ""},
                    "FFN uniform": {"params": 700, "param_bytes": 2800 * MIB, "checkpoint_bytes": None,
                                    "note": "30% removed"}},
        "rows": [{"format": f, "phase": p, "tokens": t, "batch": b, "ratio_to_dense": r, "median_s": 1.0}
                 for f, rs in (("dense", (1.0, 1.0)), ("FFN uniform", (0.8, 0.9)))
                 for (p, t, b), r in zip((("prefill", 512, 1), ("decode", 16, 16)), rs)],
        "not_measured": [{"format": "2:4 semi-structured", "why": "needs CUDA"}]})


def test_inference_table_gives_ratios_per_phase_and_what_was_not_measured(tmp_path):
    _inference(tmp_path)
    t = bt.table_inference(tmp_path)
    assert "| format | params | parameter MiB | checkpoint MiB | prefill 512 | decode, batch 16 |" in t
    assert "| FFN uniform | 700 | 2800.0 |  | 0.80 | 0.90 |" in t and "| dense | 1,000 | 4000.0 | 4000.0 | 1.00 | 1.00 |" in t
    assert "2:4 semi-structured: not measured here (needs CUDA)" in t and "* FFN uniform: 30% removed" in t
