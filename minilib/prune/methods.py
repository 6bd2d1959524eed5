"""The one-shot pruning methods, one entry each: what a method scores, which calibration statistic it
needs and which options it takes.  ``prune_model``, the SparseGPT study's analysis, the notebook's
parameter spec and the docs table (``python -m tools.tables``: ``prune_methods``) read this registry,
so a new criterion is one new ``Method`` here (and its tests), registered with ``register``.

    from minilib.prune.methods import METHODS, get_method
    get_method("wanda").statistic      # 'input_sq_norms'
    METHODS["ria"].options["a"].default  # 0.5

Statistics (what the block-by-block pass accumulates per distinct layer input):

* ``none``           -- nothing: the weights alone decide (no calibration windows needed);
* ``input_sq_norms`` -- ``sum over tokens of x_j**2`` per input column (``calib.InputSqNorms``);
* ``input_moments``  -- ``input_sq_norms`` plus each column's mean and variance (``calib.InputMoments``;
  DSnoT's expected reconstruction error);
* ``hessian``        -- the full ``X X^T`` (``calib.Hessian``); a method with no ``score`` is a
  *solver* that chooses its mask and reconstructs the weights from it (SparseGPT's OBS);
* ``hessian_moments`` -- ``X X^T`` plus each column's mean and variance (``calib.HessianMoments``;
  DSnoT started from SparseGPT's saliency).

A method whose statistic depends on its options says so with ``statistic_of(options)``
(``Method.statistic_for``; DSnoT's ``initial="sparsegpt"`` needs the Hessian).

A score method returns one score per weight (higher = kept longer) from ``score(w, stat, **options)``,
and the lowest are pruned either per layer (``compare="layer"``) or per output row (``"row"``; the
method's option ``compare`` overrides it where it declares one).  N:M patterns compare within each
group of ``m`` inputs whatever ``compare`` says.  A method with a ``refine`` step then changes that
mask (``refine(w, mask, scores, stat, **options)``; DSnoT's swaps); with ``refine_nm`` it refines N:M
masks too (called with ``nm=(n, m)``, keeping the pattern), else it refuses N:M.  Each option
says which step reads it (``stage``: ``score``, ``mask`` or ``refine``).

A mask option ``permute`` (RIA's; ``minilib.prune.permute``) makes the N:M groups run along a
permutation of the input columns chosen to keep more score; the pruned weight stays in memory order,
N:M only along that permutation, which ``prune_model`` records per layer (``PruneReport.permutations``).
It is an error without ``nm``: for unstructured sparsity it would do nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from minilib.data.corpora import check_count
from minilib.prune.dsnot import refine_dsnot, score_dsnot
from minilib.prune.permute import check_permute
from minilib.prune.scores import score_magnitude, score_ria, score_wanda
from minilib.prune.sparsegpt import check_percdamp

STATISTICS = ("none", "input_sq_norms", "input_moments", "hessian", "hessian_moments")
COMPARES = ("layer", "row")
STAGES = ("score", "mask", "refine")


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, a check that raises ``ValueError`` naming the option and
    what is allowed, and one line of help."""

    default: Any
    check: Callable[[str, Any], Any]  # (name, value) -> the value to use
    help: str
    stage: str = "score"              # which step reads it: the score, the mask (``compare``), the refinement


@dataclass(frozen=True)
class Method:
    name: str                     # what ``prune_model(model, name, ...)`` takes
    label: str                    # for tables and figures
    statistic: str                # one of STATISTICS
    reference: str                # the paper
    summary: str                  # one line: what it scores
    score: Callable[..., torch.Tensor] | None = None  # (w [out, in], stat | None, **options) -> scores; None: solver
    compare: str = "layer"        # where the lowest scores are pruned: per "layer" or per output "row"
    options: dict[str, Option] = field(default_factory=dict)
    refine: Callable[..., torch.Tensor] | None = None  # (w, mask, scores, stat, **options) -> mask
    refine_skip: Callable[[str, dict], bool] | None = None  # (part of the block, options) -> leave this layer alone
    refine_nm: bool = False       # the refine step also takes N:M masks (``nm=(n, m)``) and keeps the pattern
    statistic_of: Callable[[dict], str] | None = None  # (resolved options) -> the statistic, where options decide it

    def __post_init__(self):
        if self.statistic not in STATISTICS:
            raise ValueError(f"method {self.name!r}: statistic must be one of {STATISTICS}, got {self.statistic!r}")
        if self.compare not in COMPARES:
            raise ValueError(f"method {self.name!r}: compare must be one of {COMPARES}, got {self.compare!r}")
        if self.score is None and self.statistic != "hessian":
            raise ValueError(f"method {self.name!r} has no score: only a solver over the Hessian may go without one")
        for k, o in self.options.items():
            if o.stage not in STAGES:
                raise ValueError(f"method {self.name!r}, option {k!r}: stage must be one of {STAGES}, got {o.stage!r}")

    @property
    def calibrated(self) -> bool:
        """Whether the method needs calibration windows."""
        return self.statistic != "none"

    @property
    def supports_nm(self) -> bool:
        """Whether the method prunes N:M patterns (a refinement step only where it keeps the pattern)."""
        return self.refine is None or self.refine_nm

    def statistic_for(self, options: dict | None = None) -> str:
        """The statistic a run with these (resolved) options accumulates."""
        if self.statistic_of is None:
            return self.statistic
        stat = self.statistic_of(self.resolve_options(options) if options is None else options)
        if stat not in STATISTICS:
            raise ValueError(f"method {self.name!r}: statistic_of gave {stat!r}, not one of {STATISTICS}")
        return stat

    @property
    def solver(self) -> bool:
        """Whether the method reconstructs the weights (OBS) instead of masking by a score."""
        return self.score is None

    def resolve_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Every option of the method, ``given`` checked and the rest at their defaults; an option the
        method does not take is an error that names the ones it does."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(f"{k} (default {o.default!r})" for k, o in self.options.items()) or "no options"
            owners = sorted(m.name for m in METHODS.values() if set(unknown) & set(m.options))
            hint = f"; {', '.join(unknown)} belong(s) to {', '.join(owners)}" if owners else ""
            raise ValueError(f"method {self.name!r} does not take option(s) {', '.join(unknown)}; it takes {takes}{hint}")
        out = {}
        for k, o in self.options.items():
            try:
                out[k] = o.check(k, given[k]) if k in given else o.default
            except (TypeError, ValueError) as e:
                raise type(e)(f"method {self.name!r}: {e}") from None
        return out

    def stage_options(self, options: dict, stage: str) -> dict:
        """The resolved ``options`` that one step (``score``, ``mask``, ``refine``) reads."""
        return {k: v for k, v in options.items() if self.options[k].stage == stage}


# --- option checks ----------------------------------------------------------------------------------

def _choice(*allowed):
    def check(name, v):
        if v not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {v!r}")
        return v
    return check


def _nonneg(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def _compare(name, v):
    if v not in COMPARES:
        raise ValueError(f"{name} must be one of {COMPARES}, got {v!r}")
    return v


# --- the registry -----------------------------------------------------------------------------------

METHODS: dict[str, Method] = {}


def register(method: Method, replace: bool = False) -> Method:
    """Add a method to the registry (``replace=True`` to redefine one)."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a Method, got {type(method).__name__}")
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered (replace=True to redefine it)")
    METHODS[method.name] = method
    return method


def get_method(name) -> Method:
    """The registered method called ``name``; an unknown name is an error listing the known ones."""
    if isinstance(name, Method):
        return name
    m = METHODS.get(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}")
    return m


register(Method("magnitude", "magnitude", "none", "Han et al., 2015", "|W|, lowest per layer",
                score=lambda w, stat: score_magnitude(w), compare="layer"))
register(Method("wanda", "Wanda", "input_sq_norms", "Sun et al., 2023", "|W_ij| * ||X_j||, lowest per output row",
                score=score_wanda, compare="row"))
register(Method("ria", "RIA", "input_sq_norms", "Zhang et al., 2024",
                "(|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|) * ||X_j||^a, lowest per layer",
                score=score_ria, compare="layer",
                options={"a": Option(0.5, _nonneg, "exponent of the input norm"),
                         "compare": Option("layer", _compare, "prune the lowest per 'layer' or per output 'row'",
                                           stage="mask"),
                         "permute": Option("none", check_permute,
                                           "N:M only: permute the input channels so the pattern keeps more score: "
                                           "'none', 'heuristic' (channel reallocation) or 'lsa' (then linear sum "
                                           "assignment; True = 'lsa'); refused without nm", stage="mask")}))
register(Method("dsnot", "DSnoT", "input_moments", "Zhang et al., 2024",
                "Wanda's (or |W|'s, or SparseGPT's saliency's) per-row or N:M mask, then swaps that shrink each row's "
                "expected error",
                score=score_dsnot, compare="row",
                refine=refine_dsnot, refine_skip=lambda part, o: o["skip"] == part, refine_nm=True,
                statistic_of=lambda o: "hessian_moments" if o["initial"] == "sparsegpt" else "input_moments",
                options={"initial": Option("wanda", _choice("wanda", "magnitude", "sparsegpt"),
                                           "the mask refined (sparsegpt: its saliency, needs the Hessian)"),
                         "max_cycles": Option(50, lambda k, v: check_count(v, k, minimum=0), "swaps per row, at most",
                                              stage="refine"),
                         "threshold": Option(0.1, _nonneg, "a row stops once its |expected error| is below it",
                                             stage="refine"),
                         "var_power": Option(1.0, _nonneg, "regrow by contribution / variance ** var_power",
                                             stage="refine"),
                         "skip": Option("ffn", _choice("ffn", "attention", "none"),
                                        "layers left at the initial mask (the authors skip the FFN)", stage="mask")}))
register(Method("sparsegpt", "SparseGPT", "hessian", "Frantar & Alistarh, 2023",
                "OBS: mask by w^2 / [H^-1]_jj^2 per lazy block, the rest reconstructed",
                options={"blocksize": Option(128, lambda k, v: check_count(v, k), "columns per lazy block"),
                         "percdamp": Option(0.01, lambda k, v: check_percdamp(v), "dampening, a fraction of the mean Hessian diagonal")}))
