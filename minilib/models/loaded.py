"""What ``load`` returns (``LoadedModel``) and the last step every loader shares (``finish_loading``):
the adapter's ``prepare`` (fused FFN layers split), device and dtype, eval mode, the tokenizer's padding.  Its own module so that the hub/folder loader
(``loading``) and the saved-model reader (``saving``) both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minilib.device import resolve_device
from minilib.models.adapters import Adapter


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    adapter: Adapter
    name: str = ""
    plan: dict | None = None       # for a model saved by minilib.models.save_model: its saved plan
    head: nn.Module | None = None  # and its decision head, if one was saved with it

    def __iter__(self):  # allows ``model, tok, adapter = load(...)``
        return iter((self.model, self.tokenizer, self.adapter))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def finish_loading(model: nn.Module, tok, adapter: Adapter, name: str, dtype, device) -> LoadedModel:
    adapter.prepare(model)
    model.to(device=resolve_device(device), dtype=dtype)
    model.eval()
    if tok is not None and tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if tok is not None and adapter.is_decoder:
        tok.padding_side = "right"  # decision_positions handles either side; right is the default
    if getattr(model.config, "pad_token_id", None) is None and tok is not None:
        model.config.pad_token_id = tok.pad_token_id
    return LoadedModel(model, tok, adapter, name)
