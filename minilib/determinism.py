"""Numerical reproducibility on the CPU: the kernel pins, set in one place, and a record of them.

    import minilib                       # sets the pins (before torch is imported, see below)
    from minilib.determinism import numerics_record
    results["numerics"] = numerics_record()   # what the numbers of this run were computed with

What varies between two runs of the same code (measured on the embedded SmolLM2, SparseGPT and
Wanda at 50% and 70%; ``benchmarks/bench_numerics.py`` and ``results/numerics_spread.json``):

* nothing, at a fixed thread count on one machine: fresh processes give bitwise identical masks,
  weights and perplexities (``torch.use_deterministic_algorithms`` and ``ONEDNN_MAX_CPU_ISA`` change
  nothing here: no nondeterministic CPU op runs, and the fp32 linears go to MKL, not oneDNN);
* the **ISA that ATen dispatches to** (``ATEN_CPU_CAPABILITY``): its vectorized kernels (softmax
  among them, measured) sum in another order with 8-wide AVX2 than with 16-wide AVX-512 vectors, so an
  AVX2-only machine computes other last bits than an AVX-512 one.  Pinned: ``avx2`` wherever the CPU
  has AVX2 (every AVX-512 x86 CPU has it), so AVX2 and AVX-512 machines run the same ATen kernels;
* **MKL's code branch** (``MKL_CBWR``, conditional numerical reproducibility): MKL picks its GEMM
  and LAPACK kernels by CPU.  ``MKL_CBWR=AVX2,STRICT`` asks for the AVX2 branch in strict mode (without
  STRICT, measured on a 2-core Intel Xeon with AMX: SparseGPT's masks differed between 1 and 2 threads,
  and a re-loaded exported model's logits were not bitwise equal; with it both are); MKL honours it on Intel
  CPUs, and on AMD CPUs it refuses every ISA branch (measured on an AMD EPYC: ``mkl_cbwr_set``
  returns "unsupported branch" for SSE2..AVX-512, the variable silently becomes ``AUTO``), so only
  ``COMPATIBLE`` is the same on every x86 CPU; it is not a default because it is slow (about twice
  the time of a forward and of a solve, ``results/numerics_spread.json``), so it is left to the user
  (``MKL_CBWR=COMPATIBLE`` in the environment, or set before minilib is imported);
* **the thread count**: MKL's Cholesky (``potrf``) splits its work by threads, so the SparseGPT
  solver got another inverse Hessian at 2 threads than at 1 (the forwards and Wanda did not).
  The solver now factors on one thread (``serial_cpu``), which removes that dependence: 1 and 2
  threads give bitwise identical masks and perplexities (the GEMMs, ATen's reductions and softmax
  measured the same at 1, 2, 4 and 8 threads on the model's shapes).  The factorisation is about a
  sixth of the down projection's solve and was not measurably slower on one thread than on two.

The ATen pin did not measurably slow a forward or a solve on an AVX-512 CPU (bench, speed part).
``torch.use_deterministic_algorithms`` is not set: it changed nothing on the CPU, and on CUDA it
raises for some operations unless ``CUBLAS_WORKSPACE_CONFIG`` is set (GPU kernels are not pinned here).

The pins are environment variables read when torch first dispatches a kernel (ATen) or when MKL
initialises; they are set with ``os.environ.setdefault`` by ``set_env_defaults()``, which
``minilib/__init__`` calls before anything of minilib imports torch.  A value the user set wins, and
``MINILIB_NUMERICS=native`` sets none (each machine's fastest kernels).  Measured with torch 2.13:
``ATEN_CPU_CAPABILITY`` still takes effect when set after ``import torch`` but before the first
operation, not after it; ``MKL_CBWR`` the same before/after the first MKL call.  So a notebook or
script must import minilib before it runs any torch operation (importing it first is simplest);
``check_pins()`` says whether the pins are in effect.  Child processes inherit the variables (the
runner copies ``os.environ`` of a process that has imported minilib).
"""

from __future__ import annotations

import os
import platform
import warnings
from contextlib import contextmanager

OPT_OUT = "MINILIB_NUMERICS"          # "native": set no pins
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
                8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1",
                14: "AVX512_E1"}  # mkl_cbwr.h (AUTO, COMPATIBLE and STRICT checked against MKL_CBWR here)
MKL_STRICT = 0x10000


class NumericsWarning(UserWarning):
    """A pin that was asked for but is not in effect (set too late, or refused by the library)."""


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def env_defaults(flags: set[str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The pins for this machine: ``ATEN_CPU_CAPABILITY=avx2`` on an x86 CPU that has AVX2 and FMA
    (ATen does not check the value against the CPU: never ask an older CPU for it), and
    ``MKL_CBWR=AVX2,STRICT`` on x86 (effective on Intel CPUs; refused, i.e. ``AUTO``, on AMD ones)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "x86", "i686"):
        return {}
    flags = _cpu_flags() if flags is None else flags
    pins = {"MKL_CBWR": "AVX2,STRICT"}  # STRICT: Intel MKL otherwise splits GEMMs by thread count (measured)
    if flags is not None and {"avx2", "fma"} <= flags:
        pins["ATEN_CPU_CAPABILITY"] = "avx2"
    return pins


def set_env_defaults(environ=None) -> dict[str, str]:
    """``setdefault`` every pin of ``env_defaults()`` in ``environ`` (default ``os.environ``) unless
    ``MINILIB_NUMERICS=native``; returns the pins that were newly set.  Takes effect only before torch
    runs its first operation (see the module docstring); ``check_pins()`` verifies."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "").strip().lower() in ("native", "off", "0", "none"):
        return {}
    set_now = {}
    for k, v in env_defaults().items():
        if k not in env:
            env[k] = v
            set_now[k] = v
    return set_now


# --- what is in effect -----------------------------------------------------------------------------

def _libtorch_cpu():
    import ctypes
    import torch
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    return ctypes.CDLL(path) if os.path.exists(path) else None


def mkl_branch() -> dict | None:
    """MKL's CNR branch in effect (``{"branch": "AUTO", "strict": False, "code": 2}``), read from the
    MKL that torch links statically; None where this build does not export MKL's service calls."""
    try:
        lib = _libtorch_cpu()
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError, TypeError):
        return None
    code = int(get(-1))  # MKL_CBWR_ALL: the branch and the STRICT bit
    base = code & ~MKL_STRICT
    return {"branch": MKL_BRANCHES.get(base, str(base)), "strict": bool(code & MKL_STRICT), "code": code}


def cpu_capability() -> str:
    """The ISA ATen dispatches to now (``torch.backends.cpu.get_cpu_capability()``; reading it fixes it)."""
    import torch
    return torch.backends.cpu.get_cpu_capability()


def check_pins(warn: bool = True) -> dict[str, str]:
    """Pins asked for in the environment that this process read too late: ``{variable: what is in
    effect}`` (empty when every pin was read); warns (``NumericsWarning``) unless ``warn=False``.
    ``ATEN_CPU_CAPABILITY`` counts as too late when ATen dispatches to another ISA, ``MKL_CBWR``
    when MKL never read it (branch ``BRANCH_OFF``).  An ISA branch that MKL read and refused (every
    branch but ``COMPATIBLE`` on a non-Intel CPU: it runs ``AUTO``) is not an error; it is in
    ``numerics_record()["mkl_branch"]``."""
    bad = {}
    want = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if want in ("default", "avx2", "avx512"):
        have = cpu_capability()
        if have.lower() != want:
            bad["ATEN_CPU_CAPABILITY"] = have
    if os.environ.get("MKL_CBWR", "").strip():
        br = mkl_branch()
        if br is not None and br["branch"] in ("OFF", "BRANCH_OFF"):
            bad["MKL_CBWR"] = br["branch"]
    if bad and warn:
        why = "; ".join(f"{k}={os.environ[k]!r} asked for, {v!r} in effect" for k, v in bad.items())
        warnings.warn(f"numerics pins not in effect: {why}; torch ran an operation before minilib was imported "
                      f"(import minilib first, or set the variables before starting Python)", NumericsWarning,
                      stacklevel=2)
    return bad


def numerics_record() -> dict:
    """What the numbers of this process are computed with, for a study's results JSON: torch and its
    BLAS/LAPACK, the pins asked for (environment) and in effect (ATen ISA, MKL branch), the threads,
    the CPU.  Two runs whose records differ in ``cpu_capability``, ``mkl_branch``, ``threads`` or the
    torch/BLAS versions are not expected to agree bitwise (see ``results/numerics_spread.json``)."""
    import torch
    cfg = torch.__config__.show()
    blas = next((l.strip().lstrip("- ") for l in cfg.splitlines() if "Math Kernel Library" in l or "OpenBLAS" in l),
                None)
    flags = _cpu_flags() or set()
    br = mkl_branch() if torch.backends.mkl.is_available() else None
    return {
        "torch": torch.__version__,
        "blas": blas,
        "blas_info": _config_value(cfg, "BLAS_INFO"),
        "lapack_info": _config_value(cfg, "LAPACK_INFO"),
        "env": {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", OPT_OUT,
                                               *THREAD_VARS)},
        "cpu_capability": cpu_capability(),
        "cpu_max_isa": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else
                       (platform.machine() if not flags else "pre-avx2"),
        "mkl_branch": None if br is None else br["branch"] + (",STRICT" if br["strict"] else ""),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "solver_factorisation_threads": 1,  # minilib.prune.sparsegpt factors under serial_cpu()
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def _config_value(cfg: str, key: str) -> str | None:
    for part in cfg.replace("\n", ",").split(","):
        k, _, v = part.strip().partition("=")
        if k.split()[-1:] == [key]:
            return v
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- thread-count independence -------------------------------------------------------------------

@contextmanager
def serial_cpu(device=None):
    """Run the block on one CPU thread (torch's intra-op threads, which MKL follows), then restore the
    count: for LAPACK calls whose result depends on how the work is split between threads (MKL's
    Cholesky does).  A no-op for a CUDA ``device`` and when one thread is already in use."""
    import torch
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextmanager
def seeded(seed: int, device=None):
    """torch's global generators (the CPU's, and ``device``'s when it is CUDA) seeded with ``seed`` inside
    the block and restored to the caller's state after: what draws from them there (dropout, a layer's
    initialisation) follows ``seed``, and the caller's own draws are not moved."""
    import torch
    device = torch.device(device if device is not None else "cpu")
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


# --- comparing runs --------------------------------------------------------------------------------

def zero_digests(model, adapter=None) -> dict[str, str]:
    """``{"<block>.<layer>": sha1 of the layer's zero pattern}`` for every linear layer of every block
    (keys as in ``minilib.calib``): two prunings chose the same masks iff these agree."""
    import hashlib
    from minilib.calib.passes import linear_keys
    from minilib.models.linear import weight_oi
    out = {}
    for k, layer in linear_keys(model, adapter).items():
        z = (weight_oi(layer) == 0).cpu().contiguous()
        out[k] = hashlib.sha1(z.numpy().tobytes()).hexdigest()
    return out


def weights_digest(model) -> str:
    """sha1 of every parameter's bytes, in order: bitwise identity of two models."""
    import hashlib
    import torch
    h = hashlib.sha1()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --- reduced-precision attention under the ISA pin -------------------------------------------------

def _sdpa_probe() -> bool:
    """Whether a bf16 causal SDPA runs on this CPU as ATen dispatches now (64 tokens, head dim 64)."""
    import torch
    import torch.nn.functional as F
    q = torch.zeros(1, 1, 64, 64, dtype=torch.bfloat16)
    try:
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True
    except RuntimeError:
        return False


_FLASH_CPU_OK: bool | None = None


def reduced_precision_flash_ok() -> bool:
    """Whether torch's CPU flash-attention kernel runs in bf16/fp16 here (probed once per process).

    torch 2.13 on a CPU with AMX (Intel Sapphire Rapids and later) packs bf16 operands for AMX
    (``pack_vnni2``) but refuses to unless ATen dispatches to AVX-512, so under the AVX2 pin every
    bf16 SDPA raises "pack_vnni2 is only supported when avx512 is supported" (measured; fp32 is not
    affected, and an AVX2-only or AMD CPU runs it)."""
    global _FLASH_CPU_OK
    if _FLASH_CPU_OK is None:
        _FLASH_CPU_OK = _sdpa_probe()
    return _FLASH_CPU_OK


def _math_fallback(sdpa_forward):
    """``sdpa_forward`` (transformers' SDPA attention) with CPU bf16/fp16 queries, or queries autocast
    to them, sent to SDPA's math backend where the flash kernel cannot run
    (``reduced_precision_flash_ok``); everything else, fp32 and CUDA included, unchanged."""
    import functools

    import torch

    @functools.wraps(sdpa_forward)
    def forward(module, query, *args, **kwargs):
        reduced = (torch.bfloat16, torch.float16)
        if query.device.type == "cpu" and (query.dtype in reduced or (torch.is_autocast_enabled("cpu") and
                                           torch.get_autocast_dtype("cpu") in reduced)) \
                and not reduced_precision_flash_ok():
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel(SDPBackend.MATH):
                return sdpa_forward(module, query, *args, **kwargs)
        return sdpa_forward(module, query, *args, **kwargs)

    forward.__wrapped_by_minilib__ = True
    return forward


def install_attention_fallback() -> None:
    """Register ``_math_fallback`` as transformers' library-wide ``"sdpa"`` attention (its
    ``AttentionInterface.register``, the documented way to replace an attention function); idempotent."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface
    current = ALL_ATTENTION_FUNCTIONS.get("sdpa")
    if current is not None and not getattr(current, "__wrapped_by_minilib__", False):
        AttentionInterface.register("sdpa", _math_fallback(current))
