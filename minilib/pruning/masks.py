"""From scores to keep-masks: how many neurons each layer loses, and which.

* ``layer_budgets`` splits a global ratio over layers: uniformly, or against a layer profile
  (layers that matter more lose fewer neurons), never more than ``max_layer_ratio`` of a layer and
  never a preserved neuron.
* ``layer_profile`` / ``preserved_neurons`` read that profile and the protected neurons off an anatomy.
* ``mask_ffn`` returns one boolean keep-mask per layer (True = keep).
"""

from __future__ import annotations

import numpy as np
import torch


def check_ratio(ratio: float) -> float:
    r = float(ratio)
    if not 0.0 <= r < 1.0:
        raise ValueError(f"pruning ratio must lie in [0, 1), got {ratio!r}")
    return r


def layer_profile(anatomy, kind: str = "neuron_abs_proj") -> np.ndarray:
    """Importance of each layer for the decision: the mean anatomy score of its neurons, divided by
    the mean over layers (so 1 = average)."""
    v = np.asarray(anatomy[kind], dtype=np.float64).mean(1)
    v = np.clip(v, 1e-12, None)
    return v / v.mean()


def preserved_neurons(anatomy, fraction: float = 0.01, kind: str = "neuron_abs_cos") -> list[torch.Tensor]:
    """The neurons the strategy protects: per layer, the top ``fraction`` by mean |cos| with the
    decision vector (the most decision-aligned neurons).  Boolean masks, True = preserved."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"preserve fraction must lie in [0, 1), got {fraction!r}")
    arr = np.asarray(anatomy[kind])
    out = []
    for row in arr:
        k = int(round(fraction * len(row)))
        m = torch.zeros(len(row), dtype=torch.bool)
        if k:
            m[torch.topk(torch.as_tensor(row), k).indices] = True
        out.append(m)
    return out


def layer_budgets(widths: list[int], ratio: float, profile=None, strength: float = 1.0, max_layer_ratio: float = 0.9,
                  preserved_counts: list[int] | None = None) -> list[int]:
    """Number of neurons to remove from each layer so that the total is ``round(ratio * sum(widths))``.

    Uniform without ``profile``.  With a profile (importance per layer, mean 1) layer ``l`` gets a share
    proportional to ``profile[l] ** -strength``, capped at ``max_layer_ratio`` of its width and at its
    unpreserved neurons; what a capped layer cannot take is spread over the others.
    """
    ratio = check_ratio(ratio)
    widths = np.asarray(widths, dtype=np.int64)
    L = len(widths)
    if profile is None:
        n = np.rint(ratio * widths).astype(np.int64)
        for l in range(L):
            if n[l] >= widths[l]:
                raise ValueError(f"ratio {ratio} would leave layer {l} with no neurons (width {widths[l]})")
        return n.tolist()
    profile = np.asarray(profile, dtype=np.float64)
    if len(profile) != L:
        raise ValueError(f"layer profile has {len(profile)} entries for {L} layers")
    pres = np.zeros(L, dtype=np.int64) if preserved_counts is None else np.asarray(preserved_counts)
    cap = np.minimum(np.floor(max_layer_ratio * widths), widths - np.maximum(pres, 1)).astype(np.float64)
    total = int(round(ratio * widths.sum()))
    if total > cap.sum():
        raise ValueError(f"ratio {ratio} needs {total} neurons removed but the layer caps (max_layer_ratio="
                         f"{max_layer_ratio}, preserved neurons) allow only {int(cap.sum())}")
    w = np.clip(profile, 1e-6, None) ** (-strength) * widths
    share = np.zeros(L)
    free = np.ones(L, dtype=bool)
    left = float(total)
    for _ in range(L + 1):  # water-filling: cap layers that overflow, redistribute the rest
        if left <= 0 or not free.any():
            break
        alloc = left * w * free / (w * free).sum()
        over = free & (share + alloc > cap)
        if not over.any():
            share += alloc
            left = 0
            break
        left -= float((cap[over] - share[over]).sum())
        share[over] = cap[over]
        free &= ~over
    n = np.floor(share).astype(np.int64)
    rest = total - int(n.sum())
    order = np.argsort(-(share - n))  # largest remainders first
    for l in order:
        if rest <= 0:
            break
        if n[l] < cap[l]:
            n[l] += 1
            rest -= 1
    return n.tolist()


def mask_ffn(scores: list[torch.Tensor], ratio: float, profile=None, preserved: list[torch.Tensor] | None = None,
             strength: float = 1.0, max_layer_ratio: float = 0.9) -> list[torch.Tensor]:
    """Keep-masks (True = keep): in each layer remove its budget of lowest-scoring, unpreserved neurons."""
    ratio = check_ratio(ratio)
    widths = [len(s) for s in scores]
    if preserved is not None and [len(p) for p in preserved] != widths:
        raise ValueError("preserved masks do not match the score shapes")
    pres_counts = [int(p.sum()) for p in preserved] if preserved is not None else None
    budgets = layer_budgets(widths, ratio, profile, strength, max_layer_ratio, pres_counts)
    masks = []
    for l, (s, k) in enumerate(zip(scores, budgets)):
        s = s.detach().float().cpu().clone()
        if preserved is not None:
            s[preserved[l].cpu()] = float("inf")  # never among the lowest
            if k > widths[l] - pres_counts[l]:
                raise ValueError(f"layer {l}: {k} neurons to remove but only {widths[l] - pres_counts[l]} unpreserved")
        keep = torch.ones(widths[l], dtype=torch.bool)
        if k:
            keep[torch.argsort(s, stable=True)[:k]] = False
        if not keep.any():
            raise ValueError(f"ratio {ratio} would leave layer {l} with no neurons")
        masks.append(keep)
    return masks
