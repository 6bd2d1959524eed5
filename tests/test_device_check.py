"""benchmarks/device_check.py, the GPU checks as one prepared device call: the bundle it carries, the
random-weight model of SmolLM2's shapes, the commands it runs, and the tables that say what came back."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import device_check  # noqa: E402

from minilib.tables import benchmarks as bench_tables  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return device_check.prepare(tmp_path_factory.mktemp("dev") / ".device")


def test_the_bundle_fits_a_device_call_and_holds_what_the_benchmarks_read(bundle):
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 16 * 2**20                                  # far below the 64 MiB a call carries
    assert {p.name for p in (bundle / "shape").iterdir()} == set(device_check.SHAPE_FILES)   # no weights
    corpora = bundle / "cache" / "assets" / "corpora"
    assert (corpora / "wiki.utf8").is_file() and (corpora / ".minilib-manifest.json").is_file()
    assert not list(corpora.glob(".minilib-verified*"))      # the stat record is this machine's, not carried


def test_the_random_model_has_smollm2s_shapes(bundle, tmp_path, smollm2):
    import torch
    from transformers import AutoModelForCausalLM
    out = device_check.random_model(bundle / "shape", tmp_path / "m")
    m = AutoModelForCausalLM.from_pretrained(out)
    real = smollm2.model
    assert {n: tuple(p.shape) for n, p in m.state_dict().items()} == \
        {n: tuple(p.shape) for n, p in real.state_dict().items()}
    again = AutoModelForCausalLM.from_pretrained(device_check.random_model(bundle / "shape", tmp_path / "m2"))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), again.state_dict().values()))   # seeded
    assert (out / "tokenizer.json").is_file()


def test_run_needs_cuda_unless_smoke_and_runs_both_benchmarks(bundle, tmp_path, monkeypatch):
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            device_check.run(tmp_path / "out", bundle)
    seen = []

    def fake_step(name, cmd, log, env, timeout):
        seen.append((name, cmd, env["MINILIB_CACHE"]))
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)   # minilib is not installed on the device
        log[name] = {"returncode": 0}
        if name == "bench_inference":
            out = Path(cmd[cmd.index("--out") + 1])
            out.write_text(json.dumps({"model": "/tmp/x", "rows": []}))
        return True

    monkeypatch.setattr(device_check, "_step", fake_step)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    log = device_check.run(tmp_path / "out", bundle, smoke=True)
    assert [s[0] for s in seen] == ["bench_sparsegpt", "bench_inference"]
    assert all(s[2] == str(bundle / "cache") for s in seen)   # the carried cache, not $HOME's
    assert "--precision-out" in seen[0][1] and "--device" in seen[1][1]
    assert json.loads((tmp_path / "out" / "bench_inference_cuda.json").read_text())["model"].endswith("random weights")
    assert json.loads((tmp_path / "out" / "device_check.json").read_text())["smoke"] is True and log["smoke"]


def test_the_gpu_tables_say_not_measured_until_a_file_comes_back(tmp_path):
    for name in ("bench_inference_cuda", "bench_sparsegpt_cuda"):
        assert bench_tables.TABLES[name](tmp_path).startswith("Not measured on a GPU yet")
    cpu = json.loads((ROOT / "results" / "bench_inference.json").read_text())
    cpu["env"] = {**cpu["env"], "device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}
    (tmp_path / "bench_inference_cuda.json").write_text(json.dumps(cpu))
    t = bench_tables.TABLES["bench_inference_cuda"](tmp_path)
    assert "NVIDIA H100 80GB HBM3" in t and "| dense |" in t
    shutil.copy(ROOT / "results" / "bench_sparsegpt.json", tmp_path / "bench_sparsegpt_cuda.json")
    assert "ours / reference" in bench_tables.TABLES["bench_sparsegpt_cuda"](tmp_path)


def test_run_without_a_prepared_bundle_names_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        device_check.main(["run", "--out-dir", str(tmp_path / "out"), "--bundle", str(tmp_path / "nothing")])
    assert "no shape/config.json there" in capsys.readouterr().err and not (tmp_path / "out").exists()
