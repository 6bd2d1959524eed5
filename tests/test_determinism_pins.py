"""The numerics pins of ``minilib.determinism``: which are set, that a user's value wins, that they
take effect in a fresh process that imports minilib before torch runs anything, and the record."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minilib import determinism as det

ROOT = Path(__file__).resolve().parent.parent
AVX2 = {"avx2", "fma", "sse2"}


def test_env_defaults_by_machine():
    assert det.env_defaults(AVX2 | {"avx512f"}, "x86_64") == {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
    # a CPU without AVX2 is never asked for it (ATen does not check the value against the CPU)
    assert det.env_defaults({"sse2", "avx"}, "x86_64") == {"MKL_CBWR": "AVX2,STRICT"}
    assert det.env_defaults(set(), "x86_64") == {"MKL_CBWR": "AVX2,STRICT"}  # no flags known
    assert det.env_defaults(AVX2, "aarch64") == {}


def test_set_env_defaults_respects_the_user(monkeypatch):
    monkeypatch.setattr(det, "env_defaults", lambda: {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"})
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert det.set_env_defaults(env) == {"MKL_CBWR": "AVX2,STRICT"}
    assert env == {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX2,STRICT"}
    assert det.set_env_defaults(env) == {}  # idempotent
    env = {"MINILIB_NUMERICS": "native"}
    assert det.set_env_defaults(env) == {} and env == {"MINILIB_NUMERICS": "native"}


def test_pins_present_in_this_process():
    want = det.env_defaults()
    if os.environ.get(det.OPT_OUT, "").lower() == "native":
        pytest.skip("MINILIB_NUMERICS=native: no pins asked for")
    for k in want:
        assert k in os.environ, k  # minilib/__init__ set it (or the user did)
    assert det.check_pins(warn=False) == {}


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", det.OPT_OUT)}
    e.update(env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


PROBE = ("import minilib, os, json, torch\n"
         "from minilib.determinism import numerics_record\n"
         "torch.ones(3).softmax(0)\n"
         "print(json.dumps(numerics_record()))")


@pytest.mark.skipif("ATEN_CPU_CAPABILITY" not in det.env_defaults(), reason="pins ATen only on x86 with AVX2")
def test_fresh_process_pinned_and_overridden():
    p = _fresh(PROBE)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.splitlines()[-1])
    assert rec["cpu_capability"] == "AVX2" and rec["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert rec["env"]["MKL_CBWR"] == "AVX2,STRICT" and rec["mkl_branch"] not in (None, "OFF", "BRANCH_OFF")
    p = _fresh(PROBE, ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE")  # the user's values win
    rec = json.loads(p.stdout.splitlines()[-1])
    assert rec["cpu_capability"] == "DEFAULT" and rec["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert rec["mkl_branch"] == "COMPATIBLE"
    p = _fresh(PROBE, MINILIB_NUMERICS="native")
    rec = json.loads(p.stdout.splitlines()[-1])
    assert rec["env"]["ATEN_CPU_CAPABILITY"] is None and rec["env"]["MKL_CBWR"] is None


@pytest.mark.skipif("ATEN_CPU_CAPABILITY" not in det.env_defaults(), reason="pins ATen only on x86 with AVX2")
def test_too_late_is_reported():
    flags = det._cpu_flags() or set()
    if "avx512f" not in flags:
        pytest.skip("on a CPU without AVX-512 the native ISA is AVX2: too late cannot be told apart")
    p = _fresh("import torch; torch.ones(3).softmax(0)\nimport minilib")
    assert p.returncode == 0 and "NumericsWarning" in p.stderr and "ATEN_CPU_CAPABILITY" in p.stderr, p.stderr


def test_serial_cpu_restores_the_threads():
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with det.serial_cpu():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with det.serial_cpu("cpu"):
                raise KeyError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)


def test_numerics_record_is_plain_json():
    rec = det.numerics_record()
    json.dumps(rec)
    for k in ("torch", "blas", "env", "cpu_capability", "mkl_branch", "threads", "cpu"):
        assert k in rec
    assert rec["threads"] == torch.get_num_threads()
    assert rec["torch"] == torch.__version__


def test_runner_children_inherit_the_pins(tmp_path):
    from minilib.runner.execute import RunTask, _child_env
    task = RunTask("r", "nb.ipynb", str(tmp_path), {}, {}, str(tmp_path / "r.json"), str(tmp_path), threads=1)
    env = _child_env(task)
    for k, v in det.env_defaults().items():
        assert env[k] == os.environ.get(k, v)


def test_digests_see_the_zero_pattern():
    from minilib.models import load
    model, _, _ = load("tiny-llama")
    a, w = det.zero_digests(model), det.weights_digest(model)
    k = next(iter(a))
    from minilib.calib.passes import resolve
    layer = resolve(model, k)
    with torch.no_grad():
        layer.weight.view(-1)[0] = 0.0
    b = det.zero_digests(model)
    assert b[k] != a[k] and all(b[j] == a[j] for j in a if j != k)
    assert det.weights_digest(model) != w
