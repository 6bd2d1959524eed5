"""One experiment of the SparseGPT study: load, (shrink FFNs), prune, evaluate -> one tidy row.

Used by ``notebooks/SparseGPT_one_shot.ipynb`` and ``benchmarks/bench_sparsegpt.py`` so that the
notebook only sets parameters, shows tables and plots.
"""

from __future__ import annotations

import time

import torch

from minilib.eval import count_parameters, mcq_accuracy, perplexity
from minilib.models import load
from minilib.sparse.composition import shrink_ffns
from minilib.sparse.sequential import PruneReport, prune_model


def parse_nm(nm: str | tuple | None) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)``; ``""``/``None`` -> ``None``."""
    if nm in (None, "", "none"):
        return None
    if isinstance(nm, str):
        try:
            n, m = (int(v) for v in nm.split(":"))
        except ValueError:
            raise ValueError(f"N:M pattern must look like '2:4', got {nm!r}") from None
        return n, m
    return tuple(nm)


def run_setting(model_name: str, method: str | None, test_ids: torch.Tensor, calib: torch.Tensor | None = None,
                sparsity: float = 0.5, nm: str | tuple | None = None, wbits: int = 16, ffn_keep: float | None = None,
                eval_seqlen: int = 512, eval_windows: int = 8, mcq_items=None, device: str = "cpu",
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
