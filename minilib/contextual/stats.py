"""Calibration statistics for contextual pruning: the normalized L1 norm of every neuron's outputs.

Two kinds of neuron are measured over token windows of a domain corpus:

* the **output rows of every linear layer** in every block (``q/k/v/o``, ``up/gate/down``; GPT-2's
  fused ``c_attn`` too): feature ``j`` of ``y = x @ W.T + b`` is the neuron of row ``j``;
* the **neurons after the activation** of each FFN, i.e. the input of ``down``: ``act(up(x))``
  (GELU/ReLU families) or ``act(gate(x)) * up(x)`` (SiLU-gated Llama/Gemma).  It is read with a
  forward *pre*-hook on ``down``, so no family needs its own code.

For neuron ``j`` of a layer the **normalized L1 norm** is its mean absolute output per token divided
by the largest such mean in that layer::

    norm_j = (sum_t |a_tj| / T) / max_k (sum_t |a_tk| / T)        in [0, 1]

so one threshold ε means the same thing in every layer and model ("below ε of the layer's most
active neuron"), and a neuron whose output is exactly zero on the domain has norm 0.  Hooks only
feed the accumulators (``L1Accumulator.add_batch``); they are added and removed with ``with``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.data.corpora import CorpusError, calibration_windows
from minilib.hooks import forward_hooks, forward_pre_hooks
from minilib.models.adapters import adapter_for
from minilib.models.linear import out_features


class L1Accumulator:
    """Running sum of ``|a|`` per feature (last dimension) and the number of tokens seen."""

    def __init__(self, width: int):
        self.total = torch.zeros(width, dtype=torch.float64)
        self.tokens = 0

    def add_batch(self, out: torch.Tensor) -> None:
        a = out.detach().reshape(-1, out.shape[-1])
        self.total += a.float().abs().sum(0).to("cpu", torch.float64)
        self.tokens += a.shape[0]

    def mean(self) -> torch.Tensor:
        if self.tokens == 0:
            raise RuntimeError("no tokens were added to the accumulator")
        return self.total / self.tokens


def normalize(mean_abs: torch.Tensor) -> torch.Tensor:
    """Per-layer normalization to [0, 1] by the largest mean absolute output (all-zero stays zero)."""
    top = mean_abs.max()
    return mean_abs / top if top > 0 else mean_abs.clone()


@dataclass
class NeuronStats:
    """Normalized L1 norms of one calibration pass.

    ``linear``: ``{"3.mlp.up_proj": norms[out_features]}`` (block index + the layer's path inside
    the block); ``ffn``: one tensor ``[ffn width]`` per block (post-activation neurons);
    ``mean_abs_*``: the raw means before normalization; ``tokens``: calibration tokens seen.
    """

    linear: dict[str, torch.Tensor]
    ffn: list[torch.Tensor]
    mean_abs_linear: dict[str, torch.Tensor] = field(repr=False)
    mean_abs_ffn: list[torch.Tensor] = field(repr=False)
    tokens: int = 0

    def summary(self, eps_grid=(1e-5, 1e-3, 1e-1)):
        """Fraction of neurons under each ε, per layer kind (a DataFrame)."""
        import pandas as pd
        rows = []
        kinds: dict[str, list[torch.Tensor]] = {"ffn.post_act": self.ffn}
        for name, v in self.linear.items():
            kinds.setdefault(name.split(".", 1)[1], []).append(v)
        for kind, vs in kinds.items():
            allv = torch.cat(vs)
            rows.append({"kind": kind, "neurons": allv.numel(),
                         **{f"under_{e:g}": float((allv < e).double().mean()) for e in eps_grid}})
        return pd.DataFrame(rows)


@torch.no_grad()
def collect_neuron_stats(model: nn.Module, windows: torch.Tensor, batch_size: int = 4,
                         min_tokens: int = 256, device=None) -> NeuronStats:
    """One calibration pass over ``windows`` ``[n, seqlen]``: normalized L1 norms of every linear
    layer's output rows and every FFN's post-activation neurons.

    Raises ``CorpusError`` if the windows hold fewer than ``min_tokens`` tokens (too few for the
    statistics to mean anything).
    """
    if windows.dim() != 2:
        raise ValueError(f"windows must be [n, seqlen], got shape {tuple(windows.shape)}")
    if windows.numel() < min_tokens:
        raise CorpusError(f"calibration has {windows.numel()} tokens; need at least {min_tokens} "
                          f"for neuron statistics (use a larger domain corpus or more windows)")
    adapter = adapter_for(model)
    device = device or next(model.parameters()).device
    lin_acc: dict[str, L1Accumulator] = {}
    ffn_acc: list[L1Accumulator] = []
    out_hooks, pre_hooks = {}, {}

    def feed_out(acc):
        return lambda mod, args, out: acc.add_batch(out[0] if isinstance(out, tuple) else out)

    def feed_in(acc):
        return lambda mod, args: acc.add_batch(args[0])

    for i, block in enumerate(adapter.blocks(model)):
        for name, lin in adapter.linear_layers(block).items():
            acc = lin_acc[f"{i}.{name}"] = L1Accumulator(out_features(lin))
            out_hooks[lin] = feed_out(acc)
        ffn = adapter.ffn(block)
        acc = L1Accumulator(ffn.width)
        ffn_acc.append(acc)
        pre_hooks[ffn.down] = feed_in(acc)
    was_training = model.training
    model.eval()
    try:
        with forward_hooks(out_hooks), forward_pre_hooks(pre_hooks):
            for s in range(0, len(windows), batch_size):
                model(input_ids=windows[s:s + batch_size].to(device))
    finally:
        model.train(was_training)
    mean_lin = {k: a.mean() for k, a in lin_acc.items()}
    mean_ffn = [a.mean() for a in ffn_acc]
    return NeuronStats(linear={k: normalize(v) for k, v in mean_lin.items()},
                       ffn=[normalize(v) for v in mean_ffn], mean_abs_linear=mean_lin, mean_abs_ffn=mean_ffn,
                       tokens=int(windows.numel()))


def domain_stats(model: nn.Module, calib_ids: torch.Tensor, n_windows: int = 16, seqlen: int = 256,
                 seed: int = 0, batch_size: int = 4, device=None) -> NeuronStats:
    """``collect_neuron_stats`` over ``n_windows`` seeded random windows of a calibration split."""
    if len(calib_ids) < seqlen:
        raise CorpusError(f"calibration split has {len(calib_ids)} tokens, fewer than one window of {seqlen}")
    return collect_neuron_stats(model, calibration_windows(calib_ids, n_windows, seqlen, seed),
                                batch_size=batch_size, device=device)
