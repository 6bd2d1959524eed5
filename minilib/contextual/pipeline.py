"""The Mini-GPTs protocol for one domain: calibrate, prune (neurons, vocabulary), fine-tune, evaluate.

``run_domain`` measures domain perplexity (test split) and MCQ accuracy at three points: the dense
model, right after pruning, and after recovery fine-tuning, for every threshold ε.  The corpus is
cut once into disjoint calib/train/dev/test token ranges (``minilib.data.corpus_splits``):
neuron statistics come from *calib*, token counts for vocabulary pruning from *calib + train*,
fine-tuning from *train*, early stopping from *dev*, and every reported perplexity from *test*.
"""

from __future__ import annotations

import copy
import time

import torch

from minilib.contextual.finetune import finetune
from minilib.contextual.prune import check_eps, prune_neurons, size_by_type
from minilib.contextual.stats import domain_stats
from minilib.contextual.vocab import RemappedTokenizer, prune_vocabulary
from minilib.data import corpus_splits, load_mcq, validate_mcq
from minilib.eval import mcq_accuracy, perplexity


def evaluate(model, tokenizer, test_ids, items=None, seqlen: int = 256, max_windows: int = 8,
             dev_ids=None) -> dict:
    """Test perplexity (and dev perplexity, MCQ acc/acc_norm when given) of ``model``."""
    out = {"ppl": perplexity(model, test_ids, seqlen, max_windows=max_windows)}
    if dev_ids is not None:
        out["dev_ppl"] = perplexity(model, dev_ids, seqlen, max_windows=max_windows)
    if items:
        r = mcq_accuracy(model, tokenizer, items)
        out.update({"acc": r["acc"], "acc_norm": r["acc_norm"], "acc_stderr": r["acc_stderr"], "mcq_n": r["n"]})
    return out


def run_domain(model, tokenizer, domain: str, mcq: str | None = None, eps_grid=(1e-5, 1e-3, 1e-1),
               prune_embeddings: bool = True, min_count: int = 1, mcq_n: int = 50, calib_windows: int = 16,
               seqlen: int = 256, eval_windows: int = 8, ft_steps: int = 30, ft_epochs: int = 1,
               ft_seqlen: int = 128, ft_batch: int = 4, ft_lr: float = 5e-5, ft_eval_every: int = 10,
               attention: str = "skip", seed: int = 0, device=None, verbose: bool = True) -> dict:
    """Run the whole protocol on one domain; returns ``{"records": [...], "curves": [...], ...}``.

    ``model`` is left unchanged (every ε prunes a copy).  ``eps_grid`` may contain 0: with
    ``prune_embeddings`` that is vocabulary pruning alone.
    """
    eps_grid = [check_eps(e) for e in eps_grid]
    items = validate_mcq(load_mcq(mcq, n=mcq_n), mcq) if mcq else None
    device = device or next(model.parameters()).device
    t0 = time.time()
    sp = corpus_splits(tokenizer, domain)
    sp.assert_disjoint()
    tag = {"domain": domain, "mcq": mcq}
    dense = evaluate(model, tokenizer, sp["test"], items, seqlen, eval_windows, dev_ids=sp["dev"])
    size0 = size_by_type(model)
    records = [{**tag, "eps": None, "stage": "dense", "params": size0["total"], "size_pct": 100.0,
                **{f"{k}_params": v for k, v in size0.items() if k != "total"}, "fallback_rate": 0.0, **dense}]
    if verbose:
        print(f"[{domain}] dense: {dense}")
    stats = domain_stats(model, sp["calib"], calib_windows, seqlen, seed=seed, device=device)
    vocab_ids = torch.cat([sp["calib"], sp["train"]])
    curves = []
    for eps in eps_grid:
        m = copy.deepcopy(model)
        rep = prune_neurons(m, stats, eps, attention=attention, verbose=verbose) if eps > 0 else None
        tok, test, dev, train, vrep = tokenizer, sp["test"], sp["dev"], sp["train"], {}
        if prune_embeddings:
            tok, vrep = prune_vocabulary(m, tokenizer, vocab_ids, min_count, verbose=verbose)
            test, dev, train = tok.map_tensor(sp["test"]), tok.map_tensor(sp["dev"]), tok.map_tensor(sp["train"])
            tok.reset_counts()
            tok.map_ids(sp["test"].tolist())
        size = size_by_type(m)
        base = {**tag, "eps": eps, "params": size["total"], "size_pct": 100.0 * size["total"] / size0["total"],
                **{f"{k}_params": v for k, v in size.items() if k != "total"},
                "vocab": vrep.get("vocab_after", size0["embedding"] and len(tokenizer)),
                "ffn_neurons_removed": rep.as_dict()["ffn_neurons_removed"] if rep else 0,
                "fallback_rate": tok.fallback_count / max(1, tok.token_count) if isinstance(tok, RemappedTokenizer) else 0.0}
        pruned = evaluate(m, tok, test, items, seqlen, eval_windows)
        records.append({**base, "stage": "pruned", **pruned})
        if verbose:
            print(f"[{domain}] ε={eps:g} pruned: size {base['size_pct']:.1f}%  {pruned}")
        ft = finetune(m, train, dev, target_ppl=dense["dev_ppl"], seqlen=ft_seqlen, batch_size=ft_batch, lr=ft_lr,
                      max_epochs=ft_epochs, max_steps=ft_steps, eval_every=ft_eval_every, dev_windows=eval_windows,
                      seed=seed, device=device, verbose=verbose)
        curves += [{**tag, "eps": eps, **h} for h in ft.history]
        after = evaluate(m, tok, test, items, seqlen, eval_windows) if ft.steps else pruned
        records.append({**base, "stage": "finetuned", "ft_steps": ft.steps, "best_step": ft.best_step,
                        "best_dev_ppl": ft.best_dev_ppl, "stopped": ft.stopped, **after})
        if verbose:
            print(f"[{domain}] ε={eps:g} fine-tuned ({ft.stopped}): {after}")
        del m
    return {"records": records, "curves": curves, "dense": dense, "stats_summary": stats.summary(eps_grid or (1e-3,)),
            "splits": {k: list(v) for k, v in sp.ranges.items()}, "seconds": time.time() - t0}


def best_reduction(records, domain: str) -> dict | None:
    """The smallest fine-tuned model of ``domain`` whose test perplexity is at or below the dense one."""
    dense = [r for r in records if r["domain"] == domain and r["stage"] == "dense"][0]
    ok = [r for r in records if r["domain"] == domain and r["stage"] == "finetuned" and r["ppl"] <= dense["ppl"]]
    return min(ok, key=lambda r: r["size_pct"]) if ok else None
