"""The ``{BERT,GPT2}_pruning_{baseline,strategy}`` notebooks' parameters and profiles
(``minilib.params``), on the anatomy notebooks' task settings.  The experiment is
``minilib.studies.structured``."""

from __future__ import annotations

from minilib.params import Bool, Float, Fraction, Int, List, Str
from minilib.profiles.anatomy import TASK_PROFILES, TASK_SPEC
from minilib.prune.scores import ANATOMY_KINDS

BASELINE_SPEC = {
    **TASK_SPEC,
    "ratios": List(Fraction(), min_len=1, help="fractions of FFN neurons removed"),
    "ppl_corpus": Str(),
    "ppl_windows": Int(1),
    "ppl_seqlen": Int(2),
    "save_ratio": Fraction(),
    "random_seeds": List(Int(0), min_len=1, help="seeds of the random baseline (>= 3 for its spread)"),
}
STRATEGY_SPEC = {
    **BASELINE_SPEC,
    "preserve_fraction": Fraction(),
    "profile_strength": Float(0.0),
    "max_layer_ratio": Float(0.0, 1.0, hi_open=True),
    "score_kind": Str(ANATOMY_KINDS),
    "uniform_ablation": Bool(),
    "anatomy_dir": Str(),
    "decision_state": Str(("head", "residual"), help="the anatomy's decision vector: 'head' (what the head reads) "
                                                    "or 'residual' (before the final norm)"),
    "baseline_path": Str(help="'' = results/<family>_pruning_baseline.json of the repository"),
}
_SWEEP = {
    "BERT": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64, random_seeds=[0, 1, 2]),
             "default": dict(ratios=[0.0, 0.1, 0.3, 0.5, 0.7], ppl_windows=2, ppl_seqlen=256, random_seeds=[0, 1, 2]),
             "paper": dict(ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512,
                           random_seeds=[0, 1, 2, 3, 4])},
    "GPT2": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64, random_seeds=[0, 1, 2]),
             "default": dict(ratios=[0.0, 0.05, 0.1], ppl_windows=2, ppl_seqlen=256, random_seeds=[0, 1, 2]),
             "paper": dict(ratios=[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512,
                           random_seeds=[0, 1, 2, 3, 4])},
}
_STRATEGY = {"test": dict(preserve_fraction=0.05, decision_state="head"),
             "default": dict(preserve_fraction=0.01, decision_state="head"),
             "paper": dict(preserve_fraction=0.01, decision_state="head")}
_UNIFORM = {"BERT": {"test": False, "default": True, "paper": True},  # the ablation runs where it is cheap
            "GPT2": {"test": False, "default": False, "paper": True}}


def _profiles(fam: str, strategy: bool) -> dict:
    extra = (lambda p: {**_STRATEGY[p], "uniform_ablation": _UNIFORM[fam][p]}) if strategy else (lambda p: {})
    return {p: {**TASK_PROFILES[fam][p], **_SWEEP[fam][p], **extra(p)} for p in ("test", "default", "paper")}


NOTEBOOKS = {**{f"{fam}_pruning_baseline": (BASELINE_SPEC, _profiles(fam, False)) for fam in ("BERT", "GPT2")},
             **{f"{fam}_pruning_strategy": (STRATEGY_SPEC, _profiles(fam, True)) for fam in ("BERT", "GPT2")}}
