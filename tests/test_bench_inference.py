"""benchmarks/bench_inference.py on a tiny model: every format is built, measured per phase and
written with what it really saves (the exported non-uniform FFN comes back padded)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_inference  # noqa: E402


def test_tiny_run_writes_every_format_phase_and_the_sizes(tmp_path):
    out = tmp_path / "bench_inference.json"
    bench_inference.main(["--model", "tiny-llama", "--device", "cpu", "--prefill", "16", "--batch", "1", "2",
                          "--new-tokens", "2", "--repeats", "1", "--threads", "1", "--out", str(out),
                          "--figures-dir", str(tmp_path)])
    res = json.loads(out.read_text())
    f = res["formats"]
    assert list(f) == ["dense", "dense with zeros", "FFN uniform", "FFN uniform, exported", "FFN non-uniform",
                       "FFN non-uniform, exported", "vocabulary", "vocabulary, exported"]
    assert f["dense with zeros"]["params"] == f["dense"]["params"]
    assert f["FFN uniform"]["params"] < f["dense"]["params"]
    assert f["FFN uniform, exported"]["params"] == f["FFN uniform"]["params"]          # equal widths: no padding
    assert f["FFN non-uniform, exported"]["params"] > f["FFN non-uniform"]["params"]   # padded to the widest
    assert f["vocabulary"]["param_bytes"] < f["dense"]["param_bytes"] / 2
    assert all(v["checkpoint_bytes"] > 0 for v in f.values())
    cases = {(r["phase"], r["tokens"], r["batch"]) for r in res["rows"]}
    assert cases == {("prefill", 16, 1), ("decode", 16, 1), ("decode", 16, 2)}
    assert all(r["ratio_to_dense"] == 1.0 for r in res["rows"] if r["format"] == "dense")
    assert all(r["median_s"] > 0 and len(r["repeats"]) == 1 for r in res["rows"])
    assert res["not_measured"][0]["format"] == "2:4 semi-structured" and res["env"]["device"] == "cpu"
    assert (tmp_path / "bench_inference.pdf").is_file() and (tmp_path / "bench_inference.png").is_file()


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit):
        bench_inference.main(["--model", "tiny-llama", "--prefill", "0"])


def test_every_format_is_timed_in_the_dtype_asked_for(tmp_path, monkeypatch):
    """--dtype bfloat16: every model is cast before timing (a ratio to dense is then the format's, not the
    dtype's), the JSON and the table say so, and the sizes stay those of the saved models."""
    import torch

    import bench_inference as bi
    from minilib.tables.benchmarks import table_inference
    seen = {}
    real = bi.measure

    def spy(models, *args, **kw):
        seen.update({n: {p.dtype for p in m.parameters()} for n, m in models.items()})
        return real(models, *args, **kw)

    monkeypatch.setattr(bi, "measure", spy)
    out = tmp_path / "bench_inference.json"
    bi.main(["--model", "tiny-llama", "--device", "cpu", "--dtype", "bfloat16", "--prefill", "8", "--batch", "1",
             "--new-tokens", "1", "--repeats", "1", "--threads", "1", "--out", str(out), "--figures-dir", str(tmp_path)])
    assert seen and all(d == {torch.bfloat16} for d in seen.values())
    res = json.loads(out.read_text())
    assert res["dtype"] == "bfloat16" and res["formats"]["dense"]["param_bytes"] == 4 * res["formats"]["dense"]["params"]
    assert "every format timed in bfloat16" in table_inference(tmp_path)
