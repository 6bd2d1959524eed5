"""Threshold pruning of neurons by their normalized L1 norm (score -> mask -> apply).

* ``score``: the ``NeuronStats`` of a calibration pass (``minilib.contextual.stats``).
* ``mask_ffn_neurons``: per block, the FFN neurons to remove: those whose post-activation norm, or
  the norm of their ``up`` (or ``gate``) row, is below ε (``criterion="any"``, the default), or only
  the post-activation norm (``criterion="post_act"``).
* ``apply_ffn_pruning``: removes them for real (rows of up/gate + bias, columns of down) through
  ``minilib.models.surgery.remove_ffn_neurons``.

What is removed physically, and what is not (shape constraints):

* FFN neurons: removed (up/gate rows, down columns).  This is the main target.
* ``down`` rows and attention ``o`` rows write the residual stream, whose width every block shares;
  ``q/k/v`` rows belong to heads whose ``head_dim`` is fixed by the attention kernel and the rotary
  embedding.  None of these rows can be removed one at a time, so they are **skipped** by default;
  ``attention="mask"`` zeroes the rows under ε instead (fewer nonzeros, same shapes).
* The embedding and LM head rows (vocabulary) are pruned by token frequency in ``vocab.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from minilib.contextual.stats import NeuronStats
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi
from minilib.models.surgery import remove_ffn_neurons

MASKABLE_ROWS = ("q", "k", "v", "qkv", "o")


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"threshold ε must be >= 0, got {eps}")
    return eps


def mask_ffn_neurons(model: nn.Module, stats: NeuronStats, eps: float, criterion: str = "any") -> list[torch.Tensor]:
    """Boolean masks, one per block, ``True`` for the FFN neurons to remove (norm < ε).

    Raises ``ValueError`` for ε < 0 and for a threshold that would remove every neuron of a layer.
    """
    eps = check_eps(eps)
    if criterion not in ("any", "post_act"):
        raise ValueError(f"criterion must be 'any' or 'post_act', got {criterion!r}")
    adapter = adapter_for(model)
    ffns = adapter.ffns(model)
    if len(stats.ffn) != len(ffns):
        raise ValueError(f"stats cover {len(stats.ffn)} blocks, the model has {len(ffns)}")
    masks = []
    for i, (ffn, post) in enumerate(zip(ffns, stats.ffn)):
        if post.numel() != ffn.width:
            raise ValueError(f"block {i}: stats have {post.numel()} FFN neurons, the model {ffn.width} "
                             f"(stats from another model, or the model was already pruned)")
        m = post < eps
        if criterion == "any":
            for part in ("up", "gate"):
                path = adapter.ffn_paths.get(part)
                if path is not None:
                    m = m | (stats.linear[f"{i}.{path}"] < eps)
        if bool(m.all()):
            raise ValueError(f"ε={eps:g} would remove every FFN neuron of block {i} "
                             f"(its largest normalized norm is {float(post.max()):.3g}); use a smaller ε")
        masks.append(m)
    return masks


def mask_linear_rows(model: nn.Module, stats: NeuronStats, eps: float,
                     kinds: tuple[str, ...] = MASKABLE_ROWS) -> dict[str, torch.Tensor]:
    """``{stats key: bool[out_features]}`` for the attention projections ``kinds``: rows under ε."""
    eps = check_eps(eps)
    adapter = adapter_for(model)
    paths = {adapter.attn_paths[k] for k in kinds if k in adapter.attn_paths}
    out = {}
    for key, norms in stats.linear.items():
        if key.split(".", 1)[1] in paths:
            m = norms < eps
            if bool(m.all()):
                raise ValueError(f"ε={eps:g} would mask every row of {key}; use a smaller ε")
            out[key] = m
    return out


def apply_ffn_pruning(model: nn.Module, masks: list[torch.Tensor]) -> list[int]:
    """Remove the masked FFN neurons of every block; returns how many were removed per block."""
    adapter = adapter_for(model)
    removed = []
    for i, m in enumerate(masks):
        keep = torch.nonzero(~m.cpu()).flatten()
        removed.append(remove_ffn_neurons(model, i, keep, adapter) if bool(m.any()) else 0)
    return removed


@torch.no_grad()
def apply_row_masks(model: nn.Module, row_masks: dict[str, torch.Tensor]) -> int:
    """Zero the masked output rows (weight row and bias entry); returns how many rows were zeroed."""
    adapter = adapter_for(model)
    blocks = adapter.blocks(model)
    n = 0
    for key, m in row_masks.items():
        i, path = key.split(".", 1)
        lin = adapter.linear_layers(blocks[int(i)])[path]
        idx = torch.nonzero(m).flatten().to(lin.weight.device)
        weight_oi(lin)[idx] = 0
        if lin.bias is not None:
            lin.bias.data[idx] = 0
        n += idx.numel()
    return n


def size_by_type(model: nn.Module) -> dict[str, int]:
    """Parameters by layer type: embedding, attention, ffn, norm, head (untied only), other."""
    adapter = adapter_for(model)
    seen, out = set(), {"embedding": 0, "attention": 0, "ffn": 0, "norm": 0, "head": 0, "other": 0}

    def add(kind, params):
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out[kind] += p.numel()

    add("embedding", adapter.input_embeddings(model).parameters())
    head = adapter.head(model)
    if head is not None:
        add("head", head.parameters())
    for block in adapter.blocks(model):
        ffn = adapter.ffn(block)
        add("ffn", [p for part in ("up", "gate", "down") if getattr(ffn, part) is not None
                    for p in getattr(ffn, part).parameters()])
        add("attention", [p for m in adapter.attention(block).values() for p in m.parameters()])
        for name, m in block.named_modules():
            if "norm" in type(m).__name__.lower():
                add("norm", m.parameters(recurse=False))
    fn = adapter.final_norm(model)
    if fn is not None:
        add("norm", fn.parameters())
    add("other", model.parameters())
    out["total"] = sum(v for k, v in out.items())
    return out


def nonzeros(model: nn.Module) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += int(torch.count_nonzero(p))
    return n


@dataclass
class PruneReport:
    """What one pruning call achieved."""

    eps: float
    before: dict[str, int]
    after: dict[str, int]
    ffn_removed: list[int]
    ffn_widths: list[int]
    rows_masked: int
    nonzeros_before: int
    nonzeros_after: int

    def table(self) -> pd.DataFrame:
        """Size before and after, per layer type."""
        rows = [{"type": k, "before": b, "after": self.after[k],
                 "removed_pct": 100.0 * (1 - self.after[k] / b) if b else 0.0}
                for k, b in self.before.items()]
        return pd.DataFrame(rows)

    @property
    def size_ratio(self) -> float:
        return self.after["total"] / self.before["total"]

    def as_dict(self) -> dict:
        return {"eps": self.eps, "params_before": self.before["total"], "params_after": self.after["total"],
                "size_pct": 100 * self.size_ratio, "ffn_neurons_removed": sum(self.ffn_removed),
                "ffn_neurons_before": sum(self.ffn_removed) + sum(self.ffn_widths),
                "rows_masked": self.rows_masked, "nonzeros_after": self.nonzeros_after,
                **{f"{k}_before": v for k, v in self.before.items() if k != "total"},
                **{f"{k}_after": v for k, v in self.after.items() if k != "total"}}


def prune_neurons(model: nn.Module, stats: NeuronStats, eps: float, criterion: str = "any",
                  attention: str = "skip", verbose: bool = True) -> PruneReport:
    """Threshold pruning in place: remove FFN neurons under ε; attention rows ``"skip"`` or ``"mask"``."""
    if attention not in ("skip", "mask"):
        raise ValueError(f"attention must be 'skip' or 'mask', got {attention!r}")
    masks = mask_ffn_neurons(model, stats, eps, criterion)
    rows = mask_linear_rows(model, stats, eps) if attention == "mask" else {}
    before, nz_before = size_by_type(model), nonzeros(model)
    removed = apply_ffn_pruning(model, masks)
    n_rows = apply_row_masks(model, rows)
    from minilib.models.surgery import ffn_widths
    rep = PruneReport(float(eps), before, size_by_type(model), removed, ffn_widths(model), n_rows, nz_before,
                      nonzeros(model))
    if verbose:
        print(f"[contextual] ε={eps:g}: removed {sum(removed)} FFN neurons "
              f"({100 * sum(removed) / (sum(removed) + sum(rep.ffn_widths)):.1f}%), masked {n_rows} attention rows; "
              f"size {rep.before['total'] / 1e6:.2f}M -> {rep.after['total'] / 1e6:.2f}M ({100 * rep.size_ratio:.1f}%)")
    return rep
