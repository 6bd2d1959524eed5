"""The ``{BERT,GPT2}_pruning_{baseline,strategy}`` notebooks' parameters and profiles
(``minilib.params``), on the anatomy notebooks' task settings.  The experiment is
``minilib.studies.structured``."""

from __future__ import annotations

from minilib.params import Bool, Float, Fraction, Int, List, Str
from minilib.profiles.anatomy import TASK_PROFILES, TASK_SPEC
from minilib.prune.scores import ANATOMY_KINDS

# the baselines a notebook may add to ``random`` (always run, over ``random_seeds``); names of
# ``minilib.studies.structured.BASELINES`` (kept here as literals: the profiles import no torch code)
EXTRA_BASELINES = ("neuron-norm", "neuron-maxprod", "authors-random")

BASELINE_SPEC = {
    **TASK_SPEC,
    "ratios": List(Fraction(), min_len=1, help="fractions of FFN neurons removed"),
    "ppl_corpus": Str(),
    "ppl_windows": Int(1),
    "ppl_seqlen": Int(2),
    "save_ratio": Fraction(),
    "random_seeds": List(Int(0), min_len=1, help="seeds of the random baselines (>= 3 for their spread)"),
    "baselines": List(Str(EXTRA_BASELINES), help="baselines besides 'random': 'neuron-norm' (L2 norm of the "
                                                 "neuron's weights), 'neuron-maxprod' (max|up| * max|down|), "
                                                 "'authors-random' (the original study's: one random index set "
                                                 "in every layer, over random_seeds)"),
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
# How the defaults are sized, for the four pruning notebooks together at most ~20 min alone
# on 2 threads.  Pilot on SmolLM2-135M, 1 thread (CPU seconds, the 2 cores shared with other jobs, load
# 6-9; 2 threads could not be timed there, benchmarks/bench_eval.py gives 1.5x over 1 thread):
# decision_accuracy on 1,000 sarcasm headlines (20 tokens on average with the template) took 71-75 s
# at batch 16, 79-87 s at batch 32, 86-90 s at batch 64 (less padding and cache-resident activations
# favour small batches); per model, perplexity 1.0 s (1 x 256 tokens) / 2.0 s (2 x 256), latency
# (64 tokens, 3 repeats) 1.2 s, checkpoint bytes 0.7 s, copy + remove 30% of the neurons 0.8 s.  So the
# evaluation is ~95% of a model's cost: perplexity stays at 2 windows (it flags collapsed models),
# latency and checkpoint bytes are measured once per FFN shape (``ratio_sweep``'s shape cache), and
# the GPT2 default evaluates at batch 16.  GPT2 default: head-only only (the LoRA "finetuned"
# protocol of 300 examples x 1 epoch left the dense accuracy where it was, 0.745 vs 0.750 on 200
# items with 93.5% of the predictions unchanged, so it is not a fine-tuned protocol; a real one does
# not fit: every fine-tuned row doubles the sweep), 1,000 test items (TASK_PROFILES), ratios 10% and
# 30%, 3 random seeds, neuron-norm and neuron-maxprod, and the uniform-budget ablation.  Expected,
# alone on 2 threads (~47 s per 1,000 dense evaluations; 10% / 30% pruned models cost ~0.93 / 0.78 of
# it, the FFN being ~75% of SmolLM2's non-embedding compute): GPT2_pruning_baseline 1 dense + 2 x 5
# models ~ 8-9 min, GPT2_pruning_strategy 2 x 2 models + save ~ 3-4 min; BERT (MiniLM-L6, 1,000
# items, 4 ratios x 2 protocols): baseline 290 s at 1 thread shared before, + neuron-maxprod (42 of
# 34 models) ~ 4 min, strategy ~ 1.5-2 min.  Together ~17-20 min.
_SWEEP = {
    "BERT": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64, random_seeds=[0, 1, 2],
                          baselines=["neuron-norm", "neuron-maxprod"]),   # a real model: the tiny GPT2 test covers the rest
             "default": dict(ratios=[0.0, 0.1, 0.3, 0.5, 0.7], ppl_windows=2, ppl_seqlen=256, random_seeds=[0, 1, 2],
                             baselines=["neuron-norm", "neuron-maxprod"]),
             "paper": dict(ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512,
                           random_seeds=[0, 1, 2, 3, 4], baselines=list(EXTRA_BASELINES))},
    "GPT2": {"test": dict(ratios=[0.0, 0.3, 0.6], ppl_windows=1, ppl_seqlen=64, random_seeds=[0, 1, 2],
                          baselines=list(EXTRA_BASELINES)),
             "default": dict(ratios=[0.0, 0.1, 0.3], ppl_windows=2, ppl_seqlen=256, random_seeds=[0, 1, 2],
                             baselines=["neuron-norm", "neuron-maxprod"], batch_size=16),
             "paper": dict(ratios=[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], ppl_windows=16, ppl_seqlen=512,
                           random_seeds=[0, 1, 2, 3, 4], baselines=list(EXTRA_BASELINES))},
}
_STRATEGY = {"test": dict(preserve_fraction=0.05, decision_state="head"),
             "default": dict(preserve_fraction=0.01, decision_state="head"),
             "paper": dict(preserve_fraction=0.01, decision_state="head")}
_UNIFORM = {"BERT": {"test": False, "default": True, "paper": True},
            "GPT2": {"test": True, "default": True, "paper": True}}


def _profiles(fam: str, strategy: bool) -> dict:
    extra = (lambda p: {**_STRATEGY[p], "uniform_ablation": _UNIFORM[fam][p]}) if strategy else (lambda p: {})
    return {p: {**TASK_PROFILES[fam][p], **_SWEEP[fam][p], **extra(p)} for p in ("test", "default", "paper")}


NOTEBOOKS = {**{f"{fam}_pruning_baseline": (BASELINE_SPEC, _profiles(fam, False)) for fam in ("BERT", "GPT2")},
             **{f"{fam}_pruning_strategy": (STRATEGY_SPEC, _profiles(fam, True)) for fam in ("BERT", "GPT2")}}
