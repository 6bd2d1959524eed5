"""DSnoT (Zhang et al., 2024, "Dynamic Sparse No Training"): training-free refinement of a per-row
mask.  Each output row's *expected* reconstruction error is ``e_i = sum over pruned j of W_ij * m_j``
with ``m_j`` the mean input of column ``j`` summed over a window (as the authors' ``sum_metric_row``).
While ``|e_i|`` exceeds ``threshold`` the row swaps one weight per cycle: it regrows the pruned weight
whose contribution ``W_ij m_j`` (divided by ``var_j ** var_power``) most reduces ``e_i`` (the largest
of ``e_i``'s sign) and prunes, among its kept weights of lowest initial score, one of opposite
contribution -- as long as the swap does not flip the sign of ``e_i``; a row that cannot improve stops
for good.  The number of pruned weights per row never changes.  As the authors' ``prune_DSnoT``
(``lib/prune.py`` of zyxxmu/DSnoT) with ``initial_method`` wanda or magnitude, unstructured; their
N:M variant and the SparseGPT-saliency start are not implemented here.

Differences, on purpose: the variance is pooled over all calibration tokens (theirs averages the
variance within each window), and candidates are only weights that really are pruned (regrow) or
kept (prune), so a row whose candidates run out stops instead of swapping a weight with itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Moments:
    """Per input column: ``sum over tokens of x**2``, the mean, the variance; ``seqlen``: the window length."""

    sq_norms: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    seqlen: int


def score_dsnot(weight: torch.Tensor, stat: Moments, initial: str = "wanda") -> torch.Tensor:
    """DSnoT's initial score: Wanda's ``|W_ij| ||X_j||`` or ``|W|`` (both compared per row)."""
    from minilib.prune.scores import score_magnitude, score_wanda
    return score_wanda(weight, stat.sq_norms) if initial == "wanda" else score_magnitude(weight)


@torch.no_grad()
def refine_dsnot(weight: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, stat: Moments,
                 max_cycles: int = 50, threshold: float = 0.1, var_power: float = 1.0) -> torch.Tensor:
    """The refined mask (True = pruned) of one layer; ``mask`` must prune the same count in every row
    (a per-row mask), ``scores`` the initial scores it came from."""
    w = weight.float()
    rows, cols = w.shape
    k = mask.sum(1)
    if not bool((k == k[0]).all()):
        raise ValueError("DSnoT refines a per-row mask (the same number pruned in every row)")
    k = int(k[0])
    mask = mask.clone()
    if k == 0 or k == cols or max_cycles == 0:
        return mask
    metric = w * (stat.mean.to(w.device).float() * stat.seqlen)[None, :]  # W_ij m_j
    err = (metric * mask).sum(1)
    sign0 = torch.sign(err)
    var = stat.var.to(w.device).float().clamp_min(torch.finfo(torch.float32).tiny) ** var_power
    # regrow candidates: the pruned weights of each row, ascending in W_ij m_j / var_j
    pruned_idx = torch.sort(mask.float(), dim=1, descending=True, stable=True).indices[:, :k]
    grow = pruned_idx.gather(1, torch.sort((metric / var[None, :]).gather(1, pruned_idx), dim=1, stable=True).indices)
    # prune candidates: the kept weights in ascending initial score, then negative contributions in that
    # order and positive ones in the reverse order (the least important positive one last)
    kept_idx = torch.sort(mask.float(), dim=1, stable=True).indices[:, : cols - k]
    kept_idx = kept_idx.gather(1, torch.sort(scores.float().gather(1, kept_idx), dim=1, stable=True).indices)
    neg = metric.gather(1, kept_idx) < 0
    order = torch.arange(cols - k, device=w.device).expand(rows, -1)
    key = torch.where(neg, order, 2 * (cols - k) - order)   # negatives first (ascending), positives reversed
    shrink = kept_idx.gather(1, torch.sort(key, dim=1, stable=True).indices)
    g_lo = torch.zeros(rows, dtype=torch.long, device=w.device)
    g_hi = torch.full_like(g_lo, k - 1)
    p_lo = torch.zeros_like(g_lo)
    p_hi = torch.full_like(g_lo, cols - k - 1)
    active = torch.ones(rows, dtype=torch.bool, device=w.device)
    r = torch.arange(rows, device=w.device)
    for _ in range(int(max_cycles)):
        active &= (g_lo <= g_hi) & (p_lo <= p_hi) & (err.abs() > threshold)
        if not bool(active.any()):
            break
        up = err > 0  # regrow a positive contribution (from the top) / a negative one (from the bottom)
        gi = grow[r, torch.where(up, g_hi, g_lo)]
        down = err < 0  # prune a positive contribution (from the end) / a negative one (from the start)
        pi = shrink[r, torch.where(down, p_hi, p_lo)]
        after = err + metric[r, pi] - metric[r, gi]
        active &= torch.sign(after) == sign0
        mask[r[active], pi[active]] = True
        mask[r[active], gi[active]] = False
        err = torch.where(active, after, err)
        g_hi = g_hi - (up & active).long()
        g_lo = g_lo + (~up & active).long()
        p_hi = p_hi - (down & active).long()
        p_lo = p_lo + (~down & active).long()
    return mask
