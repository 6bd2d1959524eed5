"""Physical model surgery: remove FFN neurons and vocabulary rows for real (shapes shrink).

* ``remove_ffn_neurons`` keeps only some FFN neurons of one block: the rows of ``up`` (and ``gate``)
  with their biases, and the columns of ``down``.  The intermediate size of that block shrinks.
* ``keep_vocab_rows`` (in ``minilib.models.vocab``) keeps only some rows of the input embedding and
  the LM head.

Saving and loading reshaped models is ``minilib.models.saving``.
"""

from __future__ import annotations

import numbers

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
    if isinstance(keep, torch.Tensor):
        t = keep
    else:
        try:
            t = torch.as_tensor(keep)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{where}: keep must hold neuron indices (a LongTensor or a list of ints), got "
                            f"{type(keep).__name__}") from None
    if t.numel() == 0:  # before the dtype: an empty list is float to torch, not "a fraction"
        raise ValueError(f"{where}: keep is empty; removing every FFN neuron would leave the layer with none "
                         f"(keep must hold at least one neuron index in [0, {width}))")
    if t.dtype == torch.bool:
        raise TypeError(f"{where}: keep must hold neuron indices, got a boolean mask of {t.numel()} entries; "
                        "pass torch.nonzero(mask).flatten(), or use minilib.prune.remove_neurons with masks")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{where}: keep must hold integer neuron indices, got dtype {t.dtype} "
                        f"(a fraction or ratio is not an index list)")
    t = t.flatten().long().cpu()
    if int(t.min()) < 0 or int(t.max()) >= width:
        raise IndexError(f"{where}: neuron indices must lie in [0, {width}), got [{int(t.min())}, {int(t.max())}]")
    u = torch.unique(t)
    if u.numel() != t.numel():
        raise ValueError(f"{where}: keep holds {t.numel() - u.numel()} duplicate neuron indices")
    return u


def check_block_index(layer, n_blocks: int, name: str = "layer") -> int:
    """A block index: an integer in ``[0, n_blocks)``; booleans (``True`` is not block 1), floats and
    strings are refused (``TypeError``), as are negative or too large indices (``IndexError``)."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"{name} must be an integer block index in [0, {n_blocks}), got {layer!r} "
                        f"({type(layer).__name__})")
    if not 0 <= layer < n_blocks:
        raise IndexError(f"{name}: block {layer} does not exist; the model has {n_blocks} blocks "
                         f"(allowed: 0..{n_blocks - 1})")
    return int(layer)


def remove_ffn_neurons(model: nn.Module, layer: int, keep, adapter: Adapter | None = None) -> int:
    """Keep only FFN neurons ``keep`` (indices) of block ``layer``; returns how many were removed.
    ``layer`` is an integer in ``[0, number of blocks)``; everything is checked before the block changes."""
    adapter = adapter or adapter_for(model)
    blocks = adapter.blocks(model)
    layer = check_block_index(layer, len(blocks))
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
