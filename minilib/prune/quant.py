"""k-bit weight quantization: per output channel, asymmetric min-max, round to nearest.

Zero is always on the grid, so pruned weights stay exactly zero after quantization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from minilib.prune.masks import SparsityError


def check_wbits(wbits: int) -> int:
    if isinstance(wbits, bool) or not isinstance(wbits, (int, float)) or not math.isfinite(wbits) \
            or int(wbits) != wbits or not 2 <= wbits <= 16:
        raise SparsityError(f"wbits must be an integer in [2, 16] (16 = no quantization), got {wbits}")
    return int(wbits)


@dataclass
class ChannelQuantizer:
    scale: torch.Tensor  # (rows, 1)
    zero: torch.Tensor   # (rows, 1)
    maxq: int

    def __call__(self, w: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Quantize-dequantize ``w`` ``(rows,)`` or ``(rows, k)`` (rows in the fitted order);
        ``rows`` selects the grids of a slice of the fitted rows, for a ``w`` of only those rows."""
        scale, zero = self.scale, self.zero
        if rows is not None:
            scale, zero = scale[rows], zero[rows]
        if w.shape[0] != scale.shape[0]:
            raise ValueError(f"w has {w.shape[0]} rows but the quantizer{' (rows ' + str(rows) + ')' if rows is not None else ''} "
                             f"has {scale.shape[0]} grids")
        if w.dim() == 1:
            scale, zero = scale[:, 0], zero[:, 0]
        q = torch.clamp(torch.round(w / scale) + zero, 0, self.maxq)
        return scale * (q - zero)


def fit_quantizer(weight: torch.Tensor, wbits: int) -> ChannelQuantizer:
    """Per-row asymmetric grid of ``2**wbits`` levels spanning [min(row, 0), max(row, 0)]."""
    wbits = check_wbits(wbits)
    w = weight.float()
    maxq = 2 ** wbits - 1
    lo = w.min(dim=1, keepdim=True).values.clamp_max(0)
    hi = w.max(dim=1, keepdim=True).values.clamp_min(0)
    empty = (hi - lo) == 0
    lo, hi = torch.where(empty, -torch.ones_like(lo), lo), torch.where(empty, torch.ones_like(hi), hi)
    scale = (hi - lo) / maxq
    zero = torch.round(-lo / scale)
    return ChannelQuantizer(scale, zero, maxq)


def quantize_rtn(weight: torch.Tensor, wbits: int) -> torch.Tensor:
    """Round-to-nearest quantization of a whole ``[out, in]`` weight (the baseline without OBS)."""
    return fit_quantizer(weight, wbits)(weight.float())
