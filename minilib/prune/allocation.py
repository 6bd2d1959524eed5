"""How much of each block a one-shot pruning removes: per-block sparsity lists, checked, and OWL's
outlier-weighted allocation (Yin et al., 2024, "Outlier Weighed Layerwise sparsity").

    from minilib.prune import owl_sparsities, prune_model
    alloc = owl_sparsities(model, calib, 0.7, m=5.0, lam=0.08)    # dense model, one Wanda-statistic pass
    alloc.sparsities      # one per block, mean 0.7, within 0.7 +- 0.08
    prune_model(model, "sparsegpt", alloc.sparsities, calib=calib)  # any method takes a per-block list

A per-block list gives every linear layer of block ``l`` sparsity ``s_l`` (unstructured only: an N:M
pattern is the same in every layer).  ``implied_sparsity`` is the overall sparsity a list implies over
the weights it prunes (blocks of different sizes weigh by their parameters); ``prune_model`` reports
it as the target's ``sparsity`` beside the list (``layer_sparsity``).

OWL, as the authors' code computes it (``lib/prune_all.py`` of luuyin/OWL): on the *dense* model,
block by block, the Wanda score ``|W_ij| * ||X_j||`` of every weight of the block's linear layers;
the block's outlier ratio is the percentage of those scores above ``m`` times their mean; the ratios
are scaled to ``[0, 2 lam]`` (min to max), centred on their mean, and a block's sparsity is the target
minus its centred ratio -- more outliers, less pruning.  The mean over blocks is the target exactly
(an unweighted mean, as in the paper; ``implied_sparsity`` says what it is over the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from minilib.calib.accumulators import InputSqNorms
from minilib.calib.passes import resolve_forward_dtype, sequential_pass
from minilib.device import resolve_device
from minilib.models.adapters import adapter_for
from minilib.models.linear import in_features, weight_oi
from minilib.prune.masks import SparsityError, check_sparsity
from minilib.prune.scores import score_wanda


def is_layer_list(sparsity) -> bool:
    """Whether ``sparsity`` is a per-block list (list, tuple, 1-D array or tensor) rather than a number."""
    if isinstance(sparsity, (list, tuple)):
        return True
    return isinstance(sparsity, (np.ndarray, torch.Tensor)) and sparsity.ndim == 1


def check_layer_sparsities(values, n_blocks: int) -> list[float]:
    """A per-block sparsity list: exactly ``n_blocks`` numbers, each in [0, 1)."""
    vals = values.tolist() if isinstance(values, (np.ndarray, torch.Tensor)) else list(values)
    if len(vals) != n_blocks:
        raise SparsityError(f"per-block sparsity list has {len(vals)} entries, the model has {n_blocks} blocks: "
                            "give one sparsity per block")
    out = []
    for i, v in enumerate(vals):
        try:
            out.append(check_sparsity(v))
        except SparsityError as e:
            raise SparsityError(f"per-block sparsity list, block {i}: {e}") from None
    return out


def block_params(model: nn.Module) -> list[int]:
    """Weights of the linear layers of each block (what one-shot pruning prunes)."""
    adapter = adapter_for(model)
    return [sum(weight_oi(layer).numel() for layer in adapter.linear_layers(b).values()) for b in adapter.blocks(model)]


def implied_sparsity(model: nn.Module, sparsities: list[float]) -> float:
    """The overall sparsity of the blocks' linear weights that a per-block list implies."""
    sizes = block_params(model)
    return float(sum(s * p for s, p in zip(sparsities, sizes)) / sum(sizes))


@dataclass
class Allocation:
    """A per-block sparsity allocation and how it was reached."""

    sparsities: list[float]
    target: float
    implied: float                 # over the blocks' linear weights (``implied_sparsity``)
    outlier_ratios: list[float]    # per block, percent of Wanda scores above m x their mean
    m: float
    lam: float

    def as_dict(self) -> dict:
        return {"method": "owl", "target": self.target, "implied": self.implied, "m": self.m, "lam": self.lam,
                "sparsities": list(self.sparsities), "outlier_ratios": list(self.outlier_ratios)}


def owl_from_ratios(ratios, sparsity: float, lam: float) -> list[float]:
    """OWL's allocation from per-block outlier ratios: scaled to [0, 2 lam], centred, subtracted from
    the target.  Equal ratios give the uniform allocation."""
    r = np.asarray(ratios, float)
    span = r.max() - r.min()
    scaled = (r - r.min()) / span * 2 * lam if span > 0 else np.zeros_like(r)
    return [float(sparsity - d) for d in scaled - scaled.mean()]


def _check_positive(name: str, v, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise SparsityError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {v!r}")
    return float(v)


@torch.no_grad()
def owl_sparsities(model: nn.Module, calib: torch.Tensor, sparsity: float, m: float = 5.0, lam: float = 0.08,
                   device="auto", batch_size: int = 8, progress: bool = False, forward_dtype=None) -> Allocation:
    """OWL's per-block sparsities for a target ``sparsity`` (see the module docstring); ``m`` is the
    outlier threshold (the paper's M, 5 by default) and ``lam`` the largest deviation from the target
    (the paper's lambda, 0.08).  The model is not changed (one calibration pass over the dense
    blocks).  Every block's sparsity must stay in [0, 1): ``sparsity + lam < 1``.  ``device`` and
    ``forward_dtype`` (``"auto"`` included) as in ``prune_model``."""
    sparsity = check_sparsity(sparsity)
    m = _check_positive("m (OWL's outlier threshold)", m)
    lam = _check_positive("lam (OWL's lambda)", lam, allow_zero=True)
    if not (0 <= sparsity - lam and sparsity + lam < 1):
        raise SparsityError(f"OWL with sparsity={sparsity:g} and lam={lam:g} would give blocks sparsities in "
                            f"[{sparsity - lam:g}, {sparsity + lam:g}]: they must lie in [0, 1)")
    ratios: list[float] = []

    def on_block(step):
        layers = step.linear_keys()
        accs = {k: InputSqNorms(in_features(l), step.device or step.inputs[0].device) for k, l in layers.items()}
        step.feed(accs)
        scores = torch.cat([score_wanda(weight_oi(layers[k]).float(), accs[k].input_sq_norms()).flatten()
                            for k in layers])
        ratios.append(float((scores > m * scores.mean()).float().mean()) * 100)
        for a in accs.values():
            a.free()

    dev = resolve_device(device)
    sequential_pass(model, calib, on_block, dev, batch_size, progress=progress, desc="OWL outlier ratios",
                    forward_dtype=resolve_forward_dtype(forward_dtype, dev))
    s = owl_from_ratios(ratios, sparsity, lam)
    return Allocation(s, sparsity, implied_sparsity(model, s), ratios, m, lam)
