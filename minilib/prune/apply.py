"""Apply prune masks (``True`` = prune) to a model: zero weights, zero or remove FFN neurons, zero
output rows, remove vocabulary rows.  Each call validates its masks against the model first (so a
bad mask changes nothing) and returns a ``PruneReport``.

* ``zero_weights``   -- one layer: zero the masked weights (then optionally round-to-nearest quantize);
* ``zero_neurons``   -- zero the ``down`` columns of masked FFN neurons (same function as removal,
  shapes unchanged: for comparisons);
* ``remove_neurons`` -- physically remove masked FFN neurons (rows of up/gate and their biases,
  columns of down) through ``minilib.models.remove_ffn_neurons``;
* ``zero_rows``      -- zero output rows (weight row and bias entry) of named linear layers;
* ``remove_vocab``   -- keep only the unmasked rows of the embedding and LM head; returns the
  ``RemappedTokenizer`` that speaks the new ids.

A failure half-way through ``remove_neurons`` raises ``PartialPruneError`` naming the blocks that were
already changed (prune a copy if you need the original back).
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from minilib.calib.passes import resolve
from minilib.models.adapters import adapter_for
from minilib.models.linear import set_weight_oi, weight_oi
from minilib.models.surgery import ffn_widths, remove_ffn_neurons
from minilib.models.vocab import RemappedTokenizer, keep_vocab_rows, make_vocab_map
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


@torch.no_grad()
def remove_neurons(model: nn.Module, masks: list[torch.Tensor], method: str = "remove_neurons",
                   target: dict | None = None, verbose: bool = False) -> PruneReport:
    """Physically remove the masked FFN neurons of every block; returns the report (widths,
    parameters before/after, achieved ratio)."""
    adapter = adapter_for(model)
    _check_neuron_masks(model, masks)
    before = snapshot(model)
    t = time.perf_counter()
    done = []
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
    rep = PruneReport(method, target or {}, before, snapshot(model), timings={"apply_s": time.perf_counter() - t})
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
