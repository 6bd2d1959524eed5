"""2:4 weights to PyTorch's semi-structured sparse format (CUDA sparse tensor cores).

Only ``nn.Linear`` layers whose weight holds at least 2 zeros in every 4 inputs and whose shape the
kernels accept are converted; the rest stay dense.
"""

from __future__ import annotations

import torch
from torch import nn

from minilib.models.adapters import Adapter, adapter_for
from minilib.prune.masks import is_nm


def to_semi_structured(model: nn.Module, adapter: Adapter | None = None) -> dict:
    """Convert the 2:4-sparse linear layers of every block in place (the model must be on CUDA in
    fp16 or bf16, e.g. ``model.half().cuda()``); returns ``{"converted": [...], "skipped": {name: reason}}``."""
    if not torch.cuda.is_available():
        raise RuntimeError("semi-structured sparsity needs a CUDA GPU (torch.cuda.is_available() is False)")
    from torch.sparse import to_sparse_semi_structured
    adapter = adapter or adapter_for(model)
    converted, skipped = [], {}
    for bi, block in enumerate(adapter.blocks(model)):
        for name, layer in adapter.linear_layers(block).items():
            full = f"{bi}.{name}"
            if type(layer) is not nn.Linear:
                skipped[full] = f"{type(layer).__name__} is not nn.Linear"
                continue
            w = layer.weight.data
            if w.device.type != "cuda":
                raise RuntimeError(f"{full}: move the model to CUDA before converting (weight is on {w.device})")
            if w.dtype not in (torch.float16, torch.bfloat16):
                raise RuntimeError(f"{full}: semi-structured kernels need fp16 or bf16 weights, got {w.dtype} "
                                   "(convert the model with .half() or .bfloat16() first)")
            if not is_nm(w, 2, 4):
                skipped[full] = "weight is not 2:4 sparse"
                continue
            try:
                sw = to_sparse_semi_structured(w)
            except (RuntimeError, ValueError) as e:  # shape the kernels do not support
                skipped[full] = str(e).splitlines()[0]
                continue
            layer.weight = nn.Parameter(sw, requires_grad=False)
            converted.append(full)
    return {"converted": converted, "skipped": skipped}
