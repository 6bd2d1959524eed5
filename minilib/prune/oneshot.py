"""One-shot pruning of every linear layer of every block: magnitude, Wanda, SparseGPT.

    report = prune_model(model, "sparsegpt", sparsity=0.5, calib=windows)        # unstructured 50%
    report = prune_model(model, "wanda", nm=(2, 4), calib=windows)               # 2 zeros in every 4
    report = prune_model(model, "sparsegpt", sparsity=0.5, wbits=4, calib=windows, device="cuda")
    report = prune_model(model, "sparsegpt", calib=windows, masks={"3.mlp.up_proj": m, ...})
    report.layers          # DataFrame: block, group, layer, out, in, params, zeros, sparsity, error, rel_error
    report.overall         # params, zeros, sparsity of the pruned layers; timings in report.timings

It is the block-by-block calibration pass of ``minilib.calib.sequential_pass``: per block, the
calibration batches run through it with hooks feeding one accumulator per distinct layer input
(layers that read the very same tensor, e.g. q/k/v or gate/up, share one), every layer is pruned,
and the block is rerun for the next block's inputs.  Only one block is on ``device`` at a time.

Methods: ``magnitude`` (|W| per layer), ``wanda`` (|W|·||X|| per output row), ``sparsegpt`` (OBS
reconstruction); each unstructured at ``sparsity`` in [0, 1) or N:M (``nm=(n, m)``: ``n`` zeros in each
``m`` consecutive inputs).  ``wbits < 16`` quantizes per channel: jointly inside the SparseGPT solver,
round-to-nearest after masking for the others.  ``masks`` fixes the mask of some layers (keys as in
``minilib.calib``, True = prune), from any other criterion: with ``sparsegpt`` OBS reconstructs the
rest of the layer around it, with the other methods the mask is applied as it is.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from minilib.calib.accumulators import InputSqNorms, LastBatch
from minilib.calib.passes import BlockStep, CalibrationError, check_windows, key, sequential_pass
from minilib.device import Timer, model_device, resolve_device
from minilib.models.adapters import adapter_for
from minilib.models.linear import in_features, weight_oi
from minilib.prune.apply import zero_weights
from minilib.prune.masks import (SparsityError, check_nm, check_sparsity, mask_nm, mask_unstructured, parse_nm)
from minilib.prune.quant import check_wbits
from minilib.prune.report import PruneReport, reconstruction_stats, snapshot
from minilib.prune.scores import score_magnitude, score_wanda
from minilib.prune.sparsegpt import SparseGPT

METHODS = ("magnitude", "wanda", "sparsegpt")


def score_mask(method: str, w: torch.Tensor, sq_norms: torch.Tensor | None, sparsity: float,
               nm: tuple[int, int] | None, name: str) -> torch.Tensor:
    """The prune mask of one layer by magnitude (per layer) or Wanda (per output row), or N:M."""
    score = score_magnitude(w) if method == "magnitude" else score_wanda(w, sq_norms)
    if nm:
        return mask_nm(score, nm[0], nm[1], name)
    return mask_unstructured(score, sparsity, per="layer" if method == "magnitude" else "row")


def _validate(model, adapter, method, sparsity, nm, wbits, calib, needs_calib, masks):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if nm is not None:
        for bi, block in enumerate(adapter.blocks(model)):
            for name, layer in adapter.linear_layers(block).items():
                check_nm(nm[0], nm[1], in_features(layer), f"block {bi} {name}")
    else:
        check_sparsity(sparsity)
    check_wbits(wbits)
    if masks:
        from minilib.calib.passes import resolve
        for k, m in masks.items():
            layer = resolve(model, k, adapter)
            w = weight_oi(layer)
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != w.shape:
                raise SparsityError(f"fixed mask for {k}: expected bool {tuple(w.shape)}, got "
                                    f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    if not needs_calib:
        return
    if calib is None:
        raise CalibrationError(f"method {method!r} needs calibration windows: a non-empty [n, seqlen] LongTensor "
                               "(see minilib.data.calibration_set)")
    check_windows(calib, model)
    if method == "sparsegpt":
        widest = max(in_features(l) for b in adapter.blocks(model) for l in adapter.linear_layers(b).values())
        if calib.numel() < widest:
            raise CalibrationError(
                f"SparseGPT needs at least as many calibration tokens as the widest layer input ({widest}) for a "
                f"full-rank Hessian; got {calib.shape[0]} x {calib.shape[1]} = {calib.numel()} tokens")


def _groups(step: BlockStep) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
    """Run batch 0 and group the block's linear layers that read the very same tensor (q/k/v,
    gate/up); returns the groups (by key) and the inputs of batch 0 per group leader."""
    layers = step.linear_keys()
    seen = {k: LastBatch("input") for k in layers}
    step.feed(seen, batches=[0])  # holding the tensors keeps their identity unique during the batch
    groups: list[list[str]] = []
    for k in layers:
        for g in groups:
            if seen[g[0]].value is seen[k].value:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups, {g[0]: seen[g[0]].value for g in groups}


@torch.no_grad()
def prune_model(model: nn.Module, method: str = "sparsegpt", sparsity: float = 0.5,
                nm: tuple[int, int] | str | None = None, wbits: int = 16, calib: torch.Tensor | None = None,
                device: torch.device | str | None = "auto", blocksize: int = 128, percdamp: float = 0.01,
                batch_size: int = 8, measure_error: bool | None = None, progress: bool = False,
                masks: dict[str, torch.Tensor] | None = None) -> PruneReport:
    """Prune every linear layer of every block in place; see the module docstring.

    ``calib``: calibration windows ``[n, seqlen]`` (needed by wanda and sparsegpt; with magnitude it
    only serves ``measure_error``).  ``measure_error`` (default: whenever ``calib`` is given) records
    each layer's reconstruction error on the calibration inputs (it needs each layer's ``X X^T``).
    ``device``: where each block runs (``"auto"``: CUDA when present), while the model stays where it is."""
    adapter = adapter_for(model)
    nm = parse_nm(nm)
    measure_error = calib is not None if measure_error is None else measure_error
    needs_calib = method in ("wanda", "sparsegpt") or measure_error
    masks = dict(masks or {})
    _validate(model, adapter, method, sparsity, nm, wbits, calib, needs_calib, masks)
    eff_sparsity = nm[0] / nm[1] if nm else float(sparsity)
    dev = resolve_device(device)
    timer = Timer(dev)
    before = snapshot(model)
    rows: list[dict] = []
    t_start = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    was_training = model.training
    model.eval()
    try:
        if not needs_calib:  # magnitude without calibration: no forward pass at all
            from tqdm.auto import tqdm
            for bi, block in enumerate(tqdm(adapter.blocks(model), desc=method, disable=not progress)):
                home = model_device(block)
                block.to(dev)
                try:
                    for name, layer in adapter.linear_layers(block).items():
                        k = key(bi, name)
                        with timer("solve_s"):
                            mask = masks.get(k)
                            if mask is None:
                                mask = score_mask(method, weight_oi(layer).float(), None, eff_sparsity, nm, k)
                            w_old, w_new = zero_weights(layer, mask.to(dev), wbits)
                        rows.append({"block": bi, "group": name, **reconstruction_stats(name, w_old, w_new)})
                finally:
                    block.to(home)
        else:
            def on_block(step: BlockStep):
                _prune_block(step, method, eff_sparsity, nm, wbits, blocksize, percdamp, measure_error, masks, rows)

            sequential_pass(model, calib, on_block, dev, batch_size, timer=timer, progress=progress, desc=method)
    finally:
        model.train(was_training)
    timings = {k: timer.totals.get(k, 0.0) for k in ("capture_s", "forward_s", "stats_s", "solve_s")}
    timings["total_s"] = time.perf_counter() - t_start
    if dev.type == "cuda":
        timings["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    target = {"nm": f"{nm[0]}:{nm[1]}"} if nm else {"sparsity": eff_sparsity}
    if wbits < 16:
        target["wbits"] = wbits
    if masks:
        target["fixed_masks"] = len(masks)
    rep = PruneReport(method, target, before, snapshot(model), pd.DataFrame(rows), timings)
    rep.nm, rep.sparsity, rep.wbits = nm, eff_sparsity, wbits
    return rep


def _prune_block(step: BlockStep, method, sparsity, nm, wbits, blocksize, percdamp, measure_error, masks, rows):
    bi, layers = step.index, step.linear_keys()
    full = method == "sparsegpt" or measure_error
    groups, first = _groups(step)
    dev = step.inputs[0].device
    accs = {}
    for g in groups:
        accs[g[0]] = SparseGPT({k: layers[k] for k in g}, dev) if full else InputSqNorms(in_features(layers[g[0]]), dev)
        with step.timer("stats_s"):
            accs[g[0]].add_batch(first[g[0]])
    del first
    step.feed(accs, batches=range(1, len(step.inputs)))

    for g in groups:
        acc = accs[g[0]]
        fixed = [k for k in g if k in masks]
        if fixed and len(fixed) != len(g) and method == "sparsegpt":
            raise SparsityError(f"layers {g} share one input (one OBS problem): give fixed masks for all of them "
                                f"or none (got {fixed})")
        name = lambda k: k.split(".", 1)[1]  # noqa: E731  (the path inside the block)
        if method == "sparsegpt":
            with step.timer("solve_s"):
                st = acc.prune(sparsity, *(nm or (0, 0)), wbits=wbits, blocksize=blocksize, percdamp=percdamp,
                               mask={k: masks[k] for k in g} if fixed else None)
            rows.extend({"block": bi, "group": "+".join(map(name, g)), **s, "layer": name(s["layer"])} for s in st)
        else:
            sq = acc.input_sq_norms() if method == "wanda" else None
            for k in g:
                with step.timer("solve_s"):
                    w = weight_oi(layers[k]).float()
                    mask = masks[k] if k in masks else score_mask(method, w, sq, sparsity, nm, k)
                    w_old, w_new = zero_weights(layers[k], mask.to(w.device), wbits)
                rows.append({"block": bi, "group": "+".join(map(name, g)),
                             **reconstruction_stats(name(k), w_old, w_new, acc.H if full else None, acc.tokens)})
        acc.free()
