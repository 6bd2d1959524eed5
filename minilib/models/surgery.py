"""Physical model surgery and saving of reshaped models.

* ``remove_ffn_neurons`` removes FFN neurons for real: the rows of ``up`` (and ``gate``) with their
  biases, and the columns of ``down``.  The intermediate size of that block shrinks.
* ``save_model`` / ``load_model`` store any reshaped model (pruned FFNs, shrunk vocabulary, ...) as
  ``model.safetensors`` plus ``minilib_plan.json``: the original config and the shape of every
  module that differs from it.  Loading rebuilds the architecture from the config, resizes those
  modules, then loads the tensors strictly.  No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from minilib.models.adapters import Adapter, adapter_for, get_path, set_path
from minilib.models.linear import in_features, is_linear, out_features, resized_like, select_inputs, select_outputs

PLAN_FILE = "minilib_plan.json"
PLAN_VERSION = 1


class PlanMismatchError(ValueError):
    """A saved plan or mapping does not fit the model or tokenizer it is used with."""


def ffn_widths(model: nn.Module, adapter: Adapter | None = None) -> list[int]:
    adapter = adapter or adapter_for(model)
    return [f.width for f in adapter.ffns(model)]


def remove_ffn_neurons(model: nn.Module, layer: int, keep: torch.Tensor, adapter: Adapter | None = None) -> int:
    """Keep only FFN neurons ``keep`` (indices) of block ``layer``; returns how many were removed."""
    adapter = adapter or adapter_for(model)
    ffn = adapter.ffn(adapter.blocks(model)[layer])
    width = ffn.width
    keep = torch.as_tensor(keep, dtype=torch.long).flatten()
    keep = torch.unique(keep)  # sorted, no duplicates
    if keep.numel() == 0:
        raise ValueError(f"block {layer}: removing every FFN neuron would leave the layer with none")
    if keep.min() < 0 or keep.max() >= width:
        raise IndexError(f"block {layer}: neuron indices must lie in [0, {width})")
    ffn.replace("up", select_outputs(ffn.up, keep))
    if ffn.gate is not None:
        ffn.replace("gate", select_outputs(ffn.gate, keep))
    ffn.replace("down", select_inputs(ffn.down, keep))
    return width - keep.numel()


# --- saving reshaped models ---------------------------------------------------------------------

def _shapes(model: nn.Module) -> dict[str, list[int]]:
    out = {}
    for name, m in model.named_modules():
        if is_linear(m):
            out[name] = ["linear", out_features(m), in_features(m)]
        elif isinstance(m, nn.Embedding):
            out[name] = ["embedding", m.num_embeddings, m.embedding_dim]
    return out


def save_model(model: nn.Module, tokenizer, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Save a (possibly reshaped) model as safetensors + JSON plan, atomically.

    ``extra`` is stored in the plan (e.g. how it was pruned).  The tokenizer is saved beside it.
    """
    from safetensors.torch import save_model as st_save

    path = Path(path)
    adapter = adapter_for(model)
    fresh = type(model)(model.config)
    ref, cur = _shapes(fresh), _shapes(model)
    if set(ref) != set(cur):
        raise PlanMismatchError(f"module names differ from the config-built {type(model).__name__}: "
                                f"{sorted(set(ref) ^ set(cur))[:5]}")
    plan = {
        "version": PLAN_VERSION,
        "family": adapter.family,
        "class": type(model).__name__,
        "config": json.loads(model.config.to_json_string()),
        "reshaped": {k: v for k, v in cur.items() if v != ref[k]},
        "extra": extra or {},
    }
    del fresh
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    try:
        st_save(model, str(stage / "model.safetensors"))
        model.config.save_pretrained(stage)
        if tokenizer is not None:
            tokenizer.save_pretrained(stage)
        (stage / PLAN_FILE).write_text(json.dumps(plan, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(stage, path)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return path


def read_plan(path: str | os.PathLike) -> dict:
    f = Path(path) / PLAN_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path} has no {PLAN_FILE}: not a model saved by minilib.save_model")
    plan = json.loads(f.read_text())
    if plan.get("version") != PLAN_VERSION:
        raise PlanMismatchError(f"{f}: plan version {plan.get('version')}, expected {PLAN_VERSION}")
    return plan


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu"):
    """Load a model saved by ``save_model``; returns a ``LoadedModel``."""
    import transformers
    from safetensors.torch import load_model as st_load
    from transformers import AutoConfig, AutoTokenizer

    from minilib.models.loading import _finish

    path = Path(path)
    plan = read_plan(path)
    config = AutoConfig.from_pretrained(path)
    cls = getattr(transformers, plan["class"])
    model = cls(config)
    for name, (kind, a, b) in plan["reshaped"].items():
        old = get_path(model, name)
        if kind == "linear":
            set_path(model, name, resized_like(old, a, b))
        else:
            new = nn.Embedding(a, b, padding_idx=None)
            if hasattr(old, "embed_scale"):  # e.g. Gemma's scaled embedding: keep the class
                old.weight = nn.Parameter(torch.empty(a, b))
                old.num_embeddings = a
                new = old
            set_path(model, name, new)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    st_load(model, str(path / "model.safetensors"), strict=True)
    tok = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    loaded = _finish(model, tok, adapter_for(model), str(path), dtype, device)
    loaded.plan = plan
    return loaded
