"""Linear layers in one orientation.

Every linear map in the suite is seen as ``W: [out, in]`` with ``y = x @ W.T + b``.  GPT-2's
``Conv1D`` stores its weight as ``[in, out]``; this module is the *only* place that knows it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

LINEAR_TYPES = (nn.Linear, Conv1D)


def is_linear(m: nn.Module) -> bool:
    return isinstance(m, LINEAR_TYPES)


def _check(m: nn.Module) -> None:
    if not is_linear(m):
        raise TypeError(f"expected nn.Linear or Conv1D, got {type(m).__name__}")


def weight_oi(m: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]`` (a view of the parameter's data; writes go through)."""
    _check(m)
    return m.weight.data.t() if isinstance(m, Conv1D) else m.weight.data


def set_weight_oi(m: nn.Module, w: torch.Tensor) -> None:
    """Copy an ``[out, in]`` tensor into the layer's weight (same shape, in place)."""
    weight_oi(m).copy_(w.to(m.weight.dtype))


def out_features(m: nn.Module) -> int:
    return weight_oi(m).shape[0]


def in_features(m: nn.Module) -> int:
    return weight_oi(m).shape[1]


def _rebuild(m: nn.Module, w_oi: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    out_f, in_f = w_oi.shape
    dev, dt = m.weight.device, m.weight.dtype
    if isinstance(m, Conv1D):
        new = Conv1D(out_f, in_f)
        new.weight = nn.Parameter(w_oi.t().contiguous().to(dev, dt))
        new.bias = nn.Parameter(bias.contiguous().to(dev, dt) if bias is not None
                                else torch.zeros(out_f, device=dev, dtype=dt))
        return new
    new = nn.Linear(in_f, out_f, bias=bias is not None, device=dev, dtype=dt)
    new.weight = nn.Parameter(w_oi.contiguous().to(dev, dt))
    if bias is not None:
        new.bias = nn.Parameter(bias.contiguous().to(dev, dt))
    return new


def select_outputs(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A new layer that computes only the output units ``keep`` (rows of W, entries of b)."""
    _check(m)
    keep = torch.as_tensor(keep, dtype=torch.long, device=m.weight.device)
    bias = m.bias.data[keep] if m.bias is not None else None
    return _rebuild(m, weight_oi(m)[keep], bias)


def select_inputs(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A new layer that reads only the input features ``keep`` (columns of W; bias unchanged)."""
    _check(m)
    keep = torch.as_tensor(keep, dtype=torch.long, device=m.weight.device)
    bias = m.bias.data.clone() if m.bias is not None else None
    return _rebuild(m, weight_oi(m)[:, keep], bias)


def resized_like(m: nn.Module, out_f: int, in_f: int) -> nn.Module:
    """An uninitialised layer of the same kind as ``m`` with a new shape (for loading checkpoints)."""
    _check(m)
    has_bias = m.bias is not None
    return _rebuild(m, torch.empty(out_f, in_f), torch.empty(out_f) if has_bias else None)
