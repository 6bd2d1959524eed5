"""The ``SparseGPT_one_shot`` notebook's parameters and profiles (``minilib.params``); the experiment
is ``minilib.studies.sparsegpt``."""

from __future__ import annotations

from minilib.params import Float, Fraction, HubOr, Int, List, ParameterError, Spec, Str
from minilib.prune.masks import parse_nm
from minilib.prune.methods import METHODS, get_method
from minilib.studies.sparsegpt import NOTEBOOK


def _check_nm(v):
    try:
        parse_nm(v)
    except ValueError as e:
        raise ParameterError(f"parameter 'nm': {e}") from None


def _check_method(name):
    def check(v):
        try:
            get_method(v)  # the registry as it is when the notebook runs (a method registered since counts)
        except ValueError:
            raise ParameterError(f"parameter {name!r} = {v!r}: must be one of {list(METHODS)}") from None
    return check


def _check_positive_number(name):
    def check(v):
        if not v > 0:
            raise ParameterError(f"parameter {name!r} = {v!r}: must be > 0")
    return check


def _check_positive(name):
    def check(v):
        if not v > 0:
            raise ParameterError(f"parameter {name!r} = {v!r}: must lie in (0, 1]")
    return check


def _check_dtype(v):
    if v not in ("", "auto"):
        from minilib.calib.passes import check_dtype
        try:
            check_dtype(v)
        except ValueError as e:
            raise ParameterError(f"parameter 'forward_dtype': {e} ('' = the model's dtype, 'auto' = bfloat16 on "
                                 "CUDA, else the model's dtype)") from None


def _check_relations(P: dict) -> None:
    """The detailed runs reuse one of the compared draws and methods; OWL is compared with a uniform run
    at the same sparsity."""
    if P["seed"] not in P["calib_seeds"]:
        raise ParameterError(f"parameter 'seed' = {P['seed']} must be one of calib_seeds = {P['calib_seeds']} (the "
                             "detailed runs reuse that draw)", "seed")
    if P["method"] not in P["methods"]:
        raise ParameterError(f"parameter 'method' = {P['method']!r} must be one of methods = {P['methods']}", "method")
    compared = sorted(set(P["sweep_sparsities"]) | {P["sparsity"]})
    for s in P["owl_sparsities"]:
        if s not in compared:
            raise ParameterError(f"parameter 'owl_sparsities': {s} is not one of the unstructured sparsities "
                                 f"compared ({compared}: sweep_sparsities and sparsity): OWL is compared with the "
                                 "uniform run at the same sparsity", "owl_sparsities")
    missing = [m for m in P["owl_methods"] if m not in P["methods"]] if P["owl_sparsities"] else []
    if missing:
        raise ParameterError(f"parameter 'owl_methods': {missing} not in methods = {P['methods']}: each OWL run is "
                             "compared with the same method's uniform run", "owl_methods")


SPEC = Spec({
    "model": Str(),
    "calib_corpus": Str(),
    "eval_corpus": Str(),
    "nsamples": Int(1, help="calibration windows"),
    "seqlen": Int(2, help="tokens per calibration window"),
    "seed": Int(0, help="calibration seed of the detailed runs (MCQ, layer errors, composition); one of calib_seeds"),
    "calib_seeds": List(Int(0), min_len=1, help="calibration seeds over which SparseGPT and Wanda are compared "
                        "(>= 3 for a verdict)"),
    "methods": List(Str(check=_check_method("methods")), min_len=1, help="one-shot methods compared across sparsities "
                    "(names in minilib.prune.methods.METHODS)"),
    "method": Str(check=_check_method("method"), help="method of the detailed runs; one of methods"),
    "owl_sparsities": List(Fraction(), help="target sparsities pruned with OWL's per-block allocation; [] = none"),
    "owl_methods": List(Str(check=_check_method("owl_methods")), help="methods run at OWL's allocation (each against its uniform run)"),
    "owl_m": Float(0.0, check=_check_positive_number("owl_m"), help="OWL's outlier threshold M (x the mean score)"),
    "owl_lambda": Float(0.0, 1.0, help="OWL's lambda: the largest deviation of a block's sparsity from the target"),
    "sparsity": Fraction(),
    "nm": Str(check=_check_nm, help="N:M pattern such as '2:4', '' to skip"),
    "wbits": Int(2, 16),
    "sweep_sparsities": List(Fraction(), min_len=1),
    "ffn_keep": Float(0.0, 1.0, check=_check_positive("ffn_keep")),
    "eval_seqlen": Int(2),
    "eval_windows": Int(0, help="0 = every window of the test split"),
    "mcq_set": Str(help="MCQ set of the detailed runs (sciq, arc_easy, piqa, ...)"),
    "mcq_n": Int(0, help="0 = the whole set"),
    "heldout_windows": Int(0, help="held-out windows (dev split of calib_corpus) for the held-out error; 0 = none"),
    "budget_corpus": Str(help="calibration text of the budget sweep: a corpus or several joined by '+'"),
    "budget_seqlen": Int(2),
    "budget_nsamples": List(Int(1), help="calibration budgets in windows; [] = no budget sweep"),
    "budget_seeds": List(Int(0), help="calibration seeds of the budget sweep"),
    "recovery_steps": Int(0, help="recovery fine-tuning steps of the detailed method at `sparsity`; 0 = none"),
    "recovery_method": Str(("full", "lora"), help="recovery fine-tuning: 'full' or 'lora' (masks kept either way)"),
    "recovery_allocation": Str(("uniform", "owl"), help="sparsity of the recovered model: 'uniform' or 'owl' (OWL's "
                               "per-block sparsities for `sparsity`, owl_m and owl_lambda)"),
    "recovery_chunks": Int(1, help="held-out text chunks (1 kB of the eval corpus's test split) for bits per byte"),
    "forward_dtype": Str(check=_check_dtype, help="'' (model dtype), 'auto' (bf16 on CUDA), 'bfloat16', 'float16'"),
}, checks=[_check_relations])
PROFILES = {
    "test": dict(model="tiny-llama", nsamples=4, seqlen=64, calib_seeds=[0, 1], sweep_sparsities=[0.5], owl_sparsities=[0.5],
                 recovery_steps=4, recovery_chunks=8, recovery_allocation="owl", eval_seqlen=64, eval_windows=4,
                 mcq_set="sciq", mcq_n=4, heldout_windows=2, budget_corpus="c4", budget_seqlen=64, budget_nsamples=[4],
                 budget_seeds=[0, 1]),
    # default: sized so that the method comparisons can be resolved on 2 CPU cores.  Every SparseGPT /
    # Wanda comparison runs over 3 calibration seeds (the unit of replication of a calibration-based
    # method; thread order and the draw are inside that spread) and is scored on 32 evaluation windows
    # (the per-window test's unit; a t test over 4 windows resolved nothing at the floor of 10).
    # Calibration windows of 64 tokens (the paper: 2,048) keep the budget sweep up to the paper's 128
    # windows CPU-feasible: 24 / 32 / 128 windows = 1,536 / 2k / 8k tokens.  24 windows is the smallest
    # budget SparseGPT accepts here: its Hessian needs at least as many tokens as the widest layer input
    # (SmolLM2's down_proj, 1,536) to be full rank (the planner checks it); the comparison's own runs are
    # the budget-32 runs (reused, not recomputed).  Evaluation windows of 128 tokens (32 x 128 = 4k tokens
    # per evaluation) and calibration windows of 64 take about half the time of 256 / 128 (an evaluation
    # and a calibrated pruning cost about the same on one CPU thread, and there are dozens of each);
    # the notebook's measured wall time is its row of results/reproduce_runs.json.  ARC-Easy (60 items)
    # for the detailed runs.
    # Sparsities 50 / 60 / 70% (and 2:4, which every run prunes), each with OWL beside uniform: 70% is the
    # sparsity of OWL's headline claim (LLaMA-7B: Wanda 85.8 -> 24.6, SparseGPT 26.3 -> 19.5), 50 / 60% say
    # where its gain starts.  OWL allocates unstructured sparsity per block, so it does not apply to N:M.
    "default": dict(model="smollm2-135m", nsamples=32, seqlen=64, calib_seeds=[0, 1, 2],
                    sweep_sparsities=[0.5, 0.6, 0.7], owl_sparsities=[0.5, 0.6, 0.7], recovery_steps=0, recovery_chunks=64, eval_seqlen=128, eval_windows=32, mcq_set="arc_easy", mcq_n=60,
                    heldout_windows=8, budget_corpus="c4", budget_seqlen=64, budget_nsamples=[24, 32, 128],
                    budget_seeds=[0, 1, 2]),
    # paper: SparseGPT calibrates on 128 random 2,048-token windows of C4; the embedded C4's calib split
    # holds 146k tokens (GPT-2 BPE), 71 such windows, and 128 random ones repeat 54% of their tokens
    # (python -m minilib.profiles.plan).  32 windows (65k tokens) repeat 19% in expectation; the budget
    # sweep reaches the paper's 128 x 2,048 with distinct windows of c4+wiki (175 of them).
    "paper": dict(model=HubOr("facebook/opt-125m", "smollm2-135m"), nsamples=32, seqlen=2048, calib_seeds=[0, 1, 2],
                  sweep_sparsities=[0.5, 0.6, 0.7, 0.8], owl_sparsities=[0.6, 0.7], recovery_steps=200, recovery_chunks=256,
                  eval_seqlen=2048, eval_windows=0, mcq_set="sciq", mcq_n=0,
                  heldout_windows=8, budget_corpus="c4+wiki", budget_seqlen=2048,
                  budget_nsamples=[8, 16, 32, 64, 128], budget_seeds=[0, 1, 2, 3, 4]),
}
NOTEBOOKS = {NOTEBOOK: (SPEC, PROFILES)}
