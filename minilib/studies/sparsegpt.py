"""The SparseGPT study: one-shot pruning (magnitude, Wanda, SparseGPT), N:M, joint quantization, and
composition with structured FFN-neuron removal.

``run_setting`` is one experiment -- load, (shrink FFNs), prune, evaluate -> one tidy row -- used by
``notebooks/SparseGPT_one_shot.ipynb`` and ``benchmarks/bench_sparsegpt.py``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from minilib.eval import count_parameters, mcq_accuracy, perplexity
from minilib.models import load
from minilib.models.adapters import Adapter, adapter_for
from minilib.prune.apply import remove_neurons
from minilib.prune.masks import parse_nm
from minilib.prune.oneshot import prune_model
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_maxprod


@torch.no_grad()
def shrink_ffns(model: nn.Module, keep_fraction: float, multiple_of: int = 8,
                adapter: Adapter | None = None) -> PruneReport:
    """Keep the top ``keep_fraction`` FFN neurons of every block (by ``score_neurons_maxprod``),
    rounded to a multiple of ``multiple_of`` so that N:M patterns still fit the down projection."""
    if isinstance(keep_fraction, bool) or not 0 < float(keep_fraction) <= 1:
        raise ValueError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    adapter = adapter or adapter_for(model)
    masks = []
    for s in score_neurons_maxprod(model):
        width = len(s)
        keep_n = min(width, max(multiple_of, int(round(width * keep_fraction / multiple_of)) * multiple_of))
        prune = torch.ones(width, dtype=torch.bool)
        prune[torch.topk(s, keep_n).indices] = False
        masks.append(prune)
    return remove_neurons(model, masks, method="ffn-maxprod", target={"keep_fraction": float(keep_fraction)})


def run_setting(model_name: str, method: str | None, test_ids: torch.Tensor, calib: torch.Tensor | None = None,
                sparsity: float = 0.5, nm: str | tuple | None = None, wbits: int = 16, ffn_keep: float | None = None,
                eval_seqlen: int = 512, eval_windows: int = 8, mcq_items=None, device: str = "auto",
                **prune_kwargs) -> tuple[dict, PruneReport | None]:
    """Prune a fresh copy of ``model_name`` with ``method`` (``None``: dense) and evaluate it.

    Returns a row ``{method, sparsity, nm, wbits, ffn_keep, perplexity, achieved_sparsity, params,
    nonzeros, prune_s, [acc, acc_norm]}`` and the ``PruneReport``."""
    model, tokenizer, _ = load(model_name, device=device)
    nm = parse_nm(nm)
    row = {"method": method or "dense", "sparsity": (nm[0] / nm[1] if nm else sparsity) if method else 0.0,
           "nm": f"{nm[0]}:{nm[1]}" if nm and method else "", "wbits": wbits if method else 16,
           "ffn_keep": ffn_keep or 1.0}
    if ffn_keep:
        shrink_ffns(model, ffn_keep)
    report = None
    t0 = time.perf_counter()
    if method:
        report = prune_model(model, method, sparsity, nm=nm, wbits=wbits, calib=calib, device=device, **prune_kwargs)
        row.update(achieved_sparsity=report.overall["sparsity"], mean_rel_error=report.overall["mean_rel_error"])
    row["prune_s"] = time.perf_counter() - t0
    params, nonzeros = count_parameters(model)
    row.update(params=params, nonzeros=nonzeros,
               perplexity=perplexity(model, test_ids, eval_seqlen, max_windows=eval_windows))
    if mcq_items:
        acc = mcq_accuracy(model, tokenizer, mcq_items)
        row.update(acc=acc["acc"], acc_norm=acc["acc_norm"], mcq_n=acc["n"])
    del model
    return row, report


# --- the notebook's parameters and profiles (minilib.params) -----------------------------------

from minilib.params import Float, Fraction, HubOr, Int, List, ParameterError, Str  # noqa: E402


def _check_nm(v):
    try:
        parse_nm(v)
    except ValueError as e:
        raise ParameterError(f"parameter 'nm': {e}") from None


def _check_positive(name):
    def check(v):
        if not v > 0:
            raise ParameterError(f"parameter {name!r} = {v!r}: must lie in (0, 1]")
    return check


SPEC = {
    "model": Str(),
    "calib_corpus": Str(),
    "eval_corpus": Str(),
    "nsamples": Int(1, help="calibration windows"),
    "seqlen": Int(2, help="tokens per calibration window"),
    "seed": Int(0),
    "method": Str(("magnitude", "wanda", "sparsegpt")),
    "sparsity": Fraction(),
    "nm": Str(check=_check_nm, help="N:M pattern such as '2:4', '' to skip"),
    "wbits": Int(2, 16),
    "sweep_sparsities": List(Fraction(), min_len=1),
    "ffn_keep": Float(0.0, 1.0, check=_check_positive("ffn_keep")),
    "eval_seqlen": Int(2),
    "eval_windows": Int(0, help="0 = every window of the test split"),
    "mcq_set": Str(),
    "mcq_n": Int(0, help="0 = the whole set"),
}
PROFILES = {
    "test": dict(model="tiny-llama", nsamples=4, seqlen=64, sweep_sparsities=[0.5], eval_seqlen=64, eval_windows=2,
                 mcq_n=4),
    "default": dict(model="smollm2-135m", nsamples=8, seqlen=256, sweep_sparsities=[0.5, 0.7], eval_seqlen=512,
                    eval_windows=4, mcq_n=40),
    "paper": dict(model=HubOr("facebook/opt-125m", "smollm2-135m"), nsamples=128, seqlen=2048,
                  sweep_sparsities=[0.5, 0.6, 0.7, 0.8], eval_seqlen=2048, eval_windows=0, mcq_n=0),
}
NOTEBOOKS = {"SparseGPT_one_shot": (SPEC, PROFILES)}
