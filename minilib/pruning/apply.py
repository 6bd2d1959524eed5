"""Apply keep-masks to a model (physically, or by zeroing for comparison), report what was achieved,
and save/load pruned models (safetensors + JSON plan, no pickle)."""

from __future__ import annotations

from pathlib import Path

import torch

from minilib.eval.report import count_parameters
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi
from minilib.models.surgery import ffn_widths, load_model, remove_ffn_neurons, save_model


def _check_masks(model, masks):
    widths = ffn_widths(model)
    if len(masks) != len(widths) or any(len(m) != w for m, w in zip(masks, widths)):
        raise ValueError(f"masks of widths {[len(m) for m in masks]} do not fit FFN widths {widths}")
    return widths


def apply_ffn_masks(model, masks: list[torch.Tensor], verbose: bool = True) -> dict:
    """Physically remove the neurons whose mask is False (rows of up/gate + bias, columns of down).
    Returns (and prints) what was achieved: widths, parameters, achieved FFN ratio."""
    adapter = adapter_for(model)
    before = _check_masks(model, masks)
    params_before = count_parameters(model)[0]
    for l, m in enumerate(masks):
        keep = torch.nonzero(m.cpu()).flatten()
        if keep.numel() < len(m):
            remove_ffn_neurons(model, l, keep, adapter)
    after = ffn_widths(model, adapter)
    params_after = count_parameters(model)[0]
    rep = {"widths_before": before, "widths_after": after,
           "removed_per_layer": [b - a for b, a in zip(before, after)],
           "ffn_ratio": 1 - sum(after) / sum(before),
           "params_before": params_before, "params_after": params_after,
           "param_ratio": 1 - params_after / params_before}
    if verbose:
        print(f"[prune] removed {sum(before) - sum(after)}/{sum(before)} FFN neurons "
              f"({rep['ffn_ratio']:.1%}); params {params_before:,} -> {params_after:,} ({rep['param_ratio']:.1%} fewer)")
    return rep


@torch.no_grad()
def zero_ffn_neurons(model, masks: list[torch.Tensor]) -> None:
    """Zero the ``down`` columns of masked neurons (same function as removal; shapes unchanged)."""
    _check_masks(model, masks)
    for f, m in zip(adapter_for(model).ffns(model), masks):
        weight_oi(f.down)[:, ~m.to(f.down.weight.device)] = 0


def save_pruned(model, tokenizer, path: str | Path, plan: dict | None = None, head=None) -> Path:
    """Save a pruned model as ``model.safetensors`` + ``minilib_plan.json`` (``plan`` stored under
    ``extra``), and the decision head beside it as safetensors."""
    from minilib.anatomy.decision import HEAD_FILE, save_head
    path = save_model(model, tokenizer, path, extra={"pruning": plan or {}, "has_head": head is not None})
    if head is not None:
        save_head(head, Path(path) / HEAD_FILE)
    return Path(path)


def load_pruned(path: str | Path, device="cpu"):
    """Load what ``save_pruned`` wrote: ``(LoadedModel, head or None)``; the plan is ``loaded.plan``."""
    from minilib.anatomy.decision import HEAD_FILE, load_head
    loaded = load_model(path, device=device)
    f = Path(path) / HEAD_FILE
    head = load_head(f).to(device) if f.is_file() else None
    return loaded, head
