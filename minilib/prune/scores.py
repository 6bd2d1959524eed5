"""Importance scores (higher = more important, pruned last).  A new one-shot criterion is one new
``score_*`` here and one entry in ``minilib.prune.methods``.

Weights ``[out, in]`` of one layer:

* ``score_magnitude`` -- ``|W|``;
* ``score_wanda``     -- ``|W_ij| * ||X_j||`` (Sun et al., 2023);
* ``score_ria``       -- relative importance and activations (Zhang et al., 2024):
  ``(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||**a``;
* ``score_obs``       -- the SparseGPT / OBS saliency ``w**2 / [H^-1]_jj**2``.

FFN neurons (one vector per block; the structured unit is the neuron's up/gate row and down column):

* ``score_neurons_random``    -- seeded random scores, independent per layer;
* ``score_neurons_shared_random`` -- one seeded random score vector shared by every layer (the same
  neurons in every layer: the original anatomy study's baseline);
* ``score_neurons_norm``      -- L2 norm of the weights the neuron owns;
* ``score_neurons_maxprod``   -- ``max|up_i| * max|down_:,i|`` (keeps "super weight" neurons);
* ``score_neurons_anatomy``   -- alignment of the neuron's contribution with the decision vector;
* ``score_neurons_l1``        -- mean |activation| on a domain (Mini-GPTs), from ``AbsMean`` statistics.

None of them changes the model.
"""

from __future__ import annotations

import torch

from minilib.models.adapters import FFN, adapter_for
from minilib.models.linear import weight_oi
from minilib.train.checks import check_seed


# --- weights ----------------------------------------------------------------------------------

def score_magnitude(weight: torch.Tensor) -> torch.Tensor:
    """``|W|``."""
    return weight.abs().float()


def _input_norms(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """``||X_j||`` per input column from ``sum over tokens of x_j**2``, shape-checked against ``weight``."""
    if input_sq_norms is None or input_sq_norms.shape != weight.shape[-1:]:
        got = None if input_sq_norms is None else tuple(input_sq_norms.shape)
        raise ValueError(f"input norms have shape {got}, expected ({weight.shape[-1]},): one per input column")
    return input_sq_norms.to(weight.device).float().clamp_min(0).sqrt()


def score_wanda(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda: ``|W_ij| * ||X_j||``, with ``input_sq_norms[j] = sum over tokens of x_j**2``."""
    return weight.abs().float() * _input_norms(weight, input_sq_norms)[None, :]


def score_ria(weight: torch.Tensor, input_sq_norms: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """RIA (Zhang et al., 2024, "Plug-and-Play"): a weight's share of its input column's and of its
    output row's total ``|W|``, times the input norm to the power ``a`` (0.5 in the paper):
    ``(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||**a``.  An all-zero row or column
    contributes 0 (not NaN)."""
    w = weight.abs().float()
    col = w.sum(0, keepdim=True)
    row = w.sum(1, keepdim=True)
    rel = torch.where(col > 0, w / col.clamp_min(torch.finfo(w.dtype).tiny), 0.0) + \
        torch.where(row > 0, w / row.clamp_min(torch.finfo(w.dtype).tiny), 0.0)
    return rel * _input_norms(weight, input_sq_norms)[None, :].pow(a)


def score_obs(weight: torch.Tensor, hinv_diag: torch.Tensor) -> torch.Tensor:
    """SparseGPT / OBS saliency ``w**2 / [H^-1]_jj**2`` (``hinv_diag``: the diagonal of the Cholesky
    factor of the inverse Hessian, as the solver uses it)."""
    if hinv_diag.shape != weight.shape[-1:]:
        raise ValueError(f"hinv_diag has shape {tuple(hinv_diag.shape)}, expected ({weight.shape[-1]},): one "
                         "entry per input column (the diagonal of the inverse Hessian's Cholesky factor)")
    return weight.float() ** 2 / hinv_diag.float()[None, :] ** 2


# --- FFN neurons ------------------------------------------------------------------------------

def score_neurons_random(model, seed: int = 0) -> list[torch.Tensor]:
    """Random scores drawn independently for every layer from one seeded generator (so each layer
    gets its own random indices; the original anatomy code reused one index set in every layer)."""
    g = torch.Generator().manual_seed(check_seed(seed))
    return [torch.rand(f.width, generator=g) for f in adapter_for(model).ffns(model)]


def score_neurons_shared_random(model, seed: int = 0) -> list[torch.Tensor]:
    """One seeded random score vector, the same in every layer: with a uniform budget the same neuron
    indices are removed from every block.  This is the baseline of the original anatomy study
    (``np.random.shuffle(range(3072))`` once, its first ``k`` indices masked in all 12 layers); it
    needs equal FFN widths."""
    ffns = adapter_for(model).ffns(model)
    widths = {f.width for f in ffns}
    if len(widths) != 1:
        raise ValueError(f"shared random scores need one FFN width in every block, got {sorted(widths)}")
    s = torch.rand(widths.pop(), generator=torch.Generator().manual_seed(check_seed(seed)))
    return [s.clone() for _ in ffns]


def score_neurons_norm(model) -> list[torch.Tensor]:
    """L2 norm of everything a neuron owns: its row of ``up`` (and ``gate``) and its column of ``down``."""
    out = []
    for f in adapter_for(model).ffns(model):
        s = weight_oi(f.up).float().pow(2).sum(1) + weight_oi(f.down).float().pow(2).sum(0)
        if f.gate is not None:
            s = s + weight_oi(f.gate).float().pow(2).sum(1)
        out.append(s.sqrt().cpu())
    return out


def _maxprod(ffn: FFN) -> torch.Tensor:
    s = weight_oi(ffn.up).float().abs().amax(dim=1) * weight_oi(ffn.down).float().abs().amax(dim=0)
    if ffn.gate is not None:
        s = s * weight_oi(ffn.gate).float().abs().amax(dim=1)
    return s.cpu()


def score_neurons_maxprod(model) -> list[torch.Tensor]:
    """``max|up_i| * max|down_:,i|`` (times ``max|gate_i|`` if gated) per neuron.

    The max (not the L2 norm) keeps the few neurons with one outsized weight (the "super weights" of
    small Llama-style models): on SmolLM2 removing 10% of every FFN by the L2-norm product gave a
    perplexity above 8,000, by this score about 20 (dense about 13)."""
    return [_maxprod(f) for f in adapter_for(model).ffns(model)]


ANATOMY_KINDS = ("abs_proj", "abs_cos", "proj", "cos")


def score_neurons_anatomy(model, anatomy, kind: str = "abs_proj") -> list[torch.Tensor]:
    """Anatomy score per neuron (the arrays are checked against ``model``): by default the mean
    |projection| of the neuron's contribution ``a_j W_down[:, j]`` on the decision vector
    (``neuron_abs_proj``); ``abs_cos``/``cos``/``proj`` use the other anatomy arrays."""
    if kind not in ANATOMY_KINDS:
        raise ValueError(f"unknown anatomy score {kind!r}; choose one of {ANATOMY_KINDS}")
    anatomy.check(model)
    arr = anatomy[f"neuron_{kind}"]
    widths = [f.width for f in adapter_for(model).ffns(model)]
    if arr.ndim != 2 or list(arr.shape[:1]) != [len(widths)] or any(arr.shape[1] != w for w in widths):
        raise ValueError(f"anatomy array neuron_{kind} has shape {tuple(arr.shape)}, but the model has "
                         f"{len(widths)} FFN layers of widths {sorted(set(widths))}: the anatomy was measured on "
                         "another (or differently pruned) model")
    return [torch.as_tensor(arr[l], dtype=torch.float32) for l in range(arr.shape[0])]


L1_CRITERIA = ("any", "post_act")


def score_neurons_l1(model, stats, criterion: str = "any") -> list[torch.Tensor]:
    """Per FFN neuron, its L1 statistic on a domain (``stats``: an ``L1Stats`` from
    ``minilib.studies.contextual.collect_l1_stats``): the post-activation value, or with
    ``criterion="any"`` the smallest of the post-activation value and the neuron's ``up``/``gate``
    output rows, so that a neuron under ε by any of them scores under ε."""
    if criterion not in L1_CRITERIA:
        raise ValueError(f"criterion must be one of {L1_CRITERIA}, got {criterion!r}")
    adapter = adapter_for(model)
    ffns = adapter.ffns(model)
    if len(stats.ffn) != len(ffns):
        raise ValueError(f"stats cover {len(stats.ffn)} blocks, the model has {len(ffns)} (stats from another model?)")
    out = []
    for i, (ffn, post) in enumerate(zip(ffns, stats.ffn)):
        if post.numel() != ffn.width:
            raise ValueError(f"block {i}: stats have {post.numel()} FFN neurons, the model {ffn.width} "
                             f"(stats from another model, or the model was already pruned)")
        s = post.clone()
        if criterion == "any":
            for part in ("up", "gate"):
                path = adapter.ffn_paths.get(part)
                if path is not None:
                    k = f"{i}.{path}"
                    if k not in stats.linear or stats.linear[k].numel() != ffn.width:
                        raise ValueError(f"stats have no {k!r} of width {ffn.width} (stats from another model or "
                                         f"family; they hold e.g. {sorted(stats.linear)[:2]})")
                    s = torch.minimum(s, stats.linear[k])
        out.append(s)
    return out
