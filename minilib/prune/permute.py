"""Channel permutation for N:M sparsity (RIA: Zhang et al., ICLR 2024, "Plug-and-Play", section 4).

An N:M mask prunes ``n`` of every ``m`` *consecutive* input columns.  Which columns share a group is
arbitrary for the layer's function: a kernel may store ``W[:, perm]`` and gather ``x[:, perm]``.
``nm_permutation`` chooses a column order ``perm`` whose N:M mask keeps more of the total score:

1. *heuristic channel reallocation* (the authors' default): the columns sorted by their summed
   score are cut into ``m`` bands of ``in / m``; group ``g`` takes the ``g``-th column of every band,
   every other band walked backwards, so that each group holds one column of each band and strong
   and weak bands pair up;
2. *linear sum assignment* (``mode="lsa"``): for each position ``p`` of the ``m`` in a group, the
   other ``m - 1`` columns of every group are held fixed and the position-``p`` columns are
   reassigned among the groups by an optimal assignment (``scipy.optimize.linear_sum_assignment``,
   maximising the retained score).  The current order is one assignment, so a step never loses.

The start is the better of the identity and the heuristic (the heuristic alone can lose on some
matrices), and every step is kept only if the retained score measured with ``mask_nm`` did not fall,
so ``nm_retained(s, n, m, perm) >= nm_retained(s, n, m)`` always.

``mask_nm_permuted`` gives the mask in the original (memory) column order; it is N:M along ``perm``
(``is_nm_permuted``), generally not in memory order.

    perm = nm_permutation(scores, 2, 4)                  # LongTensor [in]
    mask = mask_nm_permuted(scores, perm, 2, 4)          # bool [out, in], True = prune, memory order
    is_nm_permuted(w.masked_fill(mask, 0), perm, 2, 4)   # True
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from minilib.prune.masks import SparsityError, check_nm, is_nm, mask_nm

PERMUTE_MODES = ("none", "heuristic", "lsa")

# elements of the [rows, groups, groups] gain tensor computed at once (about 128 MiB in fp32)
_CHUNK = 1 << 25


def check_permute(name: str, value) -> str:
    """The ``permute`` option: one of ``PERMUTE_MODES``; ``True`` means ``"lsa"``, ``False`` ``"none"``."""
    if value is True:
        return "lsa"
    if value is False or value is None:
        return "none"
    if not isinstance(value, str) or value not in PERMUTE_MODES:
        raise ValueError(f"{name} must be one of {PERMUTE_MODES} (or True = 'lsa', False = 'none'), got {value!r}")
    return value


def _check_scores(scores, n, m, name: str = "scores") -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [out, in], got "
                         f"{type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"{name} must be a real floating or integer tensor, got {scores.dtype}")
    check_nm(n, m)
    if scores.shape[1] % m:
        raise SparsityError(f"{name}: its input width (columns) {scores.shape[1]} must be divisible by m={m} "
                            f"for {n}:{m} sparsity")
    if scores.numel() and not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return scores.float()


def check_permutation(perm, width: int, name: str = "perm") -> torch.Tensor:
    """``perm`` as a LongTensor: a permutation of ``range(width)`` (every column exactly once)."""
    if not isinstance(perm, torch.Tensor) or perm.dim() != 1 or perm.dtype.is_floating_point or \
            perm.dtype == torch.bool or perm.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor (a permutation of the {width} input columns), got "
                         f"{type(perm).__name__} {getattr(perm, 'dtype', '')} {tuple(getattr(perm, 'shape', ()))}")
    if perm.numel() != width:
        raise ValueError(f"{name} has {perm.numel()} entries, expected {width} (one per input column)")
    perm = perm.long()
    if width and not torch.equal(perm.sort().values.cpu(), torch.arange(width)):
        raise ValueError(f"{name} is not a permutation of range({width}): every column must appear exactly once")
    return perm


def nm_retained(scores: torch.Tensor, n: int, m: int, perm: torch.Tensor | None = None) -> float:
    """The total score the N:M mask keeps (``mask_nm`` along ``perm``; the identity by default)."""
    s = _check_scores(scores, n, m)
    if perm is not None:
        s = s[:, check_permutation(perm, s.shape[1]).to(s.device)]
    return float(s.masked_fill(mask_nm(s, n, m, "scores"), 0).sum(dtype=torch.float64))


def mask_nm_permuted(scores: torch.Tensor, perm: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The N:M prune mask along the column order ``perm`` (``n`` lowest of every ``m`` consecutive
    columns of ``scores[:, perm]``), returned in the original column order (``True`` = prune)."""
    s = _check_scores(scores, n, m)
    perm = check_permutation(perm, s.shape[1]).to(s.device)
    mask = torch.empty_like(s, dtype=torch.bool)
    mask[:, perm] = mask_nm(s[:, perm], n, m, "scores")
    return mask


def is_nm_permuted(weight: torch.Tensor, perm: torch.Tensor, n: int, m: int) -> bool:
    """Whether ``weight[:, perm]`` holds at least ``n`` zeros in every ``m`` consecutive columns."""
    perm = check_permutation(perm, weight.shape[-1])
    return is_nm(weight[:, perm.to(weight.device)], n, m)


def heuristic_permutation(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Step 1 of the module docstring (the authors' channel reallocation with the column sums as the
    importance): ``m`` bands by summed score, one column of each band per group, odd bands reversed."""
    s = _check_scores(scores, n, m)
    groups = s.shape[1] // m
    bands = s.sum(0).argsort(stable=True).view(m, groups).clone()
    bands[1::2] = bands[1::2].flip(-1)
    return bands.t().reshape(-1).cpu()


def _position_gain(s: torch.Tensor, p: int, keep: int) -> torch.Tensor:
    """``gain[r, c]``: how much group ``r``'s retained score grows when the column at position ``p``
    comes from group ``c``, over group ``r`` without a position-``p`` column, summed over rows.

    With the other ``m - 1`` columns of a group fixed, keeping the ``keep`` largest of them plus a
    candidate ``x`` retains ``top_keep(others) + max(0, x - t)``, ``t`` the ``keep``-th largest of the
    others (``keep = m - n <= m - 1``), so ``gain[r, c] = sum_rows max(0, cand[row, c] - t[row, r])``.
    This closed form replaces the authors' top-k over every (group, candidate) pair; it is written
    here because no library computes it, and it is chunked over rows to bound memory."""
    rows, groups, m = s.shape
    others = torch.cat([s[..., :p], s[..., p + 1:]], dim=-1)            # [rows, G, m-1]
    t = others.topk(keep, dim=-1).values[..., -1]                      # [rows, G]
    cand = s[..., p]                                                   # [rows, G]
    gain = torch.zeros(groups, groups, dtype=torch.float64, device=s.device)
    step = max(1, _CHUNK // max(1, groups * groups))
    for i in range(0, rows, step):
        d = (cand[i:i + step, None, :] - t[i:i + step, :, None]).clamp_min_(0)  # [chunk, r, c]
        gain += d.sum(0, dtype=torch.float64)
    return gain


def nm_permutation(scores: torch.Tensor, n: int, m: int, mode: str = "lsa", sweeps: int = 1) -> torch.Tensor:
    """A column order (LongTensor ``[in]``, on the CPU) whose N:M mask (``mask_nm_permuted``) keeps
    at least the score of the identity order's, usually more; ``mode``: ``"heuristic"`` (channel
    reallocation only) or ``"lsa"`` (then ``sweeps`` passes of one assignment per position, the
    authors doing one), ``"none"``: the identity.  See the module docstring.

    Cost of ``lsa``: per sweep ``m`` score matrices of ``(in / m)^2`` entries, each a sum over the
    ``out`` rows (``O(out * in^2 / m)``), and ``m`` assignments of that size."""
    s = _check_scores(scores, n, m)
    mode = check_permute("mode", mode)
    if isinstance(sweeps, bool) or not isinstance(sweeps, (int, np.integer)) or sweeps < 1:
        raise ValueError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    width = s.shape[1]
    perm = torch.arange(width)
    if mode == "none" or width == m or not s.numel():
        return perm
    best = nm_retained(s, n, m)
    h = heuristic_permutation(s, n, m)
    got = nm_retained(s, n, m, h)
    if got > best:
        perm, best = h, got
    if mode == "heuristic":
        return perm
    groups, keep = width // m, m - n
    for _ in range(int(sweeps)):
        before = best
        for p in range(m):
            view = s[:, perm.to(s.device)].view(s.shape[0], groups, m)
            gain = _position_gain(view, p, keep).cpu().numpy()
            rows_, cols = linear_sum_assignment(gain, maximize=True)  # rows_ == arange(groups)
            if gain[rows_, cols].sum() <= gain[rows_, rows_].sum():
                continue  # the current assignment is optimal already
            new = perm.clone().view(groups, m)
            new[:, p] = perm.view(groups, m)[torch.as_tensor(cols, dtype=torch.long), p]
            new = new.view(-1)
            got = nm_retained(s, n, m, new)
            if got >= best:  # exact in exact arithmetic; guards against float ties
                perm, best = new, got
        if best <= before:
            break
    return perm


# --- the permutation a pruned layer's N:M pattern runs along ------------------------------------

_ATTR = "nm_permutation"


def set_layer_permutation(layer, perm: torch.Tensor | None) -> None:
    """Mark ``layer`` (an ``nn.Module``) as N:M along ``perm`` (``None``: in memory order, clearing an
    old mark).  ``prune_model`` marks every layer it prunes; ``to_semi_structured`` reads the mark.
    It is a plain attribute: not saved with the weights (``PruneReport.permutations`` keeps it)."""
    if perm is None:
        layer.__dict__.pop(_ATTR, None)
    else:
        layer.__dict__[_ATTR] = perm.detach().cpu().long()


def layer_permutation(layer) -> torch.Tensor | None:
    """The column order ``layer``'s N:M pattern runs along, where ``prune_model`` permuted it, else ``None``."""
    return layer.__dict__.get(_ATTR)
