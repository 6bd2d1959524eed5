"""2:4 weights to PyTorch's semi-structured sparse format (CUDA sparse tensor cores).

Only ``nn.Linear`` layers whose weight holds at least 2 zeros in every 4 inputs and whose shape the
kernels accept are converted; the rest stay dense.  A layer pruned 2:4 along a permutation of its
input columns (RIA's ``permute`` option, ``minilib.prune.permute``) is 2:4 only in that order, not in
memory order; converting it would need ``W[:, perm]`` and a gather of the inputs, which this module
does not do, so such a model is refused (``PermutedNMError``) before anything is converted.

**It does not always pay.**  Measured on an H100 (``benchmarks/bench_sparsegpt.py``): the converted model ran at 4.7-9.7x the dense latency
and cuSPARSELt at 0.61x the dense speed on a single 11008x4096 fp16 linear; PyTorch's
CUTLASS kernels need compute capability 8.x (A100-class), cuSPARSELt must be present for 9.x.  So
every conversion times each layer, dense against sparse, on a probe input of ``tokens`` rows
(CUDA-synchronized ``minilib.device.Timer``), returns the speed-ups, warns (``SlowSparseWarning``)
when the sparse layers are slower than the dense ones, and with ``min_speedup`` keeps every layer
that would not gain that much dense.  ``benchmarks/bench_sparsegpt.py`` measures the same on the
model's and on larger shapes.
"""

from __future__ import annotations

import statistics
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from minilib.device import Timer
from minilib.models.adapters import Adapter, adapter_for
from minilib.prune.masks import SparsityError, is_nm
from minilib.prune.permute import layer_permutation


class SlowSparseWarning(UserWarning):
    """Semi-structured 2:4 layers measured slower than their dense originals."""


class PermutedNMError(SparsityError):
    """A layer is 2:4 only along a permutation of its input columns, not in memory order."""


def check_memory_order(model: nn.Module, adapter: Adapter | None = None) -> None:
    """Raise ``PermutedNMError`` naming the layers that ``prune_model`` pruned N:M along a channel
    permutation and whose weight is not 2:4 in memory order (the kernels read memory order: they would
    drop weights the mask kept, or keep the pattern nowhere)."""
    adapter = adapter or adapter_for(model)
    bad = []
    for bi, block in enumerate(adapter.blocks(model)):
        for name, layer in adapter.linear_layers(block).items():
            w = getattr(layer, "weight", None)
            if layer_permutation(layer) is not None and isinstance(w, torch.Tensor) and w.dim() == 2 \
                    and type(w) in (torch.Tensor, nn.Parameter) and not is_nm(w.detach(), 2, 4):
                bad.append(f"{bi}.{name}")
    if bad:
        raise PermutedNMError(f"{len(bad)} layer(s) were pruned N:M along a permutation of their input channels "
                              f"(e.g. {bad[0]}; prune_model's permute option, the order in "
                              "PruneReport.permutations) and are not 2:4 in memory order; the semi-structured "
                              "kernels would not hold their mask.  Prune with permute='none' for 2:4 kernels, or "
                              "store W[:, perm] and gather x[:, perm] yourself")


def time_call(fn, device: torch.device | str, repeats: int = 5, inner: int = 10, warmup: int = 3) -> float:
    """Median over ``repeats`` rounds of the mean seconds per call of ``fn`` (``inner`` calls per
    round, after ``warmup`` calls), timed with the CUDA-synchronized ``Timer``."""
    for _ in range(warmup):
        fn()
    rounds = []
    for _ in range(repeats):
        timer = Timer(device)
        with timer("t"):
            for _ in range(inner):
                fn()
        rounds.append(timer.totals["t"] / inner)
    return statistics.median(rounds)


def speed_summary(dense_s: dict[str, float], sparse_s: dict[str, float]) -> dict:
    """Per-layer speed-ups ``dense / sparse`` (> 1: the sparse layer is faster) and the overall
    speed-up of all layers together (total dense time over total sparse time)."""
    if set(dense_s) != set(sparse_s):
        raise ValueError(f"dense and sparse timings must cover the same layers: {sorted(set(dense_s) ^ set(sparse_s))}")
    for d in (dense_s, sparse_s):
        for k, v in d.items():
            if not (v > 0):
                raise ValueError(f"{k}: a timing must be > 0 seconds, got {v!r}")
    per = {k: dense_s[k] / sparse_s[k] for k in dense_s}
    overall = sum(dense_s.values()) / sum(sparse_s.values()) if dense_s else float("nan")
    return {"speedup": per, "overall_speedup": overall}


def warn_if_slower(summary: dict, tokens: int) -> None:
    """Warn (``SlowSparseWarning``) when the converted layers are slower than dense overall or any
    single layer is."""
    per = summary["speedup"]
    slow = {k: v for k, v in per.items() if v < 1}
    if not slow:
        return
    worst = min(slow, key=slow.get)
    warnings.warn(f"semi-structured 2:4 layers are slower than dense on this GPU for {tokens}-token inputs: "
                  f"{len(slow)} of {len(per)} layers (worst {worst}: {slow[worst]:.2f}x the dense speed), all "
                  f"together {summary['overall_speedup']:.2f}x; keep the model dense, or convert only the layers "
                  f"that gain (min_speedup=1.0)", SlowSparseWarning, stacklevel=3)


def check_backend() -> str:
    """Which semi-structured backend PyTorch will use here (``"cusparselt"`` or ``"cutlass"``), or a
    ``RuntimeError`` saying why none can run."""
    if not torch.cuda.is_available():
        raise RuntimeError("semi-structured sparsity needs a CUDA GPU (torch.cuda.is_available() is False)")
    cslt = getattr(torch.backends, "cusparselt", None)
    if cslt is not None and cslt.is_available():
        return "cusparselt"
    major, minor = torch.cuda.get_device_capability()
    if major == 8:
        return "cutlass"
    raise RuntimeError(f"semi-structured sparsity on compute capability {major}.{minor} needs cuSPARSELt, which this "
                       "PyTorch build does not have (its CUTLASS kernels need compute capability 8.x)")


def to_semi_structured(model: nn.Module, adapter: Adapter | None = None, check_speed: bool = True,
                       tokens: int = 2048, min_speedup: float | None = None) -> dict:
    """Convert the 2:4-sparse linear layers of every block in place (the model must be on CUDA in
    fp16 or bf16, e.g. ``model.half().cuda()``).

    ``check_speed``: time every layer dense and sparse on a random ``[tokens, in]`` input first
    (warns when sparse is slower); ``min_speedup``: keep a layer dense unless it gains at least that
    factor (e.g. 1.0: convert only what is faster).  Returns ``{"backend", "converted": [...],
    "skipped": {name: reason}, "speedup": {name: dense/sparse}, "overall_speedup"}``."""
    adapter = adapter or adapter_for(model)
    check_memory_order(model, adapter)  # before the backend check: the refusal does not depend on the GPU
    backend = check_backend()
    from torch.sparse import to_sparse_semi_structured
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be an integer >= 1 (rows of the probe input), got {tokens!r}")
    if min_speedup is not None and not (isinstance(min_speedup, (int, float)) and min_speedup > 0):
        raise ValueError(f"min_speedup must be a number > 0 or None, got {min_speedup!r}")
    if min_speedup is not None and not check_speed:
        raise ValueError("min_speedup needs check_speed=True (the speed-up is measured)")
    converted, skipped, dense_s, sparse_s = [], {}, {}, {}
    for bi, block in enumerate(adapter.blocks(model)):
        for name, layer in adapter.linear_layers(block).items():
            full = f"{bi}.{name}"
            if type(layer) is not nn.Linear:
                skipped[full] = f"{type(layer).__name__} is not nn.Linear"
                continue
            w = layer.weight.data
            if w.device.type != "cuda":
                raise RuntimeError(f"{full}: move the model to CUDA before converting (weight is on {w.device})")
            if w.dtype not in (torch.float16, torch.bfloat16):
                raise RuntimeError(f"{full}: semi-structured kernels need fp16 or bf16 weights, got {w.dtype} "
                                   "(convert the model with .half() or .bfloat16() first)")
            if not is_nm(w, 2, 4):
                skipped[full] = "weight is not 2:4 sparse (in memory order)"
                continue
            try:
                sw = to_sparse_semi_structured(w)
            except (RuntimeError, ValueError) as e:  # shape the kernels do not support
                skipped[full] = str(e).splitlines()[0]
                continue
            if check_speed:
                x = torch.randn(tokens, w.shape[1], device=w.device, dtype=w.dtype)
                try:
                    dense_s[full] = time_call(lambda: F.linear(x, w), w.device)
                    sparse_s[full] = time_call(lambda: F.linear(x, sw), w.device)
                except (RuntimeError, ValueError) as e:  # an input shape the sparse kernel refuses
                    dense_s.pop(full, None)
                    skipped[full] = f"sparse matmul failed on a {tokens}-token input: {str(e).splitlines()[0]}"
                    continue
                if min_speedup is not None and dense_s[full] / sparse_s[full] < min_speedup:
                    skipped[full] = f"sparse is {dense_s[full] / sparse_s[full]:.2f}x the dense speed (< {min_speedup})"
                    continue
            layer.weight = nn.Parameter(sw, requires_grad=False)
            converted.append(full)
    out = {"backend": backend, "converted": converted, "skipped": skipped}
    if check_speed and dense_s:
        summary = speed_summary(dense_s, sparse_s)
        out.update(summary)
        if converted:
            warn_if_slower(speed_summary({k: dense_s[k] for k in converted}, {k: sparse_s[k] for k in converted}),
                           tokens)
    return out
