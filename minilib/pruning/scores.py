"""Importance of every FFN neuron, one tensor per layer (higher = more important, pruned last).

A new criterion is one new ``score_*`` function.  None of them changes the model.
"""

from __future__ import annotations

import torch

from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi

SCORE_KINDS = ("abs_proj", "abs_cos", "proj", "cos")


def score_random(model, seed: int = 0) -> list[torch.Tensor]:
    """Random scores drawn independently for every layer from one seeded generator (so each layer
    gets its own random indices; the original code reused one index set in every layer)."""
    g = torch.Generator().manual_seed(int(seed))
    return [torch.rand(f.width, generator=g) for f in adapter_for(model).ffns(model)]


def score_magnitude(model) -> list[torch.Tensor]:
    """L2 norm of everything a neuron owns: its row of ``up`` (and ``gate``) and its column of ``down``."""
    out = []
    for f in adapter_for(model).ffns(model):
        s = weight_oi(f.up).float().pow(2).sum(1) + weight_oi(f.down).float().pow(2).sum(0)
        if f.gate is not None:
            s = s + weight_oi(f.gate).float().pow(2).sum(1)
        out.append(s.sqrt().cpu())
    return out


def score_anatomy(model, anatomy, kind: str = "abs_proj") -> list[torch.Tensor]:
    """Anatomy score per neuron (checked against ``model``): by default the mean |projection| of the
    neuron's contribution ``a_j W_down[:, j]`` on the decision vector (``neuron_abs_proj``), i.e. how
    much it moves the decision token along its final direction; ``abs_cos``/``cos``/``proj`` use the
    other anatomy arrays."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"unknown anatomy score {kind!r}; choose one of {SCORE_KINDS}")
    anatomy.check(model)
    arr = anatomy[f"neuron_{kind}"]
    return [torch.as_tensor(arr[l], dtype=torch.float32) for l in range(arr.shape[0])]
