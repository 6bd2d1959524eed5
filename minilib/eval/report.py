"""What a model costs: parameters, nonzeros, sparsity per layer, bytes on disk, throughput."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from minilib.device import model_device
from minilib.models.linear import is_linear, weight_oi


def layer_sparsity(model: nn.Module) -> pd.DataFrame:
    """One row per linear layer: name, out, in, params, nonzeros, sparsity (of the weight)."""
    rows = []
    for name, m in model.named_modules():
        if is_linear(m):
            w = weight_oi(m)
            nz = int(torch.count_nonzero(w))
            rows.append({"layer": name, "out": w.shape[0], "in": w.shape[1], "params": w.numel(),
                         "nonzeros": nz, "sparsity": 1 - nz / w.numel()})
    return pd.DataFrame(rows)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero parameters), counting tied tensors once."""
    seen, total, nz = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nz += int(torch.count_nonzero(p))
    return total, nz


def parameters_by_type(model: nn.Module) -> dict[str, int]:
    """Parameters by part of the model: ``embedding``, ``attention``, ``ffn``, ``norm``, ``head``
    (an untied LM or classifier head), ``other`` (e.g. position embeddings), and ``total``.  Tied
    tensors count once; where things are comes from the family adapter."""
    from minilib.models.adapters import adapter_for
    adapter = adapter_for(model)
    seen, out = set(), {"embedding": 0, "attention": 0, "ffn": 0, "norm": 0, "head": 0, "other": 0}

    def add(kind, params):
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out[kind] += p.numel()

    add("embedding", adapter.input_embeddings(model).parameters())
    head = adapter.head(model)
    if head is not None:
        add("head", head.parameters())
    for block in adapter.blocks(model):
        ffn = adapter.ffn(block)
        add("ffn", [p for part in ("up", "gate", "down") if getattr(ffn, part) is not None
                    for p in getattr(ffn, part).parameters()])
        add("attention", [p for m in adapter.attention(block).values() for p in m.parameters()])
        add("norm", [p for m in adapter.norms(block).values() for p in m.parameters()])
    fn = adapter.final_norm(model)
    if fn is not None:
        add("norm", fn.parameters())
    add("other", model.parameters())
    out["total"] = sum(out.values())
    return out


def checkpoint_bytes(model: nn.Module) -> int:
    """Size of the model's safetensors checkpoint (dense storage, tied tensors once)."""
    from safetensors.torch import save_model
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.safetensors"
        save_model(model, str(f))
        return f.stat().st_size


@torch.no_grad()
def forward_throughput(model: nn.Module, seqlen: int = 128, batch_size: int = 1, repeats: int = 5,
                       vocab_size: int | None = None) -> dict:
    """Median tokens/s and latency (s) of a plain forward pass on random tokens."""
    device = model_device(model)
    vocab_size = vocab_size or model.get_input_embeddings().num_embeddings
    x = torch.randint(0, vocab_size, (batch_size, seqlen), generator=torch.Generator().manual_seed(0)).to(device)
    model.eval()
    model(input_ids=x)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(input_ids=x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    lat = statistics.median(times)
    return {"latency_s": lat, "tokens_per_s": batch_size * seqlen / lat, "seqlen": seqlen, "batch_size": batch_size}


def model_report(model: nn.Module, seqlen: int = 128, batch_size: int = 1, repeats: int = 5,
                 throughput: bool = True) -> dict:
    """Parameters, nonzeros, overall linear sparsity, per-layer table, checkpoint bytes, throughput."""
    params, nonzeros = count_parameters(model)
    layers = layer_sparsity(model)
    lin_params = int(layers["params"].sum()) if len(layers) else 0
    lin_nz = int(layers["nonzeros"].sum()) if len(layers) else 0
    rep = {"params": params, "nonzeros": nonzeros, "sparsity": 1 - nonzeros / params,
           "linear_params": lin_params, "linear_sparsity": 1 - lin_nz / lin_params if lin_params else 0.0,
           "checkpoint_bytes": checkpoint_bytes(model), "layers": layers}
    if throughput:
        rep.update(forward_throughput(model, seqlen, batch_size, repeats))
    return rep
