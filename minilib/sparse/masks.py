"""Masks: which weights to prune.  Every ``mask_*`` returns a bool tensor, ``True`` = pruned.

Scores come from ``minilib.sparse.scores`` (low score = pruned first).  Ties are broken by position
(stable sort), so the same scores always give the same mask.
"""

from __future__ import annotations

import torch


class SparsityError(ValueError):
    """A sparsity, N:M pattern or bit width that cannot be honoured."""


def check_sparsity(sparsity: float) -> float:
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise SparsityError(f"sparsity must lie in [0, 1), got {sparsity}")
    return s


def check_nm(n: int, m: int, width: int | None = None, name: str = "layer") -> None:
    """``n`` zeros in every group of ``m`` consecutive input weights; ``width`` must be divisible by ``m``."""
    if int(n) != n or int(m) != m or n < 1 or m < 2:
        raise SparsityError(f"N:M needs integers 1 <= N < M, got {n}:{m}")
    if n >= m:
        raise SparsityError(f"N:M needs N < M (N zeros in each group of M), got {n}:{m}")
    if width is not None and width % m:
        raise SparsityError(f"{name}: input width {width} is not divisible by M={m} for {n}:{m} sparsity")


def n_pruned(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a ``sparsity`` prunes (rounded to nearest)."""
    return int(round(numel * sparsity))


def mask_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` lowest-scoring entries of ``scores`` (over the whole tensor)."""
    flat = scores.flatten()
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = flat.kthvalue(k).values  # selection, not a sort
    mask = flat < kth
    ties = (flat == kth).nonzero().flatten()[: k - int(mask.sum())]  # ties: the first by position
    mask[ties] = True
    return mask.view_as(scores)


def mask_unstructured(scores: torch.Tensor, sparsity: float, per: str = "layer") -> torch.Tensor:
    """Prune the lowest ``sparsity`` fraction of ``scores`` ``[out, in]``, per ``layer`` or per ``row``."""
    sparsity = check_sparsity(sparsity)
    if per == "layer":
        return mask_smallest(scores, n_pruned(scores.numel(), sparsity))
    if per == "row":
        k = n_pruned(scores.shape[-1], sparsity)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        if k > 0:
            mask.scatter_(-1, scores.argsort(dim=-1, stable=True)[..., :k], True)
        return mask
    raise ValueError(f"per must be 'layer' or 'row', got {per!r}")


def mask_nm(scores: torch.Tensor, n: int, m: int, name: str = "layer") -> torch.Tensor:
    """``n`` lowest-scoring of every ``m`` consecutive entries along the input (last) dimension."""
    rows, cols = scores.shape
    check_nm(n, m, cols, name)
    g = scores.reshape(rows, cols // m, m)
    mask = torch.zeros_like(g, dtype=torch.bool)
    mask.scatter_(-1, g.argsort(dim=-1, stable=True)[..., :n], True)
    return mask.view(rows, cols)


def is_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` consecutive input weights holds at least ``n`` zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight.reshape(rows, cols // m, m) == 0).sum(-1) >= n).all())
