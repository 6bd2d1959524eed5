"""Apply prune masks (``True`` = prune) to a model: zero weights, zero or remove FFN neurons, zero
output rows, remove vocabulary rows.  Each call validates its masks against the model first (so a
bad mask changes nothing) and returns a ``PruneReport``.

* ``zero_weights``   -- one layer: zero the masked weights (then optionally round-to-nearest quantize);
* ``zero_neurons``   -- zero the ``down`` columns of masked FFN neurons (same function as removal,
  shapes unchanged: for comparisons);
* ``remove_neurons`` -- physically remove masked FFN neurons (rows of up/gate and their biases,
  columns of down) through ``minilib.models.remove_ffn_neurons``; optionally rounding the kept
  widths to a multiple (GPU kernels), warning for fp16/bf16 models whose widths are not multiples of 8;
* ``zero_rows``      -- zero output rows (weight row and bias entry) of named linear layers;
* ``remove_vocab``   -- keep only the unmasked rows of the embedding and LM head; returns the
  ``RemappedTokenizer`` that speaks the new ids.

A failure half-way through ``remove_neurons`` raises ``PartialPruneError`` naming the blocks that were
already changed (prune a copy if you need the original back).
"""

from __future__ import annotations

import warnings

import pandas as pd
import torch
from torch import nn

from minilib.calib.passes import resolve
from minilib.device import Timer, model_device
from minilib.models.adapters import adapter_for
from minilib.models.linear import set_weight_oi, weight_oi
from minilib.models.surgery import ffn_widths, remove_ffn_neurons
from minilib.models.vocab import RemappedTokenizer, keep_vocab_rows, make_vocab_map
from minilib.prune.masks import widths_equal, widths_multiple
from minilib.prune.quant import fit_quantizer
from minilib.prune.report import PruneReport, snapshot


class PartialPruneError(RuntimeError):
    """Pruning failed after it had already changed part of the model."""


def _check_neuron_masks(model, masks) -> list[int]:
    widths = ffn_widths(model)
    if not isinstance(masks, (list, tuple)) or len(masks) != len(widths):
        raise ValueError(f"expected one neuron mask per block ({len(widths)}), got "
                         f"{len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__}")
    for l, (m, w) in enumerate(zip(masks, widths)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"block {l}: a neuron mask must be a bool tensor (True = prune), got "
                            f"{getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != (w,):
            raise ValueError(f"block {l}: mask of shape {tuple(m.shape)} for an FFN of width {w}")
        if bool(m.all()):
            raise ValueError(f"block {l}: the mask prunes every neuron; a layer needs at least one")
    return widths


@torch.no_grad()
def zero_weights(layer: nn.Module, mask: torch.Tensor, wbits: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the masked weights of ``layer`` (then round-to-nearest quantize the rest if ``wbits < 16``);
    returns the (old, new) ``[out, in]`` weights in fp32."""
    w_old = weight_oi(layer).float().clone()
    if mask.shape != w_old.shape or mask.dtype != torch.bool:
        raise ValueError(f"weight mask must be bool of shape {tuple(w_old.shape)}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    w_new = fit_quantizer(w_old, wbits)(w_old) if wbits < 16 else w_old.clone()
    w_new.masked_fill_(mask.to(w_new.device), 0.0)
    set_weight_oi(layer, w_new)
    return w_old, w_new


@torch.no_grad()
def zero_neurons(model: nn.Module, masks: list[torch.Tensor], method: str = "zero_neurons") -> PruneReport:
    """Zero the ``down`` columns of the masked neurons (same function as removing them; shapes unchanged)."""
    _check_neuron_masks(model, masks)
    before = snapshot(model)
    for f, m in zip(adapter_for(model).ffns(model), masks):
        weight_oi(f.down)[:, m.to(f.down.weight.device)] = 0
    return PruneReport(method, {"neurons": int(sum(int(m.sum()) for m in masks))}, before, snapshot(model))


GPU_DTYPES = (torch.float16, torch.bfloat16)
FAST_MULTIPLE = 8  # tensor-core GEMMs in fp16/bf16 want inner and outer sizes that are multiples of 8


class WidthWarning(UserWarning):
    """Kept FFN widths that make fp16/bf16 GEMMs slow on GPUs (not multiples of 8)."""


@torch.no_grad()
def remove_neurons(model: nn.Module, masks: list[torch.Tensor], method: str = "remove_neurons",
                   target: dict | None = None, verbose: bool = False, multiple_of: int = 1,
                   scores: list[torch.Tensor] | None = None, equal_widths: bool = False) -> PruneReport:
    """Physically remove the masked FFN neurons of every block; returns the report (widths,
    parameters before/after, achieved ratio).

    ``multiple_of`` > 1 rounds every kept width to the nearest multiple (``widths_multiple``: adding
    back the best-scoring pruned neurons or pruning the worst-scoring kept ones, by ``scores``, one
    score vector per block, high = keep).  On GPUs fp16/bf16 GEMMs are fastest on widths that are
    multiples of 8 (measured by benchmarks/bench_structured.py: with 30% of the FFN neurons removed at random, an fp16 model ran at
    1.35x the dense latency on a GPU, and at 0.93x with the kept widths rounded).  So for a model in
    fp16 or bf16 whose kept widths are not multiples of 8, ``multiple_of=1`` warns (``WidthWarning``);
    ``benchmarks/bench_structured.py`` measures it on CUDA.  With rounding the achieved ratio differs
    from the asked one by up to ``multiple_of / 2`` neurons per block.

    ``equal_widths=True`` keeps the total number removed but leaves every block the same kept width
    (``widths_equal``, by ``scores``; rounded to ``multiple_of``): the shrink then survives
    ``minilib.export.export_hf``, whose stock configs hold one FFN width (unequal widths are padded
    back to the widest there).  The report's target records ``equal_widths``."""
    adapter = adapter_for(model)
    widths = _check_neuron_masks(model, masks)
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
        raise ValueError(f"multiple_of must be an integer >= 1 (1 = no rounding), got {multiple_of!r}")
    if not isinstance(equal_widths, bool):
        raise ValueError(f"equal_widths must be True or False, got {equal_widths!r}")
    if multiple_of > 1 or equal_widths:
        asked = " and ".join(x for x, on in ((f"multiple_of={multiple_of}", multiple_of > 1),
                                             ("equal_widths=True", equal_widths)) if on)
        if scores is None or len(scores) != len(masks):
            raise ValueError(f"{asked} needs scores (one score vector per block, high = keep) to "
                             f"choose which neurons to add back or drop; got "
                             f"{'none' if scores is None else f'{len(scores)} for {len(masks)} blocks'}")
        for l, (sc, w) in enumerate(zip(scores, widths)):
            if tuple(torch.as_tensor(sc).shape) != (w,):
                raise ValueError(f"block {l}: scores of shape {tuple(torch.as_tensor(sc).shape)} for an FFN of width {w}")
        masks = widths_equal(masks, scores, multiple_of) if equal_widths else widths_multiple(masks, multiple_of, scores)
        _check_neuron_masks(model, masks)
    else:
        dtype = next(model.parameters()).dtype
        kept = [w - int(m.sum()) for m, w in zip(masks, widths)]
        odd = [(l, k) for l, k in enumerate(kept) if k % FAST_MULTIPLE and int(masks[l].sum())]
        if dtype in GPU_DTYPES and odd:
            warnings.warn(f"removing these neurons leaves FFN widths that are not multiples of {FAST_MULTIPLE} in "
                          f"{len(odd)} of {len(kept)} blocks (e.g. block {odd[0][0]}: {odd[0][1]}) of a {dtype} model; "
                          f"fp16/bf16 GEMMs on GPUs are slow on such widths (measured: 1.35x the dense latency at "
                          f"30% random removal, 0.93x with rounded widths); pass multiple_of={FAST_MULTIPLE} and "
                          "scores= to round them", WidthWarning, stacklevel=2)
    before = snapshot(model)
    timer = Timer(model_device(model))  # synchronizes CUDA
    done = []
    with timer("apply_s"):
        for l, m in enumerate(masks):
            if not bool(m.any()):
                continue
            try:
                remove_ffn_neurons(model, l, torch.nonzero(~m.cpu()).flatten(), adapter)
            except Exception as e:
                if done:
                    raise PartialPruneError(f"removing neurons failed at block {l} after blocks {done} were already "
                                            f"pruned; the model is half-pruned ({type(e).__name__}: {e})") from e
                raise
            done.append(l)
    target = dict(target or {})
    if multiple_of > 1:
        target["multiple_of"] = multiple_of
    if equal_widths:
        target["equal_widths"] = True
    rep = PruneReport(method, target, before, snapshot(model), timings=dict(timer.totals))
    if verbose:
        print(rep)
    return rep


@torch.no_grad()
def zero_rows(model: nn.Module, row_masks: dict[str, torch.Tensor], method: str = "zero_rows") -> PruneReport:
    """Zero the masked output rows (weight row and bias entry) of the linear layers named by their
    keys (``"3.self_attn.q_proj"``)."""
    adapter = adapter_for(model)
    layers = {}
    for k, m in row_masks.items():  # validate everything before changing anything
        lin = resolve(model, k, adapter)
        w = weight_oi(lin)
        if m.dtype != torch.bool or m.shape != (w.shape[0],):
            raise ValueError(f"{k}: row mask must be bool of shape ({w.shape[0]},), got {m.dtype} {tuple(m.shape)}")
        layers[k] = lin
    before = snapshot(model)
    rows, n = [], 0
    for k, m in row_masks.items():
        lin = layers[k]
        idx = torch.nonzero(m).flatten().to(lin.weight.device)
        weight_oi(lin)[idx] = 0
        if lin.bias is not None:
            lin.bias.data[idx] = 0
        n += idx.numel()
        w = weight_oi(lin)
        rows.append({"layer": k, "out": w.shape[0], "in": w.shape[1], "params": w.numel(),
                     "zeros": int((w == 0).sum()), "rows_zeroed": idx.numel()})
    for r in rows:
        r["sparsity"] = r["zeros"] / r["params"]
    return PruneReport(method, {}, before, snapshot(model), pd.DataFrame(rows), notes={"rows_masked": n})


@torch.no_grad()
def remove_vocab(model: nn.Module, tokenizer, mask: torch.Tensor, fallback: str | None = None,
                 method: str = "remove_vocab") -> tuple[RemappedTokenizer, PruneReport]:
    """Keep only the tokens the mask does not prune: rows of the input embedding and the LM head
    (tied or untied), in place.  Returns the ``RemappedTokenizer`` for the new ids, and the report."""
    emb = adapter_for(model).input_embeddings(model)
    if mask.dtype != torch.bool or mask.shape != (emb.num_embeddings,):
        raise ValueError(f"vocabulary mask must be bool of shape ({emb.num_embeddings},), got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    vmap = make_vocab_map(~mask, tokenizer, fallback)
    before = snapshot(model)
    info = keep_vocab_rows(model, vmap)
    rep = PruneReport(method, {}, before, snapshot(model), notes={"fallback": vmap.fallback, "tied": info["tied"]})
    return RemappedTokenizer(tokenizer, vmap), rep
