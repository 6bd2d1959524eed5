"""The GPU checks as one prepared command, for a session that is lent a device machine.

The device machine has no package index and no asset cache, and a call carries at most 64 MiB of the
tree, so SmolLM2's weights (94 MB GGUF) cannot travel: the inference benchmark runs on a model of
SmolLM2-135M's architecture and tokenizer with random weights (latency, memory and sizes depend on the
shapes, not on the values), and the SparseGPT benchmark on synthetic TinyLlama-1.1B-shaped layers.

Here, once (writes ``.device/``, which git ignores; about 8 MB)::

    .venv/bin/python benchmarks/device_check.py prepare

On the device machine (one ``run`` call, ``carry: [".device"]``, results under ``$OUT``)::

    PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py run --out-dir "$OUT"

``run`` does, each step timed and failures reported without stopping the rest:

1. ``bench_sparsegpt.py --shape tinyllama`` (128 x 2,048 calibration tokens, ours against the
   reference port, 3 interleaved repeats; and the 2:4 semi-structured matmuls)
   -> ``bench_sparsegpt_cuda.json``;
2. the random-weight SmolLM2-135M -> ``bench_inference.py --device cuda`` (every format, 2:4
   semi-structured included; prefill 512 and 2,048, decode at batch 1 and 16)
   -> ``bench_inference_cuda.json`` and its figure.

Back here, copy ``bench_sparsegpt_cuda.json`` and ``bench_inference_cuda.json`` into ``results/`` (the
names the tables ``bench_sparsegpt_cuda`` and ``bench_inference_cuda`` read; each records the device
with its numbers) and run ``python -m tools.tables``.  The figure that comes back is for a look: the
figures registry (``minilib.figures``) draws only the CPU run's, so do not commit it under ``figures/``.  ``--smoke`` runs both on the CPU at tiny
sizes (what the test does), to check the command before the device time is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / ".device"
SHAPE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
CACHE_ASSETS = ("corpora",)   # bench_inference's vocabulary format keeps the tokens of the wiki corpus


def prepare(bundle: Path = BUNDLE) -> Path:
    """Write ``bundle``: ``shape/`` (SmolLM2-135M's config and tokenizer, no weights) and ``cache/`` (the
    asset folders the benchmarks read, with their manifests, for ``$MINILIB_CACHE`` there)."""
    from minilib import assets
    from minilib.io import atomic_dir
    from minilib.models.loading import _smollm2_dir

    hf = _smollm2_dir()   # the HF folder derived from the embedded GGUF (built on first use)
    missing = [f for f in SHAPE_FILES if not (hf / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{hf} lacks {missing}")
    with atomic_dir(bundle, overwrite=True) as stage:
        (stage / "shape").mkdir()
        for f in SHAPE_FILES:
            shutil.copy2(hf / f, stage / "shape" / f)
        for name in CACHE_ASSETS:
            src = assets.fetch(name)
            shutil.copytree(src, stage / "cache" / "assets" / name,   # the stat record is per machine
                            ignore=shutil.ignore_patterns(f"{assets.VERIFIED}*"))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"wrote {bundle} ({size / 2**20:.1f} MiB): carry it with `carry: [\".device\"]`")
    return bundle


def random_model(shape: Path, out: Path, seed: int = 0, dtype: str = "float32") -> Path:
    """A model of ``shape``'s architecture (its ``config.json``) with seeded random weights, saved with
    its tokenizer to ``out``: the shapes of the real model, for latency and memory, not for quality."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    for f in SHAPE_FILES:
        if f != "config.json":
            shutil.copy2(shape / f, out / f)
    return out


def _step(name: str, cmd: list[str], log: dict, env: dict, timeout: float) -> bool:
    print(f"[device_check] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    log[name] = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1), "command": cmd}
    print(f"[device_check] {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {log[name]['seconds']} s", flush=True)
    return rc == 0


def run(out_dir: Path, bundle: Path = BUNDLE, smoke: bool = False, step_timeout: float = 280.0) -> dict:
    """The device checks (see the module docstring); returns and writes ``device_check.json``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MINILIB_CACHE": str(bundle / "cache"), "PYTHONUNBUFFERED": "1",   # minilib from this
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # tree: not installed there
    py = sys.executable
    cuda = torch.cuda.is_available()
    log: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
                 "smoke": smoke}
    if not smoke and not cuda:
        raise SystemExit("device_check run: no CUDA device here (use --smoke to check the command on the CPU)")
    sgpt = [py, "benchmarks/bench_sparsegpt.py", "--out", str(out_dir / "bench_sparsegpt_cuda.json"),
            "--precision-out", ""]
    sgpt += ["--shape", "smollm2", "--tokens", "256", "--repeats", "1"] if smoke else \
        ["--shape", "tinyllama", "--repeats", "3"]
    _step("bench_sparsegpt", sgpt, log, env, step_timeout)
    model = random_model(bundle / "shape", Path(os.environ.get("TMPDIR", "/tmp")) / "smollm2-135m-random-weights")
    inf = [py, "benchmarks/bench_inference.py", "--model", str(model), "--out",
           str(out_dir / "bench_inference_cuda.json"), "--figures-dir", str(out_dir)]
    inf += ["--device", "cpu", "--prefill", "16", "--batch", "1", "--new-tokens", "2", "--repeats", "1",
            "--threads", "1"] if smoke else ["--device", "cuda"]
    if _step("bench_inference", inf, log, env, step_timeout):
        res_path = out_dir / "bench_inference_cuda.json"
        res = json.loads(res_path.read_text())
        res["model"] = "SmolLM2-135M's architecture and tokenizer with random weights"   # the caption says so
        res_path.write_text(json.dumps(res, indent=1))
    (out_dir / "device_check.json").write_text(json.dumps(log, indent=1))
    return log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/device_check.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write .device/ (here, before the device call)")
    p.add_argument("--bundle", default=str(BUNDLE))
    r = sub.add_parser("run", help="run the checks (on the device machine)")
    r.add_argument("--out-dir", required=True)
    r.add_argument("--bundle", default=str(BUNDLE))
    r.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check the command, measure nothing")
    r.add_argument("--step-timeout", type=float, default=280.0, help="seconds each step may take")
    a = ap.parse_args(argv)
    if a.cmd == "prepare":
        prepare(Path(a.bundle))
        return 0
    if not (Path(a.bundle) / "shape" / "config.json").is_file():
        ap.error(f"--bundle {a.bundle}: no shape/config.json there; run `benchmarks/device_check.py prepare` here "
                 "and carry .device")
    log = run(Path(a.out_dir), Path(a.bundle), a.smoke, a.step_timeout)
    return 0 if all(v.get("returncode") == 0 for v in log.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
