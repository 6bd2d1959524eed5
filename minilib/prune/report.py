"""What a pruning call achieved, in one shape for every kind of pruning.

Every ``apply``/``remove``/``prune_model`` call returns a ``PruneReport``: what was asked
(``target``), the model's size by part before and after, the FFN widths and vocabulary before and
after, one row per touched layer (``layers``: out, in, params, zeros, sparsity, and the
reconstruction error where it was measured), and timings.  ``check()`` compares the achieved
sparsity or ratio with the one asked for, and for an N:M target that every layer holds the pattern;
reports of successive steps ``merge`` into one.

N:M along a permutation (RIA's ``permute`` option): the pruned weights stay in memory order, so
their pattern holds only along the column order ``permutations[layer key]`` (a LongTensor ``[in]``;
a kernel stores ``W[:, perm]`` and gathers ``x[:, perm]``).  Such a layer's row says
``nm_order="permuted"`` (``"memory"`` otherwise) and ``nm_ok`` whether the pattern holds in that
order; ``nm_memory_order`` is ``True`` only when every layer is N:M in memory order (what the 2:4
semi-structured kernels need).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from minilib.eval.report import count_parameters, parameters_by_type
from minilib.models.surgery import ffn_widths


def snapshot(model) -> dict:
    """Sizes a report compares: parameters by part, nonzeros, FFN widths, vocabulary."""
    from minilib.models.adapters import adapter_for
    sizes = parameters_by_type(model)
    sizes["nonzeros"] = count_parameters(model)[1]
    return {"sizes": sizes, "ffn_widths": ffn_widths(model),
            "vocab": adapter_for(model).input_embeddings(model).num_embeddings}


@dataclass
class PruneReport:
    method: str
    target: dict                                   # what was asked: sparsity / nm / ratio / eps / wbits ...
    before: dict                                   # snapshot() of the model before
    after: dict                                    # ... and after
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per touched layer
    timings: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)     # anything else (e.g. attention rows masked)
    permutations: dict = field(default_factory=dict)  # layer key -> column order its N:M pattern runs along

    # --- the numbers ---------------------------------------------------------------------------
    @property
    def params_before(self) -> int:
        return self.before["sizes"]["total"]

    @property
    def params_after(self) -> int:
        return self.after["sizes"]["total"]

    @property
    def param_ratio(self) -> float:
        """Fraction of all parameters removed (physically)."""
        return 1 - self.params_after / self.params_before

    @property
    def size_ratio(self) -> float:
        return self.params_after / self.params_before

    @property
    def ffn_neurons_removed(self) -> int:
        return sum(self.before["ffn_widths"]) - sum(self.after["ffn_widths"])

    @property
    def removed_per_layer(self) -> list[int]:
        return [b - a for b, a in zip(self.before["ffn_widths"], self.after["ffn_widths"])]

    @property
    def ffn_ratio(self) -> float:
        """Fraction of FFN neurons removed."""
        return self.ffn_neurons_removed / max(1, sum(self.before["ffn_widths"]))

    @property
    def overall(self) -> dict:
        """Params, zeros, nonzeros and sparsity of the weights of the touched layers, and the mean
        relative reconstruction error where it was measured."""
        if not len(self.layers) or "params" not in self.layers:
            return {"params": 0, "zeros": 0, "nonzeros": 0, "sparsity": 0.0, "mean_rel_error": float("nan")}
        p, z = int(self.layers["params"].sum()), int(self.layers["zeros"].sum())
        err = self.layers["rel_error"] if "rel_error" in self.layers else pd.Series(dtype=float)
        return {"params": p, "zeros": z, "nonzeros": p - z, "sparsity": z / p if p else 0.0,
                "mean_rel_error": float(err.mean()) if err.notna().any() else float("nan")}

    @property
    def nm_memory_order(self) -> bool | None:
        """For an N:M target: whether every layer holds the pattern in memory order (``False`` when
        some layer holds it only along its permutation); ``None`` without an N:M target."""
        if "nm" not in self.target:
            return None
        if "nm_order" not in self.layers:
            return not self.permutations
        ok = self.layers["nm_ok"].fillna(False).astype(bool) if "nm_ok" in self.layers else True
        return bool(((self.layers["nm_order"] == "memory") & ok).all())

    def table(self) -> pd.DataFrame:
        """Parameters by part of the model, before and after."""
        rows = [{"type": k, "before": b, "after": self.after["sizes"][k],
                 "removed_pct": 100.0 * (1 - self.after["sizes"][k] / b) if b else 0.0}
                for k, b in self.before["sizes"].items()]
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        """One flat dict for a results table."""
        o = self.overall
        return {"method": self.method, **{f"target_{k}": v for k, v in self.target.items()},
                "params_before": self.params_before, "params_after": self.params_after,
                "param_ratio": self.param_ratio, "ffn_neurons_removed": self.ffn_neurons_removed,
                "ffn_ratio": self.ffn_ratio, "vocab_before": self.before["vocab"], "vocab_after": self.after["vocab"],
                "nonzeros_after": self.after["sizes"]["nonzeros"], "achieved_sparsity": o["sparsity"],
                "mean_rel_error": o["mean_rel_error"], **{k: round(v, 3) for k, v in self.timings.items()},
                **self.notes}

    def as_dict(self) -> dict:
        """JSON-ready: the summary, sizes by part and widths."""
        return {**self.summary(), "sizes_before": self.before["sizes"], "sizes_after": self.after["sizes"],
                "ffn_widths_before": self.before["ffn_widths"], "ffn_widths_after": self.after["ffn_widths"]}

    def __str__(self) -> str:
        o = self.overall
        parts = [f"[prune] {self.method} {self.target}: params {self.params_before:,} -> {self.params_after:,} "
                 f"({self.param_ratio:.1%} removed)"]
        if self.ffn_neurons_removed:
            parts.append(f"FFN neurons -{self.ffn_neurons_removed} ({self.ffn_ratio:.1%})")
        if self.before["vocab"] != self.after["vocab"]:
            parts.append(f"vocabulary {self.before['vocab']} -> {self.after['vocab']}")
        if o["params"]:
            parts.append(f"weight sparsity {o['sparsity']:.2%} of {o['params']:,}")
        return "; ".join(parts)

    # --- sanity ---------------------------------------------------------------------------------
    def check(self, tol: float = 1e-3) -> "PruneReport":
        """Raise ``AssertionError`` if the achieved sparsity (``target["sparsity"]``) or FFN ratio
        (``target["ratio"]``) is off by more than ``tol`` plus one unit of rounding."""
        if "sparsity" in self.target and len(self.layers):
            want, got = float(self.target["sparsity"]), self.overall["sparsity"]
            slack = tol + len(self.layers) / max(1, self.overall["params"])
            if abs(got - want) > slack:
                raise AssertionError(f"{self.method}: asked for sparsity {want}, achieved {got:.6f}")
        if "nm" in self.target and "nm_ok" in self.layers:
            bad = self.layers[~self.layers["nm_ok"].fillna(False).astype(bool)]
            if len(bad):
                r = bad.iloc[0]
                order = r.get("nm_order", "memory")
                raise AssertionError(f"{self.method}: asked for N:M {self.target['nm']}, but {len(bad)} layer(s) do not "
                                     f"hold it, e.g. block {r['block']} {r['layer']} (in {order} order)")
        if "ratio" in self.target:
            want, got = float(self.target["ratio"]), self.ffn_ratio
            slack = tol + len(self.before["ffn_widths"]) / max(1, sum(self.before["ffn_widths"]))
            if abs(got - want) > slack:
                raise AssertionError(f"{self.method}: asked for FFN ratio {want}, achieved {got:.6f}")
        return self

    def merge(self, later: "PruneReport") -> "PruneReport":
        """This step followed by ``later``: before of this one, after of the later one."""
        layers = pd.concat([self.layers.assign(step=self.method), later.layers.assign(step=later.method)],
                           ignore_index=True) if len(self.layers) or len(later.layers) else pd.DataFrame()
        timings = dict(self.timings)
        for k, v in later.timings.items():
            timings[k] = timings.get(k, 0.0) + v
        redone = {f"{b}.{l}" for b, l in zip(later.layers.get("block", []), later.layers.get("layer", []))}
        perms = {k: v for k, v in self.permutations.items() if k not in redone}  # a later mask replaces it
        perms.update(later.permutations)
        return PruneReport(f"{self.method}+{later.method}", {**self.target, **later.target}, self.before,
                           later.after, layers, timings, {**self.notes, **later.notes}, permutations=perms)


@torch.no_grad()
def reconstruction_stats(name: str, w_old: torch.Tensor, w_new: torch.Tensor, xxt: torch.Tensor | None = None,
               tokens: int = 0) -> dict:
    """One ``layers`` row of a report: zeros and sparsity of ``w_new``; with ``xxt = sum x x^T`` also the
    reconstruction error on those inputs, ``error = sum ||(W_old - W_new) x||^2 / tokens``, and
    ``rel_error`` (over ``sum ||W_old x||^2``)."""
    rows, cols = w_new.shape
    zeros = int((w_new == 0).sum())
    out = {"layer": name, "out": rows, "in": cols, "params": rows * cols, "zeros": zeros,
           "sparsity": zeros / (rows * cols), "error": float("nan"), "rel_error": float("nan")}
    if xxt is not None and tokens:
        xxt = xxt.to(w_new.device, torch.float32)
        dw = (w_old.float().to(w_new.device) - w_new.float())
        err = float(((dw @ xxt) * dw).sum()) / tokens
        w0 = w_old.float().to(w_new.device)
        ref = float(((w0 @ xxt) * w0).sum()) / tokens
        out.update(error=err, rel_error=err / ref if ref > 0 else float("nan"))
    return out
