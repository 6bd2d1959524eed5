"""Calibration statistics for the criteria that need less than a full Hessian."""

from __future__ import annotations

import torch


class InputNorms:
    """``sum over tokens of x_j**2`` per input column of a layer (Wanda's ``||X_j||**2``)."""

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.sq = torch.zeros(columns, dtype=torch.float32, device=device)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        x = inp.reshape(-1, inp.shape[-1]).to(self.sq.device, torch.float32)  # (tokens, in)
        self.sq += (x * x).sum(0)
        self.tokens += x.shape[0]

    def input_sq_norms(self) -> torch.Tensor:
        return self.sq

    def free(self) -> None:
        self.sq = None
