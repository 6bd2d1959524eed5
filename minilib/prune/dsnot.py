"""DSnoT (Zhang et al., 2024, "Dynamic Sparse No Training"): training-free refinement of a per-row
mask.  Each output row's *expected* reconstruction error is ``e_i = sum over pruned j of W_ij * m_j``
with ``m_j`` the mean input of column ``j`` summed over a window (as the authors' ``sum_metric_row``).
While ``|e_i|`` exceeds ``threshold`` the row swaps one weight per cycle: it regrows the pruned weight
whose contribution ``W_ij m_j`` (divided by ``var_j ** var_power``) most reduces ``e_i`` (the largest
of ``e_i``'s sign) and prunes, among its kept weights of lowest initial score, one of opposite
contribution -- as long as the swap does not flip the sign of ``e_i``; a row that cannot improve stops
for good.  The number of pruned weights per row never changes.  As the authors' ``prune_DSnoT``
(``lib/prune.py`` of zyxxmu/DSnoT) with ``initial_method`` wanda, magnitude or sparsegpt.

**N:M** (``nm``, their ``prune_n``/``prune_m`` branch): the regrown weight is chosen as above; the
weight pruned in its place is the kept one of lowest initial score **in the regrown weight's own group
of M**, whatever its sign, so every group keeps exactly N pruned.  A weight pruned by a swap is not
taken again, nor is a regrown one; a group with no kept weight left to give stops the row.

**SparseGPT start** (``initial="sparsegpt"``): the initial score is SparseGPT's saliency
``W_ij**2 / [U]_jj**2`` with ``U`` the upper Cholesky factor of ``(H + 1% mean diag H)^-1`` (the
authors' fixed dampening; ``Moments.hinv_diag``), input columns that no calibration token reaches
scoring 0.  The mask is the lowest scores per row; the weights are not reconstructed (DSnoT trains
nothing).

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
    hinv_diag: torch.Tensor | None = None   # SparseGPT's saliency denominator, for initial="sparsegpt"
    dead: torch.Tensor | None = None        # input columns no calibration token reached (diag H == 0)


def obs_diagonal(H: torch.Tensor, percdamp: float = 0.01, name: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """``(diag U, dead)``: the diagonal of the upper Cholesky factor of ``(H + damp I)^-1`` with dead
    columns (``diag H == 0``) set to 1 in ``H`` first, as SparseGPT and the authors' DSnoT do."""
    from minilib.prune.sparsegpt import cholesky_inverse_upper
    H = H.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    U, _ = cholesky_inverse_upper(H, percdamp, name)
    return torch.diag(U), dead


def score_dsnot(weight: torch.Tensor, stat: Moments, initial: str = "wanda") -> torch.Tensor:
    """DSnoT's initial score, compared per row: Wanda's ``|W_ij| ||X_j||``, ``|W|``, or SparseGPT's
    saliency ``W_ij**2 / [U]_jj**2`` (dead columns 0; needs ``stat.hinv_diag``)."""
    from minilib.prune.scores import score_magnitude, score_obs, score_wanda
    if initial == "sparsegpt":
        if stat.hinv_diag is None:
            raise ValueError("DSnoT with initial='sparsegpt' needs the Hessian's inverse factor (Moments.hinv_diag): "
                             "accumulate the 'hessian_moments' statistic")
        score = score_obs(weight, stat.hinv_diag)
        if stat.dead is not None:
            score = score.masked_fill(stat.dead.to(score.device)[None, :], 0.0)
        return score
    return score_wanda(weight, stat.sq_norms) if initial == "wanda" else score_magnitude(weight)


def _setup(weight, mask, stat, var_power):
    """What both variants start from: the contributions ``W_ij m_j``, each row's expected error and
    its sign, the number pruned per row, and the regrow candidates (each row's pruned weights,
    ascending in ``W_ij m_j / var_j ** var_power``)."""
    w = weight.float()
    k = mask.sum(1)
    if not bool((k == k[0]).all()):
        raise ValueError("DSnoT refines a per-row mask (the same number pruned in every row)")
    k = int(k[0])
    metric = w * (stat.mean.to(w.device).float() * stat.seqlen)[None, :]  # W_ij m_j
    err = (metric * mask).sum(1)
    var = stat.var.to(w.device).float().clamp_min(torch.finfo(torch.float32).tiny) ** var_power
    pruned_idx = torch.sort(mask.float(), dim=1, descending=True, stable=True).indices[:, :k]
    grow = pruned_idx.gather(1, torch.sort((metric / var[None, :]).gather(1, pruned_idx), dim=1, stable=True).indices)
    return w, k, metric, err, torch.sign(err), grow


@torch.no_grad()
def refine_dsnot(weight: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, stat: Moments,
                 max_cycles: int = 50, threshold: float = 0.1, var_power: float = 1.0,
                 nm: tuple[int, int] | None = None) -> torch.Tensor:
    """The refined mask (True = pruned) of one layer; ``mask`` must prune the same count in every row
    (a per-row mask; with ``nm`` an N:M mask), ``scores`` the initial scores it came from."""
    if nm is not None:
        return _refine_nm(weight, mask, scores, stat, nm, max_cycles, threshold, var_power)
    mask = mask.clone()
    w, k, metric, err, sign0, grow = _setup(weight, mask, stat, var_power)
    rows, cols = w.shape
    if k == 0 or k == cols or max_cycles == 0:
        return mask
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


def _refine_nm(weight, mask, scores, stat, nm, max_cycles, threshold, var_power) -> torch.Tensor:
    n, m = nm
    mask = mask.clone()
    w, k, metric, err, sign0, grow = _setup(weight, mask, stat, var_power)
    rows, cols = w.shape
    groups = mask.view(rows, cols // m, m).sum(2) if cols % m == 0 else None
    if groups is None or not bool((groups == n).all()):
        raise ValueError(f"DSnoT's N:M refinement needs an {n}:{m} mask (exactly {n} pruned in every group of {m})")
    if k == 0 or n == m or max_cycles == 0:
        return mask
    # the weights that may still be pruned by a swap: kept ones, by initial score (pruned ones: never)
    give = scores.float().masked_fill(mask, float("inf"))
    g_lo = torch.zeros(rows, dtype=torch.long, device=w.device)
    g_hi = torch.full_like(g_lo, k - 1)
    active = torch.ones(rows, dtype=torch.bool, device=w.device)
    r = torch.arange(rows, device=w.device)
    offsets = torch.arange(m, device=w.device)
    for _ in range(int(max_cycles)):
        active &= (g_lo <= g_hi) & (err.abs() > threshold)
        if not bool(active.any()):
            break
        up = err > 0
        gi = grow[r, torch.where(up, g_hi, g_lo)]
        start = gi - gi % m
        block = give.gather(1, start[:, None] + offsets[None, :])
        low, j = block.min(1)
        pi = start + j
        after = err + metric[r, pi] - metric[r, gi]
        active &= torch.isfinite(low) & (torch.sign(after) == sign0)
        mask[r[active], pi[active]] = True
        mask[r[active], gi[active]] = False
        give[r[active], pi[active]] = float("inf")
        err = torch.where(active, after, err)
        g_hi = g_hi - (up & active).long()
        g_lo = g_lo + (~up & active).long()
    return mask
