"""Masks: which weights, neurons or tokens to prune.  Every ``mask_*`` returns bool, ``True`` = prune.

From scores (``minilib.prune.scores``, low score = pruned first) to masks:

* weights ``[out, in]``: ``mask_unstructured`` (per layer or per row), ``mask_nm`` (N:M along the
  inputs), ``mask_smallest`` (the k lowest);
* FFN neurons (one score vector per block): ``mask_neurons`` (a global ratio split into per-layer
  budgets, uniformly or by a layer profile, never touching preserved neurons), ``mask_threshold``
  (every neuron under ε);
* vocabulary: ``mask_vocab`` (tokens a domain does not use, never special or byte tokens).

Ties are broken by position (stable sorts), so the same scores always give the same mask.
One validation for every fraction: ``check_fraction`` (sparsities and ratios in [0, 1)).
"""

from __future__ import annotations

import math

import numpy as np
import torch


class SparsityError(ValueError):
    """A sparsity, ratio, threshold, N:M pattern or bit width that cannot be honoured."""


# --- validation -------------------------------------------------------------------------------

def check_fraction(value, name: str = "sparsity") -> float:
    """A fraction of things to prune: a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) and not (
            isinstance(value, torch.Tensor) and value.numel() == 1):
        raise SparsityError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    v = float(value)
    if not 0.0 <= v < 1.0:  # also rejects NaN
        raise SparsityError(f"{name} must lie in [0, 1), got {value!r}")
    return v


def check_sparsity(sparsity) -> float:
    return check_fraction(sparsity, "sparsity")


def check_ratio(ratio) -> float:
    return check_fraction(ratio, "pruning ratio")


def check_threshold(eps, name: str = "threshold ε") -> float:
    """A pruning threshold: a finite number >= 0."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise SparsityError(f"{name} must be a number >= 0, got {eps!r} ({type(eps).__name__})")
    e = float(eps)
    if not (e >= 0 and math.isfinite(e)):
        raise SparsityError(f"{name} must be a finite number >= 0, got {eps!r}")
    return e


def check_nm(n: int, m: int, width: int | None = None, name: str = "layer") -> None:
    """``n`` zeros in every group of ``m`` consecutive input weights; ``width`` must be divisible by ``m``."""
    try:
        whole = not isinstance(n, bool) and not isinstance(m, bool) and int(n) == n and int(m) == m
    except (TypeError, ValueError):
        whole = False
    if not whole or n < 1 or m < 2:
        raise SparsityError(f"N:M needs integers 1 <= N < M, got {n!r}:{m!r}")
    if n >= m:
        raise SparsityError(f"N:M needs N < M (N zeros in each group of M), got {n}:{m}")
    if width is not None and width % m:
        raise SparsityError(f"{name}: input width {width} is not divisible by M={m} for {n}:{m} sparsity")


def parse_nm(nm) -> tuple[int, int] | None:
    """``"2:4"`` or ``(2, 4)`` -> ``(2, 4)``; ``""``, ``"none"`` or ``None`` -> ``None``; checked."""
    if nm is None or (isinstance(nm, str) and nm.strip().lower() in ("", "none")):
        return None
    if isinstance(nm, str):
        try:
            n, m = (int(v) for v in nm.split(":"))
        except ValueError:
            raise SparsityError(f"N:M pattern must look like '2:4', got {nm!r}") from None
    else:
        try:
            n, m = nm
        except (TypeError, ValueError):
            raise SparsityError(f"N:M pattern must be a pair (n, m) or a string like '2:4', got {nm!r}") from None
    check_nm(n, m)
    return int(n), int(m)


DEFAULT_SPARSITY = 0.5  # what prune_model and SparseGPT.prune prune when neither sparsity nor nm is given


def check_sparsity_nm(sparsity, nm: tuple[int, int] | None) -> float:
    """The sparsity a call prunes.  Without ``nm``: ``sparsity`` (in [0, 1); ``None`` = ``DEFAULT_SPARSITY``).
    With an N:M pattern exactly ``n / m``: ``sparsity`` must then be ``None`` (not given) or ``n / m``
    itself (range always checked); any other value would be silently ignored and is refused."""
    if sparsity is None:
        return DEFAULT_SPARSITY if nm is None else nm[0] / nm[1]
    sparsity = check_sparsity(sparsity)
    if nm is None:
        return sparsity
    n, m = nm
    if not math.isclose(sparsity, n / m, rel_tol=0, abs_tol=1e-9):
        raise SparsityError(f"sparsity={sparsity:g} conflicts with nm={n}:{m}: an N:M pattern prunes exactly "
                            f"N/M = {n / m:g} of the weights; pass sparsity={n / m:g} (or leave it out) "
                            f"with nm, or nm=None for unstructured sparsity {sparsity:g}")
    return n / m


def n_pruned(numel: int, sparsity: float) -> int:
    """How many of ``numel`` weights a ``sparsity`` prunes (rounded to nearest)."""
    return int(round(numel * sparsity))


# --- weights ----------------------------------------------------------------------------------

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


def mask_smallest_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` lowest-scoring entries of every row of ``scores`` (last dimension); ties go to the
    first by position, so the mask equals a stable sort's first ``k`` (a selection, 2-3x faster than
    the sort on SmolLM2's layers)."""
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= scores.shape[-1]:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = scores.kthvalue(k, dim=-1, keepdim=True).values
    mask = scores < kth
    tie = scores == kth
    mask |= tie & (tie.cumsum(-1) <= k - mask.sum(-1, keepdim=True))
    return mask


def mask_unstructured(scores: torch.Tensor, sparsity: float, per: str = "layer") -> torch.Tensor:
    """Prune the lowest ``sparsity`` fraction of ``scores`` ``[out, in]``, per ``layer`` or per ``row``."""
    sparsity = check_sparsity(sparsity)
    if per == "layer":
        return mask_smallest(scores, n_pruned(scores.numel(), sparsity))
    if per == "row":
        return mask_smallest_rows(scores, n_pruned(scores.shape[-1], sparsity))
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


# --- FFN neurons ------------------------------------------------------------------------------

def layer_profile(per_neuron) -> np.ndarray:
    """Importance of each layer: the mean of its neurons' scores ``[L, W]`` (or a list of vectors),
    divided by the mean over layers (1 = average)."""
    v = np.array([np.asarray(r, dtype=np.float64).mean() for r in per_neuron])
    v = np.clip(v, 1e-12, None)
    return v / v.mean()


def preserve_top(per_neuron, fraction: float) -> list[torch.Tensor]:
    """Per layer, the top ``fraction`` of neurons by score: bool masks, ``True`` = preserved (never
    pruned).  Not a prune mask."""
    fraction = check_fraction(fraction, "preserved fraction")
    out = []
    for row in per_neuron:
        row = torch.as_tensor(np.asarray(row))
        k = int(round(fraction * len(row)))
        m = torch.zeros(len(row), dtype=torch.bool)
        if k:
            m[torch.topk(row, k).indices] = True
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
                raise SparsityError(f"ratio {ratio} would leave layer {l} with no neurons (width {widths[l]})")
        return n.tolist()
    profile = np.asarray(profile, dtype=np.float64)
    if len(profile) != L:
        raise ValueError(f"layer profile has {len(profile)} entries for {L} layers")
    pres = np.zeros(L, dtype=np.int64) if preserved_counts is None else np.asarray(preserved_counts)
    cap = np.minimum(np.floor(max_layer_ratio * widths), widths - np.maximum(pres, 1)).astype(np.float64)
    total = int(round(ratio * widths.sum()))
    if total > cap.sum():
        raise SparsityError(f"ratio {ratio} needs {total} neurons removed but the layer caps (max_layer_ratio="
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


def mask_neurons(scores: list[torch.Tensor], ratio: float, profile=None, preserved: list[torch.Tensor] | None = None,
                 strength: float = 1.0, max_layer_ratio: float = 0.9) -> list[torch.Tensor]:
    """Prune masks, one per layer: in each layer its budget (``layer_budgets``) of lowest-scoring,
    unpreserved neurons."""
    ratio = check_ratio(ratio)
    widths = [len(s) for s in scores]
    if preserved is not None and [len(p) for p in preserved] != widths:
        raise ValueError("preserved masks do not match the score shapes")
    pres_counts = [int(p.sum()) for p in preserved] if preserved is not None else None
    budgets = layer_budgets(widths, ratio, profile, strength, max_layer_ratio, pres_counts)
    masks = []
    for l, (s, k) in enumerate(zip(scores, budgets)):
        s = torch.as_tensor(s).detach().float().cpu().clone()
        if preserved is not None:
            s[preserved[l].cpu()] = float("inf")  # never among the lowest
            if k > widths[l] - pres_counts[l]:
                raise SparsityError(f"layer {l}: {k} neurons to remove but only {widths[l] - pres_counts[l]} "
                                    "not preserved")
        prune = torch.zeros(widths[l], dtype=torch.bool)
        if k:
            prune[torch.argsort(s, stable=True)[:k]] = True
        if bool(prune.all()):
            raise SparsityError(f"ratio {ratio} would leave layer {l} with no neurons")
        masks.append(prune)
    return masks


def mask_threshold(scores: list[torch.Tensor], eps: float, what: str = "FFN neuron") -> list[torch.Tensor]:
    """Prune masks, one per layer: every entry whose score is below ``eps``.  A threshold that would
    remove a whole layer raises ``SparsityError``."""
    eps = check_threshold(eps)
    masks = []
    for i, s in enumerate(scores):
        s = torch.as_tensor(s)
        m = s < eps
        if bool(m.all()):
            raise SparsityError(f"ε={eps:g} would remove every {what} of layer {i} (its largest score is "
                                f"{float(s.max()):.3g}); use a smaller ε")
        masks.append(m)
    return masks


def _layer_vectors(masks, scores, what: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(mask, scores)`` per layer as CPU bool / float vectors of one shape; errors name ``what``."""
    if len(scores) != len(masks):
        raise ValueError(f"{what}: {len(scores)} score vectors for {len(masks)} masks (one per layer)")
    out = []
    for l, (m, s) in enumerate(zip(masks, scores)):
        s, m = torch.as_tensor(s).float().cpu(), torch.as_tensor(m).bool().cpu()
        if tuple(s.shape) != tuple(m.shape) or m.dim() != 1:
            raise ValueError(f"{what}: layer {l}: scores of shape {tuple(s.shape)} for a mask of shape "
                             f"{tuple(m.shape)} (one vector per layer)")
        out.append((m, s))
    return out


def _keep_best(s: torch.Tensor, k: int) -> torch.Tensor:
    """The prune mask that keeps the ``k`` best-scoring neurons of one layer (ties: the lower index)."""
    m = torch.ones(len(s), dtype=torch.bool)
    m[torch.argsort(s, descending=True, stable=True)[:k]] = False
    return m


def _check_multiple(multiple) -> None:
    if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise SparsityError(f"multiple must be an integer >= 1 (1 = no rounding), got {multiple!r}")


def widths_multiple(masks: list[torch.Tensor], multiple: int, scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adjust prune masks so that every layer keeps a multiple of ``multiple`` neurons (GPU kernels
    are fastest on such widths): the kept count is rounded to the nearest multiple, adding back the
    best-scoring pruned neurons or pruning the worst-scoring kept ones (``scores``: one vector per
    layer, high = keep).  ``multiple`` = 1 returns ``masks`` unchanged."""
    _check_multiple(multiple)
    if multiple == 1:
        return masks
    out = []
    for m, s in _layer_vectors(masks, scores, "widths_multiple"):
        width, kept = len(m), int((~m).sum())
        target = min(width, max(multiple, int(round(kept / multiple)) * multiple))
        new = m.clone()
        if target > kept:  # un-prune the best pruned
            cand = torch.nonzero(m).flatten()
            back = cand[torch.argsort(s[cand], descending=True, stable=True)[:target - kept]]
            new[back] = False
        elif target < kept:  # prune the worst kept
            cand = torch.nonzero(~m).flatten()
            drop = cand[torch.argsort(s[cand], stable=True)[:kept - target]]
            new[drop] = True
        out.append(new)
    return out


def widths_equal(masks: list[torch.Tensor], scores: list[torch.Tensor], multiple: int = 1) -> list[torch.Tensor]:
    """Prune masks that remove as many neurons in total as ``masks`` but leave every layer the same
    kept width, so that the shrink survives an export to a config with one FFN width (stock Hugging
    Face configs; ``minilib.export`` pads unequal widths back to the widest).  Each layer keeps its
    ``k`` best-scoring neurons (``scores``: one vector per layer, high = keep; compared within a layer
    only), ``k`` = the mean kept width rounded to a multiple of ``multiple`` (at least ``multiple``).
    The layer budget of ``masks`` is replaced by a uniform one: their criterion chooses the neurons,
    not how many each layer loses.  ``SparsityError`` if a layer is narrower than ``k``."""
    _check_multiple(multiple)
    pairs = _layer_vectors(masks, scores, "widths_equal")
    if not pairs:
        return []
    kept = sum(int((~m).sum()) for m, _ in pairs)
    k = max(int(multiple), int(round(kept / len(pairs) / multiple)) * int(multiple))
    narrow = [(l, len(m)) for l, (m, _) in enumerate(pairs) if len(m) < k]
    if narrow:
        raise SparsityError(f"widths_equal: an equal kept width of {k} neurons exceeds layer {narrow[0][0]}'s width "
                            f"{narrow[0][1]}; these layers cannot share one width")
    return [_keep_best(s, k) for _, s in pairs]


# --- vocabulary -------------------------------------------------------------------------------

def mask_vocab(counts: torch.Tensor, tokenizer, min_count: int = 1, min_tokens: int = 1000) -> torch.Tensor:
    """Prune mask over the vocabulary: tokens seen fewer than ``min_count`` times in ``counts``.
    Special tokens and every single-byte token the tokenizer has (byte-level BPE symbols, or
    SentencePiece ``<0xXX>`` byte-fallback tokens: ``minilib.models.vocab.byte_alphabet``) are never
    pruned, so that pruned tokens can be spelt in bytes (the lossless fallback).

    Raises ``CorpusError`` when the counts cover fewer than ``min_tokens`` tokens."""
    from minilib.data.corpora import CorpusError
    from minilib.models.vocab import byte_alphabet, special_ids
    if isinstance(min_count, bool) or int(min_count) != min_count or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    if not isinstance(counts, torch.Tensor) or counts.dim() != 1:
        raise ValueError(f"counts must be a 1-D tensor (one count per token id), got {type(counts).__name__} "
                         f"{tuple(getattr(counts, 'shape', ()))}")
    if int(counts.sum()) < min_tokens:
        raise CorpusError(f"token counts cover {int(counts.sum())} tokens; need at least {min_tokens} "
                          f"to decide which tokens a domain uses")
    keep = counts >= min_count
    for i in special_ids(tokenizer):
        if i < len(keep):
            keep[i] = True
    alpha = byte_alphabet(tokenizer)
    if alpha is not None:
        keep[[i for i in alpha[1].values() if i < len(keep)]] = True
    return ~keep


def mask_neuron_weights(model, neuron_masks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Structured neuron masks as weight masks ``{key: bool [out, in]}`` (keys of ``minilib.calib``):
    a pruned neuron prunes its row of ``up`` (and ``gate``) and its column of ``down``.  With
    ``prune_model(..., masks=...)`` this hands any neuron criterion to SparseGPT, which then
    reconstructs the rest of each layer around the removed neurons."""
    from minilib.calib.passes import ffn_keys
    from minilib.models.adapters import adapter_for
    from minilib.models.linear import weight_oi
    adapter = adapter_for(model)
    ffns = adapter.ffns(model)
    if len(neuron_masks) != len(ffns):
        raise ValueError(f"expected one neuron mask per block ({len(ffns)}), got {len(neuron_masks)}")
    out = {}
    for i, (ffn, m) in enumerate(zip(ffns, neuron_masks)):
        if m.dtype != torch.bool or m.shape != (ffn.width,):
            raise ValueError(f"block {i}: neuron mask must be bool of shape ({ffn.width},)")
        keys = ffn_keys(adapter, i)
        for part in ("up", "gate"):
            if part in keys:
                w = weight_oi(getattr(ffn, part))
                out[keys[part]] = m.to(w.device)[:, None].expand(w.shape).clone()
        w = weight_oi(ffn.down)
        out[keys["down"]] = m.to(w.device)[None, :].expand(w.shape).clone()
    return out
