"""A pruned model stays pruned: the sparsity masks of its block linears, kept through fine-tuning.

    masks = SparsityMasks.capture(model)        # before training ("auto": the layers that are pruned)
    ...; loss.backward(); masks.mask_grads(model); opt.step(); masks.apply(model)
    masks.check(model)                          # raises SparsityLostError if a pruned weight moved
    masks.report(model)                         # layers, params, pruned, kept, lost, sparsity

The prunable linears are the attention and FFN projections of every block (the family adapter's
paths, keys ``"<block>.<path>"`` as in ``minilib.calib``); masks are bool ``[out, in]`` with
``True`` = pruned, the suite's convention (GPT-2's ``Conv1D`` is handled by ``minilib.models.linear``).

What counts as pruned (``keep_sparsity``):

* ``"auto"`` (default): the exact zeros of every layer whose zero fraction is at least
  ``AUTO_MIN_SPARSITY`` (1%).  A dense model has next to no exact zeros (the embedded SmolLM2-135M:
  at most 0.07% in any block linear), so its few accidental zeros are not frozen; a pruned layer
  (unstructured, N:M, zeroed neurons or rows from 1% up) is.  Exact zeros of layers under the
  threshold are reported (``free_layers``, ``free_zeros``) and train like any other weight.
* ``True``: every exact zero of every prunable linear is kept, however few.
* ``False``: nothing is kept; the masks "auto" would choose are still captured, so the report shows
  how much sparsity the training lost (nothing is raised).

Both are needed during full fine-tuning: masked gradients (so AdamW's moments and the gradient
clipping see only the live weights) and the masks re-applied after every optimizer step (so weight
decay, momentum or any other optimizer cannot move a zero).  LoRA merges are masked
(``minilib.train.lora.merge_lora``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.calib.passes import key, resolve
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi

AUTO_MIN_SPARSITY = 0.01
KEEP_SPARSITY = ("auto", True, False)


class SparsityLostError(RuntimeError):
    """Pruned weights that should have stayed exactly zero did not."""


def check_keep_sparsity(keep_sparsity):
    if not any(keep_sparsity is v or (isinstance(v, str) and keep_sparsity == v) for v in KEEP_SPARSITY):
        raise ValueError(f"keep_sparsity must be one of {KEEP_SPARSITY} ('auto': layers with >= "
                         f"{AUTO_MIN_SPARSITY:.0%} exact zeros), got {keep_sparsity!r}")
    return keep_sparsity


def prunable_linears(model: nn.Module) -> dict[str, nn.Module]:
    """``{"<block>.<path>": layer}``: the attention and FFN projections of every block."""
    a = adapter_for(model)
    paths = [p for p in list(a.attn_paths.values()) + [a.ffn_paths.get(k) for k in ("up", "gate", "down")] if p]
    return {key(i, p): resolve(model, key(i, p), a) for i in range(a.n_blocks(model)) for p in paths}


def _param_layout(layer: nn.Module, oi: torch.Tensor) -> torch.Tensor:
    """An ``[out, in]`` tensor in the layout of ``layer.weight`` (and of its gradient): the same
    tensor, or its transpose where ``weight_oi`` is a transposed view of the parameter."""
    w, view = layer.weight, weight_oi(layer)
    if view.shape == w.shape and view.stride() == w.stride():
        return oi
    if view.t().shape == w.shape and view.t().stride() == w.stride():
        return oi.t()
    raise TypeError(f"cannot tell the orientation of {type(layer).__name__} weight {tuple(w.shape)}")


@dataclass
class SparsityMasks:
    """The pruned weights of a model's prunable linears; see the module docstring."""

    masks: dict[str, torch.Tensor]                 # key -> bool [out, in], True = pruned
    keep_sparsity: str | bool = "auto"
    min_sparsity: float = AUTO_MIN_SPARSITY        # the zero fraction from which a layer counts as pruned
    free: dict[str, int] = field(default_factory=dict)   # exact zeros of prunable layers left free

    @classmethod
    @torch.no_grad()
    def capture(cls, model: nn.Module, keep_sparsity="auto", min_sparsity: float = AUTO_MIN_SPARSITY
                ) -> "SparsityMasks":
        """The masks of ``model`` as it is now (``keep_sparsity``: see the module docstring;
        ``min_sparsity`` is the "auto" threshold)."""
        check_keep_sparsity(keep_sparsity)
        if not 0 <= min_sparsity <= 1:
            raise ValueError(f"min_sparsity must be in [0, 1], got {min_sparsity!r}")
        lo = 0.0 if keep_sparsity is True else float(min_sparsity)
        masks, free = {}, {}
        for k, layer in prunable_linears(model).items():
            z = weight_oi(layer) == 0
            n = int(z.sum())
            if n and n >= lo * z.numel():
                masks[k] = z.clone()
            elif n:
                free[k] = n
        return cls(masks, keep_sparsity, lo, free)

    @property
    def enforced(self) -> bool:
        """Whether training must keep these zeros (there are masks and ``keep_sparsity`` is not False)."""
        return self.keep_sparsity is not False and bool(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def _layers(self, model: nn.Module):
        a = adapter_for(model)
        for k, m in self.masks.items():
            layer = resolve(model, k, a)
            if tuple(weight_oi(layer).shape) != tuple(m.shape):
                raise ValueError(f"mask for {k} is {tuple(m.shape)} but the layer is {tuple(weight_oi(layer).shape)} "
                                 "(masks captured from another model?)")
            yield k, layer, m

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Set every pruned weight to exactly zero (in place)."""
        for _, layer, m in self._layers(model):
            w = layer.weight
            w.data.masked_fill_(_param_layout(layer, m.to(w.device)), 0)

    @torch.no_grad()
    def mask_grads(self, model: nn.Module) -> None:
        """Zero the gradients of the pruned weights (call after ``backward``, before clipping)."""
        for _, layer, m in self._layers(model):
            g = layer.weight.grad
            if g is not None:
                g.masked_fill_(_param_layout(layer, m.to(g.device)), 0)

    @torch.no_grad()
    def lost(self, model: nn.Module) -> dict[str, int]:
        """``{key: pruned weights that are no longer exactly zero}`` for every layer with any."""
        out = {}
        for k, layer, m in self._layers(model):
            n = int(((weight_oi(layer) != 0) & m.to(layer.weight.device)).sum())
            if n:
                out[k] = n
        return out

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict:
        """Where ``model`` stands against the masks: ``layers``, ``params`` (weights of the masked
        layers), ``pruned`` (masked weights), ``kept`` (masked weights exactly zero now), ``lost``,
        ``zeros`` (exact zeros now in the masked layers) and ``sparsity`` (``zeros / params``); and
        the rule: ``keep_sparsity``, ``min_sparsity``, ``enforced``, ``free_layers``/``free_zeros``
        (prunable layers under the threshold and their zeros at capture).  JSON-ready."""
        params = pruned = kept = zeros = 0
        for _, layer, m in self._layers(model):
            w = weight_oi(layer)
            z = w == 0
            params += w.numel()
            pruned += int(m.sum())
            kept += int((z & m.to(w.device)).sum())
            zeros += int(z.sum())
        return {"keep_sparsity": self.keep_sparsity, "min_sparsity": self.min_sparsity, "enforced": self.enforced,
                "layers": len(self.masks), "params": params, "pruned": pruned, "kept": kept, "lost": pruned - kept,
                "zeros": zeros, "sparsity": zeros / params if params else 0.0,
                "free_layers": len(self.free), "free_zeros": sum(self.free.values())}

    def check(self, model: nn.Module, when: str = "after fine-tuning") -> None:
        """Raise ``SparsityLostError`` if any pruned weight is not exactly zero (only when enforced)."""
        if not self.enforced:
            return
        lost = self.lost(model)
        if lost:
            worst = ", ".join(f"{k}: {n:,}" for k, n in sorted(lost.items(), key=lambda kv: -kv[1])[:5])
            raise SparsityLostError(f"{sum(lost.values()):,} pruned weights in {len(lost)} layers are no longer zero "
                                    f"{when} ({worst}{', ...' if len(lost) > 5 else ''})")

    @staticmethod
    def describe(before: dict, after: dict) -> str:
        """One line for the log: sparsity before and after, and what was kept."""
        if not before["layers"]:
            extra = f"; {before['free_zeros']:,} exact zeros in {before['free_layers']} layers under it left free" \
                if before["free_layers"] else ""
            rule = "every exact zero" if before["keep_sparsity"] is True else \
                f"a layer counts from {before['min_sparsity']:.0%} exact zeros"
            return f"sparsity: no pruned layers ({rule}{extra})"
        line = (f"sparsity {before['sparsity']:.3f} before, {after['sparsity']:.3f} after "
                f"({after['kept']:,} of {after['pruned']:,} pruned weights at zero in {after['layers']} layers")
        return line + (", keep_sparsity=False" if not before["enforced"] else "") + ")"
