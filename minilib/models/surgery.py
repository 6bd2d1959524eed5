"""Physical model surgery: remove FFN neurons and vocabulary rows for real (shapes shrink).

* ``remove_ffn_neurons`` keeps only some FFN neurons of one block: the rows of ``up`` (and ``gate``)
  with their biases, and the columns of ``down``.  The intermediate size of that block shrinks.
* ``keep_vocab_rows`` (in ``minilib.models.vocab``) keeps only some rows of the input embedding and
  the LM head.

Saving and loading reshaped models is ``minilib.models.saving``.
"""

from __future__ import annotations

import torch
from torch import nn

from minilib.models.adapters import Adapter, adapter_for
from minilib.models.linear import select_inputs, select_outputs


class PlanMismatchError(ValueError):
    """A saved plan or mapping does not fit the model or tokenizer it is used with."""


def ffn_widths(model: nn.Module, adapter: Adapter | None = None) -> list[int]:
    adapter = adapter or adapter_for(model)
    return [f.width for f in adapter.ffns(model)]


def check_neuron_indices(keep, width: int, where: str = "layer") -> torch.Tensor:
    """Validate ``keep`` as FFN neuron *indices* (not a mask, not fractions): integers in
    ``[0, width)``, no duplicates, not empty.  Returns them sorted as a LongTensor."""
    t = keep if isinstance(keep, torch.Tensor) else torch.as_tensor(keep)
    if t.dtype == torch.bool:
        raise TypeError(f"{where}: keep must hold neuron indices, got a boolean mask of {t.numel()} entries; "
                        "pass torch.nonzero(mask).flatten(), or use minilib.prune.remove_neurons with masks")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{where}: keep must hold integer neuron indices, got dtype {t.dtype} "
                        f"(a fraction or ratio is not an index list)")
    t = t.flatten().long().cpu()
    if t.numel() == 0:
        raise ValueError(f"{where}: keep is empty; removing every FFN neuron would leave the layer with none")
    if int(t.min()) < 0 or int(t.max()) >= width:
        raise IndexError(f"{where}: neuron indices must lie in [0, {width}), got [{int(t.min())}, {int(t.max())}]")
    u = torch.unique(t)
    if u.numel() != t.numel():
        raise ValueError(f"{where}: keep holds {t.numel() - u.numel()} duplicate neuron indices")
    return u


def remove_ffn_neurons(model: nn.Module, layer: int, keep, adapter: Adapter | None = None) -> int:
    """Keep only FFN neurons ``keep`` (indices) of block ``layer``; returns how many were removed."""
    adapter = adapter or adapter_for(model)
    blocks = adapter.blocks(model)
    if not 0 <= int(layer) < len(blocks):
        raise IndexError(f"block {layer} does not exist; the model has {len(blocks)} blocks")
    ffn = adapter.ffn(blocks[layer])
    width = ffn.width
    keep = check_neuron_indices(keep, width, f"block {layer}")
    if keep.numel() == width:
        return 0
    ffn.replace("up", select_outputs(ffn.up, keep))
    if ffn.gate is not None:
        ffn.replace("gate", select_outputs(ffn.gate, keep))
    ffn.replace("down", select_inputs(ffn.down, keep))
    return width - keep.numel()
