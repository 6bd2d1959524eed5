"""Layer-by-layer one-shot pruning of a whole model (the SparseGPT / Wanda calibration driver).

    report = prune_model(model, "sparsegpt", sparsity=0.5, calib=windows)        # unstructured 50%
    report = prune_model(model, "wanda", nm=(2, 4), calib=windows)               # 2 zeros in every 4
    report = prune_model(model, "sparsegpt", sparsity=0.5, wbits=4, calib=windows, device="cuda")
    report.layers          # DataFrame: block, layer, out, in, params, zeros, sparsity, error, rel_error
    report.overall         # params, zeros, sparsity of the pruned layers; timings in report.timings

How it runs (one block in fast memory at a time):

1. *Capture.*  Every block is swapped for a ``_Catcher`` that records its positional and keyword
   arguments (attention masks, position ids, rotary ``position_embeddings``, ``cache_position`` ...,
   exactly as transformers passes them, per block since e.g. Gemma-3 alternates sliding and global
   masks) and passes the hidden states through; the last one stops the forward, so the capture costs
   only the embeddings.  The blocks are put back in a ``finally``.
2. *Per block* (moved to ``device``): run the calibration batches with hooks on the linear layers
   feeding the statistics (layers that read the same tensor, e.g. q/k/v, share one accumulator);
   prune every layer; rerun the batches through the pruned block to get the next block's inputs.

Methods: ``magnitude`` (|W| per layer), ``wanda`` (|W|·||X|| per output row), ``sparsegpt`` (OBS
reconstruction); each unstructured at ``sparsity`` in [0, 1) or N:M (``nm=(n, m)``: ``n`` zeros in each
``m`` consecutive inputs).  ``wbits < 16`` quantizes per channel: jointly inside the SparseGPT solver,
round-to-nearest after masking for the others.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from minilib.data import calibration_windows, corpus_splits
from minilib.hooks import forward_hooks
from minilib.models.adapters import Adapter, adapter_for
from minilib.models.linear import in_features, set_weight_oi, weight_oi
from minilib.sparse.masks import SparsityError, check_nm, check_sparsity, mask_nm, mask_unstructured
from minilib.sparse.quant import check_wbits, fit_quantizer
from minilib.sparse.scores import score_magnitude, score_wanda
from minilib.sparse.sparsegpt import CalibrationError, SparseGPT, reconstruction_stats
from minilib.sparse.stats import InputNorms

METHODS = ("magnitude", "wanda", "sparsegpt")


def calibration_set(tokenizer, corpus: str = "c4", nsamples: int = 32, seqlen: int = 512, seed: int = 0) -> torch.Tensor:
    """``nsamples`` random windows ``[nsamples, seqlen]`` from the ``calib`` split of ``corpus``."""
    return calibration_windows(corpus_splits(tokenizer, corpus)["calib"], nsamples, seqlen, seed)


@dataclass
class PruneReport:
    method: str
    sparsity: float
    nm: tuple[int, int] | None
    wbits: int
    layers: pd.DataFrame
    timings: dict = field(default_factory=dict)

    @property
    def overall(self) -> dict:
        p, z = int(self.layers["params"].sum()), int(self.layers["zeros"].sum())
        err = self.layers["rel_error"]
        return {"params": p, "zeros": z, "nonzeros": p - z, "sparsity": z / p if p else 0.0,
                "mean_rel_error": float(err.mean()) if err.notna().any() else float("nan")}

    def summary(self) -> dict:
        return {"method": self.method, "sparsity_requested": self.sparsity,
                "nm": f"{self.nm[0]}:{self.nm[1]}" if self.nm else None, "wbits": self.wbits,
                **{f"achieved_{k}" if k == "sparsity" else k: v for k, v in self.overall.items()},
                **{k: round(v, 3) for k, v in self.timings.items()}}


# --- capture -----------------------------------------------------------------------------------

class _StopForward(Exception):
    pass


class _Catcher(nn.Module):
    """Stands in for block ``index``: records ``(args, kwargs)`` and returns the hidden states."""

    def __init__(self, index: int, block: nn.Module, record, last: bool):
        super().__init__()
        self.index, self.record, self.last = index, record, last
        object.__setattr__(self, "_wrapped", block)  # attribute look-ups fall through, not a submodule

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_wrapped"], name)

    def forward(self, *args, **kwargs):
        self.record(self.index, args, kwargs)
        if self.last:
            raise _StopForward
        return args[0] if args else kwargs["hidden_states"]


@contextmanager
def _catching(blocks: nn.ModuleList, record):
    originals = list(blocks)
    try:
        for i, b in enumerate(originals):
            blocks[i] = _Catcher(i, b, record, last=i == len(originals) - 1)
        yield
    finally:
        for i, b in enumerate(originals):
            blocks[i] = b


def _is_cache(obj) -> bool:
    return type(obj).__name__.endswith("Cache")


def _to(obj, device, memo: dict):
    """Move tensors inside ``obj`` (tuples, lists, dicts) to ``device``; shared tensors move once."""
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in memo:
            memo[key] = obj.to(device)
        return memo[key]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device, memo) for k, v in obj.items()}
    return None if _is_cache(obj) else obj


@dataclass
class Captured:
    """Block-0 inputs per calibration batch, and every block's other arguments per batch."""
    hidden: list[torch.Tensor]                           # [batch] -> (B, T, C)
    args: list[list[tuple[tuple, dict]]]                  # [block][batch] -> (positional after hidden, kwargs)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int = 8,
                         device: torch.device | str | None = None, adapter: Adapter | None = None) -> Captured:
    """Run the calibration ``windows`` ``[n, T]`` up to block 0 and record what every block receives."""
    adapter = adapter or adapter_for(model)
    blocks = adapter.blocks(model)
    model_dev = next(model.parameters()).device
    device = torch.device(device) if device is not None else model_dev
    hidden, args = [], [[] for _ in blocks]
    memo: dict = {}

    def record(i, a, kw):
        kw = dict(kw)
        h = a[0] if a else kw.pop("hidden_states")
        if i == 0:
            hidden.append(h.to(device))
        args[i].append((_to(tuple(a[1:]), device, memo), _to(kw, device, memo)))

    call_kw = {"use_cache": False} if adapter.is_decoder else {}
    with _catching(blocks, record):
        for s in range(0, len(windows), batch_size):
            try:
                adapter.base(model)(input_ids=windows[s:s + batch_size].to(model_dev), **call_kw)
            except _StopForward:
                pass
    return Captured(hidden, args)


# --- pruning one layer without a solver ----------------------------------------------------------

def apply_mask(layer: nn.Module, mask: torch.Tensor, wbits: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the masked weights of ``layer`` (then round-to-nearest quantize the rest if ``wbits < 16``);
    returns (old, new) ``[out, in]`` weights in fp32."""
    w_old = weight_oi(layer).float().clone()
    w_new = fit_quantizer(w_old, wbits)(w_old) if wbits < 16 else w_old.clone()
    w_new.masked_fill_(mask.to(w_new.device), 0.0)
    set_weight_oi(layer, w_new)
    return w_old, w_new


def _score_mask(method: str, w: torch.Tensor, sq_norms: torch.Tensor | None, sparsity: float,
                nm: tuple[int, int] | None, name: str) -> torch.Tensor:
    score = score_magnitude(w) if method == "magnitude" else score_wanda(w, sq_norms.to(w.device))
    if nm:
        return mask_nm(score, nm[0], nm[1], name)
    return mask_unstructured(score, sparsity, per="layer" if method == "magnitude" else "row")


# --- the driver -------------------------------------------------------------------------------

def _validate(model, adapter, method, sparsity, nm, wbits, calib, needs_calib):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if nm is not None:
        if len(nm) != 2:
            raise SparsityError(f"nm must be a pair (n, m), got {nm!r}")
        check_nm(*nm)
        for bi, block in enumerate(adapter.blocks(model)):
            for name, layer in adapter.linear_layers(block).items():
                check_nm(nm[0], nm[1], in_features(layer), f"block {bi} {name}")
    else:
        check_sparsity(sparsity)
    check_wbits(wbits)
    if not needs_calib:
        return
    if calib is None or not isinstance(calib, torch.Tensor) or calib.dim() != 2 or calib.numel() == 0:
        raise CalibrationError(f"method {method!r} needs calibration windows: a non-empty [n, seqlen] LongTensor "
                               f"(see calibration_set), got {None if calib is None else getattr(calib, 'shape', calib)}")
    if method == "sparsegpt":
        widest = max(in_features(l) for b in adapter.blocks(model) for l in adapter.linear_layers(b).values())
        if calib.numel() < widest:
            raise CalibrationError(
                f"SparseGPT needs at least as many calibration tokens as the widest layer input ({widest}) for a "
                f"full-rank Hessian; got {calib.shape[0]} x {calib.shape[1]} = {calib.numel()} tokens")


@torch.no_grad()
def prune_model(model: nn.Module, method: str = "sparsegpt", sparsity: float = 0.5,
                nm: tuple[int, int] | None = None, wbits: int = 16, calib: torch.Tensor | None = None,
                device: torch.device | str | None = None, blocksize: int = 128, percdamp: float = 0.01,
                batch_size: int = 8, measure_error: bool | None = None, progress: bool = False) -> PruneReport:
    """Prune every linear layer of every block in place; see the module docstring.

    ``calib``: calibration windows ``[n, seqlen]`` (needed by wanda and sparsegpt; with magnitude it
    only serves ``measure_error``).  ``measure_error`` (default: whenever ``calib`` is given) records
    each layer's reconstruction error on the calibration inputs.  ``device``: where each block runs
    (e.g. ``"cuda"`` while the model stays on the CPU)."""
    adapter = adapter_for(model)
    nm = tuple(nm) if nm else None
    measure_error = calib is not None if measure_error is None else measure_error
    needs_calib = method in ("wanda", "sparsegpt") or measure_error
    _validate(model, adapter, method, sparsity, nm, wbits, calib, needs_calib)
    eff_sparsity = nm[0] / nm[1] if nm else float(sparsity)
    blocks = adapter.blocks(model)
    was_training = model.training
    model.eval()
    timings = {"capture_s": 0.0, "forward_s": 0.0, "stats_s": 0.0, "solve_s": 0.0}
    rows = []
    t_start = time.perf_counter()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        if not needs_calib:  # magnitude without calibration: no forward pass at all
            for bi, block in enumerate(tqdm(blocks, desc=method, disable=not progress)):
                for name, layer in adapter.linear_layers(block).items():
                    t0 = time.perf_counter()
                    mask = _score_mask(method, weight_oi(layer).float(), None, eff_sparsity, nm, f"{bi}.{name}")
                    w_old, w_new = apply_mask(layer, mask, wbits)
                    timings["solve_s"] += time.perf_counter() - t0
                    rows.append({"block": bi, **reconstruction_stats(name, w_old, w_new, None, 0)})
        else:
            t0 = time.perf_counter()
            cap = capture_block_inputs(model, calib, batch_size, device, adapter)
            timings["capture_s"] = time.perf_counter() - t0
            inps = cap.hidden
            for bi, block in enumerate(tqdm(blocks, desc=method, disable=not progress)):
                home = next(block.parameters()).device
                dev = inps[0].device
                block.to(dev)
                inps = _prune_block(block, bi, adapter, inps, cap.args[bi], method, eff_sparsity, nm, wbits,
                                    blocksize, percdamp, measure_error, timings, rows)
                block.to(home)
    finally:
        model.train(was_training)
    timings["total_s"] = time.perf_counter() - t_start
    if device is not None and torch.device(device).type == "cuda":
        timings["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return PruneReport(method, eff_sparsity, nm, wbits, pd.DataFrame(rows), timings)


def _run(block, hidden, args_kwargs):
    a, kw = args_kwargs
    out = block(hidden, *a, **kw)
    return out[0] if isinstance(out, (tuple, list)) else out


def _prune_block(block, bi, adapter, inps, block_args, method, sparsity, nm, wbits, blocksize, percdamp,
                 measure_error, timings, rows):
    layers = adapter.linear_layers(block)
    dev = inps[0].device
    full = method == "sparsegpt" or measure_error

    # batch 0: find the layers that read the very same tensor (q/k/v, gate/up) -> one accumulator each
    seen: dict[str, torch.Tensor] = {}

    def keep(n):
        def hook(mod, inp, out):  # holding the tensors keeps their identity unique during the batch
            seen.setdefault(n, inp[0])
        return hook

    hooks = {m: keep(n) for n, m in layers.items()}
    t0 = time.perf_counter()
    with forward_hooks(hooks):
        _run(block, inps[0], block_args[0])
    groups: list[list[str]] = []
    for n in layers:
        for g in groups:
            if seen[g[0]] is seen[n]:
                g.append(n)
                break
        else:
            groups.append([n])
    accs = {}
    t1 = time.perf_counter()
    for g in groups:
        sub = {n: layers[n] for n in g}
        accs[g[0]] = SparseGPT(sub, dev) if full else InputNorms(in_features(layers[g[0]]), dev)
        accs[g[0]].add_batch(seen[g[0]])
    del seen
    stats_t = [time.perf_counter() - t1]

    def feed(acc):
        def hook(mod, inp, out):
            t = time.perf_counter()
            acc.add_batch(inp[0])
            stats_t[0] += time.perf_counter() - t
        return hook

    with forward_hooks({layers[g[0]]: feed(accs[g[0]]) for g in groups}):
        for b in range(1, len(inps)):
            _run(block, inps[b], block_args[b])
    timings["stats_s"] += stats_t[0]
    timings["forward_s"] += time.perf_counter() - t0 - stats_t[0]

    for g in groups:
        acc = accs[g[0]]
        t = time.perf_counter()
        if method == "sparsegpt":
            st = acc.prune(sparsity, *(nm or (0, 0)), wbits=wbits, blocksize=blocksize, percdamp=percdamp)
            timings["solve_s"] += sum(s["time_s"] for s in st)
            rows.extend({"block": bi, "group": "+".join(g), **s} for s in st)
        else:
            sq = acc.input_sq_norms() if method == "wanda" else None
            for n in g:
                w = weight_oi(layers[n]).float()
                mask = _score_mask(method, w, sq, sparsity, nm, f"{bi}.{n}")
                w_old, w_new = apply_mask(layers[n], mask, wbits)
                timings["solve_s"] += time.perf_counter() - t
                rows.append({"block": bi, "group": "+".join(g),
                             **reconstruction_stats(n, w_old, w_new, acc.H if full else None, acc.tokens)})
                t = time.perf_counter()
        acc.free()

    t0 = time.perf_counter()
    outs = [_run(block, inps[b], block_args[b]) for b in range(len(inps))]
    timings["forward_s"] += time.perf_counter() - t0
    return outs
