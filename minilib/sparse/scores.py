"""Importance scores ``[out, in]`` of a layer's weights (higher = more important).

A new criterion is one new ``score_*`` function; ``minilib.sparse.masks`` turns scores into masks.
"""

from __future__ import annotations

import torch


def score_magnitude(weight: torch.Tensor) -> torch.Tensor:
    """``|W|``."""
    return weight.abs().float()


def score_wanda(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda: ``|W_ij| * ||X_j||``, with ``input_sq_norms[j] = sum over tokens of x_j**2``."""
    if input_sq_norms.shape != weight.shape[-1:]:
        raise ValueError(f"input norms have shape {tuple(input_sq_norms.shape)}, expected ({weight.shape[-1]},)")
    return weight.abs().float() * input_sq_norms.float().clamp_min(0).sqrt()[None, :]


def score_obs(weight: torch.Tensor, hinv_diag: torch.Tensor) -> torch.Tensor:
    """SparseGPT / OBS saliency ``w**2 / [H^-1]_jj**2`` (``hinv_diag``: the diagonal of the Cholesky
    factor of the inverse Hessian, as the solver uses it)."""
    return weight.float() ** 2 / hinv_diag.float()[None, :] ** 2
