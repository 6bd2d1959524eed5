"""Structured FFN-neuron pruning without retraining: baselines and the anatomy-guided strategy.

A *method* maps ``(model, ratio)`` to prune masks (one per block, True = prune); ``method_masks``
builds one from a neuron score and the mask options.  ``ratio_sweep`` prunes a copy of the model per
method and ratio (physically, ``minilib.prune.remove_neurons``) and measures task accuracy (Wilson
95% interval), perplexity (decoders), parameters, checkpoint bytes and forward latency: one tidy row
each.

    methods = {"random": method_masks(lambda m: score_neurons_random(m, seed)),
               "magnitude": method_masks(score_neurons_norm),
               "anatomy": anatomy_strategy(anatomy, preserve_fraction=0.01, strength=0.5)}
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import pandas as pd

from minilib.eval.decision import decision_accuracy
from minilib.eval.perplexity import perplexity
from minilib.eval.report import checkpoint_bytes, count_parameters, forward_throughput
from minilib.prune.apply import remove_neurons
from minilib.prune.masks import check_ratio, mask_neurons
from minilib.prune.scores import score_neurons_anatomy, score_neurons_norm, score_neurons_random
from minilib.studies.anatomy import layer_profile, preserved_neurons

# a method: (model, ratio) -> prune masks
MaskFn = Callable[[object, float], list]


def method_masks(scores: Callable, profile=None, preserved=None, strength: float = 1.0,
                 max_layer_ratio: float = 0.9) -> MaskFn:
    """A method from a score function ``scores(model) -> list[tensor]`` and the mask options."""
    def masks(model, ratio):
        return mask_neurons(scores(model), ratio, profile, preserved, strength, max_layer_ratio)
    return masks


def baseline_methods(seed: int = 0) -> dict[str, MaskFn]:
    """The two baselines: seeded random neurons, and neuron weight magnitude (L2 norm)."""
    return {"random": method_masks(lambda mod: score_neurons_random(mod, seed)),
            "magnitude": method_masks(score_neurons_norm)}


def anatomy_strategy(anatomy, preserve_fraction: float = 0.01, strength: float = 1.0, max_layer_ratio: float = 0.9,
                     score_kind: str = "abs_proj", uniform: bool = False) -> MaskFn:
    """The anatomy-guided strategy: lowest anatomy score first, a per-layer budget from the anatomy's
    layer profile (or uniform), and the most decision-aligned neurons never pruned."""
    if uniform:
        return method_masks(lambda mod: score_neurons_anatomy(mod, anatomy, score_kind))
    return method_masks(lambda mod: score_neurons_anatomy(mod, anatomy, score_kind), layer_profile(anatomy),
                        preserved_neurons(anatomy, preserve_fraction), strength, max_layer_ratio)


def measure(model, tokenizer, head, task, ppl_ids=None, ppl_seqlen: int = 256, ppl_windows: int = 4,
            batch_size: int = 32, max_length: int = 128, latency_seqlen: int = 64, latency_repeats: int = 3) -> dict:
    """Accuracy (Wilson CI), perplexity (if ``ppl_ids``), parameters, checkpoint bytes, latency."""
    row = {}
    acc = decision_accuracy(model, tokenizer, head, task, "test", batch_size, max_length)
    row.update({"acc": acc["acc"], "ci95_low": acc["ci95_low"], "ci95_high": acc["ci95_high"], "n_test": acc["n"]})
    if ppl_ids is not None:
        row["perplexity"] = perplexity(model, ppl_ids, ppl_seqlen, max_windows=ppl_windows)
    row["params"] = count_parameters(model)[0]
    row["checkpoint_bytes"] = checkpoint_bytes(model)
    row["latency_s"] = forward_throughput(model, latency_seqlen, 1, latency_repeats)["latency_s"]
    return row


def ratio_sweep(loaded, head, task, methods: dict[str, MaskFn], ratios: list[float], ppl_ids=None,
                verbose: bool = True, dense: dict | None = None, **measure_kw) -> pd.DataFrame:
    """Rows ``method, ratio, ffn_ratio (achieved), acc, ci95_*, perplexity, params, checkpoint_bytes,
    latency_s``.  Ratio 0 is the dense model, measured once and shared by every method (or taken
    from ``dense``, a row measured before on the same model and task)."""
    for r in ratios:
        check_ratio(r)
    rows = []
    if dense is not None:
        dense = {k: v for k, v in dense.items() if k not in ("method", "ratio", "ffn_ratio", "param_ratio")}
    for r in sorted(set(float(x) for x in ratios)):
        for name, masks_fn in methods.items():
            t = time.perf_counter()
            if r == 0:
                if dense is None:
                    dense = measure(loaded.model, loaded.tokenizer, head, task, ppl_ids, **measure_kw)
                rows.append({"method": name, "ratio": 0.0, "ffn_ratio": 0.0, "param_ratio": 0.0, **dense})
                continue
            model = copy.deepcopy(loaded.model)
            rep = remove_neurons(model, masks_fn(model, r), method=name, target={"ratio": r})
            row = measure(model, loaded.tokenizer, head, task, ppl_ids, **measure_kw)
            rows.append({"method": name, "ratio": r, "ffn_ratio": rep.ffn_ratio, "param_ratio": rep.param_ratio, **row})
            del model
            if verbose:
                print(f"[sweep] {name:>10s} ratio {r:.2f}: achieved FFN ratio {rep.ffn_ratio:.3f}, "
                      f"acc {row['acc']:.3f}" + (f", ppl {row['perplexity']:.2f}" if 'perplexity' in row else "")
                      + f" ({time.perf_counter() - t:.0f}s)", flush=True)
    return pd.DataFrame(rows)


# --- the notebooks' parameters and profiles (minilib.params) ----------------------------------

from minilib.params import Bool, Float, Fraction, Int, List, Str  # noqa: E402
from minilib.prune.scores import ANATOMY_KINDS  # noqa: E402
from minilib.studies.anatomy import TASK_PROFILES, TASK_SPEC  # noqa: E402

BASELINE_SPEC = {
    **TASK_SPEC,
    "ratios": List(Fraction(), min_len=1, help="fractions of FFN neurons removed"),
    "ppl_corpus": Str(),
    "ppl_windows": Int(1),
    "ppl_seqlen": Int(2),
    "save_ratio": Fraction(),
}
STRATEGY_SPEC = {
    **BASELINE_SPEC,
    "preserve_fraction": Fraction(),
    "profile_strength": Float(0.0),
    "max_layer_ratio": Float(0.0, 1.0, hi_open=True),
    "score_kind": Str(ANATOMY_KINDS),
    "uniform_ablation": Bool(),
    "anatomy_dir": Str(),
    "baseline_path": Str(help="'' = results/<family>_pruning_baseline.json of the repository"),
}
_SWEEP = {
    "BERT": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64),
             "default": dict(ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=2, ppl_seqlen=256),
             "paper": dict(ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512)},
    "GPT2": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64),
             "default": dict(ratios=[0.0, 0.1, 0.3, 0.5, 0.7], ppl_windows=2, ppl_seqlen=256),
             "paper": dict(ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512)},
}
_STRATEGY = {"test": dict(preserve_fraction=0.05), "default": dict(preserve_fraction=0.01),
             "paper": dict(preserve_fraction=0.01)}
_UNIFORM = {"BERT": {"test": False, "default": True, "paper": True},  # the ablation runs where it is cheap
            "GPT2": {"test": False, "default": False, "paper": True}}


def _profiles(fam: str, strategy: bool) -> dict:
    extra = (lambda p: {**_STRATEGY[p], "uniform_ablation": _UNIFORM[fam][p]}) if strategy else (lambda p: {})
    return {p: {**TASK_PROFILES[fam][p], **_SWEEP[fam][p], **extra(p)} for p in ("test", "default", "paper")}


NOTEBOOKS = {**{f"{fam}_pruning_baseline": (BASELINE_SPEC, _profiles(fam, False)) for fam in ("BERT", "GPT2")},
             **{f"{fam}_pruning_strategy": (STRATEGY_SPEC, _profiles(fam, True)) for fam in ("BERT", "GPT2")}}
