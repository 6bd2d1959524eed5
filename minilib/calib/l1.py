"""L1 neuron statistics (Mini-GPTs): mean |output| of every linear row and every FFN neuron on a domain.

``collect_l1_stats`` runs one whole-model calibration pass (``minilib.calib.calibrate``) with
``AbsMean`` accumulators on the output of every linear layer and on the input of every FFN ``down``
(the post-activation neurons), over every position and over all but the first position of each
window.  ``L1Stats`` holds the raw means and the scores of one scale:

* ``"absolute"`` (the authors' rule, tval2/contextual-pruning ``get_calib_feat``): the mean |a| per
  token as it is; for a linear output with a bias ``min(mean|y|, mean|y - b|)``;
* ``"median"``: first positions left out (the attention-sink token), each layer divided by its
  median neuron.

``minilib.prune.score_neurons_l1`` reads ``L1Stats.ffn`` / ``L1Stats.linear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import nn

from minilib.calib.accumulators import AbsMean
from minilib.calib.passes import calibrate, check_windows, key, linear_keys
from minilib.data.corpora import CorpusError, check_count
from minilib.models.adapters import adapter_for
from minilib.models.linear import out_features

__all__ = ["SCALES", "L1Stats", "check_scale", "collect_l1_stats", "normalize"]

SCALES = ("absolute", "median")


def check_scale(scale) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def normalize(mean_abs: torch.Tensor, scale: str = "median") -> torch.Tensor:
    """Scores of one layer from its per-neuron mean |a|: ``"absolute"`` keeps them, ``"median"``
    divides by the layer's median (a layer whose median is 0 keeps its raw values)."""
    check_scale(scale)
    if scale == "absolute":
        return mean_abs.clone()
    med = mean_abs.median()
    return mean_abs / med if med > 0 else mean_abs.clone()


@dataclass
class L1Stats:
    """Neuron statistics of one calibration pass, and the scores of one scale.

    ``linear``: ``{"3.mlp.up_proj": scores[out_features]}`` (keys of ``minilib.calib``); ``ffn``: one
    tensor ``[ffn width]`` per block (post-activation neurons) -- what ``score_neurons_l1`` reads.
    ``mean_abs_*``: the raw means over every position (``min(mean|y|, mean|y - b|)`` for linear outputs);
    ``mean_abs_*_rest``: the same without the first position of each window.  ``rescaled(scale)``
    gives the scores of the other scale without another pass."""

    linear: dict[str, torch.Tensor]
    ffn: list[torch.Tensor]
    mean_abs_linear: dict[str, torch.Tensor] = field(repr=False)
    mean_abs_ffn: list[torch.Tensor] = field(repr=False)
    mean_abs_linear_rest: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    mean_abs_ffn_rest: list[torch.Tensor] = field(repr=False, default_factory=list)
    tokens: int = 0
    scale: str = "absolute"

    def rescaled(self, scale: str) -> "L1Stats":
        """The same statistics scored on ``scale`` (``"absolute"``: every position, raw; ``"median"``:
        first positions excluded, divided by the layer median)."""
        check_scale(scale)
        lin, ffn = ((self.mean_abs_linear, self.mean_abs_ffn) if scale == "absolute"
                    else (self.mean_abs_linear_rest, self.mean_abs_ffn_rest))
        if not ffn:
            raise ValueError("these statistics have no first-position-excluded means; collect them again")
        return replace(self, linear={k: normalize(v, scale) for k, v in lin.items()},
                       ffn=[normalize(v, scale) for v in ffn], scale=scale)

    def summary(self, eps_grid=(1e-3, 1e-2, 1e-1)):
        """Fraction of neurons whose score is under each ε, per layer kind (a DataFrame)."""
        rows = []
        kinds: dict[str, list[torch.Tensor]] = {"ffn.post_act": self.ffn}
        for name, v in self.linear.items():
            kinds.setdefault(name.split(".", 1)[1], []).append(v)
        for kind, vs in kinds.items():
            allv = torch.cat(vs)
            rows.append({"kind": kind, "scale": self.scale, "neurons": allv.numel(),
                         **{f"under_{e:g}": float((allv < e).double().mean()) for e in eps_grid}})
        return pd.DataFrame(rows)


@torch.no_grad()
def collect_l1_stats(model: nn.Module, windows: torch.Tensor, batch_size: int = 4, min_tokens: int = 256,
                     scale: str = "absolute") -> L1Stats:
    """One calibration pass over ``windows`` ``[n, seqlen]``: mean |output| of every linear layer's
    rows (``min`` with ``mean|y - b|`` where there is a bias) and of every FFN's post-activation
    neurons, over every position and over all but the first position of each window; scored on
    ``scale`` (see the module docstring).

    Raises ``CorpusError`` if the windows hold fewer than ``min_tokens`` tokens."""
    check_scale(scale)
    windows = check_windows(windows, model)
    check_count(batch_size, "batch_size")
    if windows.shape[1] < 2:
        raise ValueError(f"windows must hold at least 2 positions (the first is left out of the "
                         f"normalized statistics), got {windows.shape[1]}")
    if windows.numel() < min_tokens:
        raise CorpusError(f"calibration has {windows.numel()} tokens; need at least {min_tokens} "
                          f"for neuron statistics (use a larger domain corpus or more windows)")
    adapter = adapter_for(model)
    mods = linear_keys(model, adapter)
    lin = {k: AbsMean(out_features(m), "output", bias=getattr(m, "bias", None)) for k, m in mods.items()}
    t = windows.shape[1]
    lin_rest = {k: AbsMean(out_features(m), "output", bias=getattr(m, "bias", None), skip_first=1, seqlen=t)
                for k, m in mods.items()}
    down = adapter.ffn_paths["down"]
    post = [AbsMean(f.width, "input") for f in adapter.ffns(model)]
    post_rest = [AbsMean(f.width, "input", skip_first=1, seqlen=t) for f in adapter.ffns(model)]
    accs = {k: [lin[k], lin_rest[k]] for k in lin}
    for i, (a, b) in enumerate(zip(post, post_rest)):
        accs[key(i, down)] += [a, b]
    calibrate(model, windows, accs, batch_size)
    stats = L1Stats(linear={}, ffn=[], mean_abs_linear={k: a.mean_min() for k, a in lin.items()},
                    mean_abs_ffn=[a.mean() for a in post],
                    mean_abs_linear_rest={k: a.mean_min() for k, a in lin_rest.items()},
                    mean_abs_ffn_rest=[a.mean() for a in post_rest], tokens=int(windows.numel()))
    return stats.rescaled(scale)
