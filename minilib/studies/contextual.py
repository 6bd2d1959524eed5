"""Contextual pruning (Mini-GPTs): a general model made smaller for one domain.

1. **Calibrate** (``collect_l1_stats``): one whole-model pass (``minilib.calib.calibrate``) over
   windows of the domain's *calib* split with ``AbsMean`` accumulators on the output of every linear
   layer and on the input of every FFN ``down`` (the post-activation neurons).  For neuron ``j`` of a
   layer the **normalized L1 norm** is its mean absolute output per token divided by the largest such
   mean in that layer (``normalize``), in [0, 1].
2. **Prune neurons** (``prune_neurons``): ``score_neurons_l1`` -> ``mask_threshold`` (under ε) ->
   ``remove_neurons`` (physically).  ``down`` rows and attention ``o`` rows write the residual
   stream, whose width every block shares, and ``q/k/v`` rows belong to heads of fixed ``head_dim``:
   they cannot be removed one at a time, so attention rows are **skipped** by default;
   ``attention="mask"`` zeroes the rows under ε instead (``zero_rows``: fewer nonzeros, same shapes).
3. **Prune the vocabulary** (``prune_vocabulary``): ``token_counts`` -> ``mask_vocab`` ->
   ``remove_vocab``; a ``RemappedTokenizer`` reads and writes text as before.
4. **Recover** with ``minilib.train.finetune`` and **evaluate** before, after pruning and after
   fine-tuning (``run_domain``).

The corpus is cut once into disjoint calib/train/dev/test token ranges (``minilib.data.corpus_splits``):
neuron statistics come from *calib*, token counts for vocabulary pruning from *calib + train*,
fine-tuning from *train*, early stopping from *dev*, and every reported perplexity from *test*.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.calib import AbsMean, calibrate, key, linear_keys
from minilib.data import CorpusError, calibration_windows, corpus_splits, load_mcq, validate_mcq
from minilib.eval import mcq_accuracy, perplexity
from minilib.eval.report import parameters_by_type
from minilib.models.adapters import adapter_for
from minilib.models.linear import out_features
from minilib.models.vocab import RemappedTokenizer, token_counts
from minilib.prune.apply import remove_neurons, remove_vocab, zero_rows
from minilib.prune.masks import check_threshold, mask_threshold, mask_vocab
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_l1
from minilib.train.finetune import finetune

MASKABLE_ROWS = ("q", "k", "v", "qkv", "o")


# --- 1. statistics ---------------------------------------------------------------------------

def normalize(mean_abs: torch.Tensor) -> torch.Tensor:
    """Per-layer normalization to [0, 1] by the largest mean absolute output (all-zero stays zero)."""
    top = mean_abs.max()
    return mean_abs / top if top > 0 else mean_abs.clone()


@dataclass
class L1Stats:
    """Normalized L1 norms of one calibration pass.

    ``linear``: ``{"3.mlp.up_proj": norms[out_features]}`` (keys of ``minilib.calib``); ``ffn``: one
    tensor ``[ffn width]`` per block (post-activation neurons); ``mean_abs_*``: the raw means before
    normalization; ``tokens``: calibration tokens seen."""

    linear: dict[str, torch.Tensor]
    ffn: list[torch.Tensor]
    mean_abs_linear: dict[str, torch.Tensor] = field(repr=False)
    mean_abs_ffn: list[torch.Tensor] = field(repr=False)
    tokens: int = 0

    def summary(self, eps_grid=(1e-5, 1e-3, 1e-1)):
        """Fraction of neurons under each ε, per layer kind (a DataFrame)."""
        import pandas as pd
        rows = []
        kinds: dict[str, list[torch.Tensor]] = {"ffn.post_act": self.ffn}
        for name, v in self.linear.items():
            kinds.setdefault(name.split(".", 1)[1], []).append(v)
        for kind, vs in kinds.items():
            allv = torch.cat(vs)
            rows.append({"kind": kind, "neurons": allv.numel(),
                         **{f"under_{e:g}": float((allv < e).double().mean()) for e in eps_grid}})
        return pd.DataFrame(rows)


@torch.no_grad()
def collect_l1_stats(model: nn.Module, windows: torch.Tensor, batch_size: int = 4, min_tokens: int = 256) -> L1Stats:
    """One calibration pass over ``windows`` ``[n, seqlen]``: normalized L1 norms of every linear
    layer's output rows and every FFN's post-activation neurons.

    Raises ``CorpusError`` if the windows hold fewer than ``min_tokens`` tokens."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
        raise ValueError(f"windows must be [n, seqlen], got {getattr(windows, 'shape', type(windows).__name__)}")
    if windows.numel() < min_tokens:
        raise CorpusError(f"calibration has {windows.numel()} tokens; need at least {min_tokens} "
                          f"for neuron statistics (use a larger domain corpus or more windows)")
    adapter = adapter_for(model)
    lin = {k: AbsMean(out_features(m), "output") for k, m in linear_keys(model, adapter).items()}
    down = adapter.ffn_paths["down"]
    post = [AbsMean(f.width, "input") for f in adapter.ffns(model)]
    accs = {k: [a] for k, a in lin.items()}
    for i, a in enumerate(post):
        accs[key(i, down)].append(a)
    calibrate(model, windows, accs, batch_size)
    mean_lin = {k: a.mean() for k, a in lin.items()}
    mean_ffn = [a.mean() for a in post]
    return L1Stats(linear={k: normalize(v) for k, v in mean_lin.items()}, ffn=[normalize(v) for v in mean_ffn],
                   mean_abs_linear=mean_lin, mean_abs_ffn=mean_ffn, tokens=int(windows.numel()))


def domain_stats(model: nn.Module, calib_ids: torch.Tensor, n_windows: int = 16, seqlen: int = 256,
                 seed: int = 0, batch_size: int = 4) -> L1Stats:
    """``collect_l1_stats`` over ``n_windows`` seeded random windows of a calibration split."""
    if len(calib_ids) < seqlen:
        raise CorpusError(f"calibration split has {len(calib_ids)} tokens, fewer than one window of {seqlen}")
    return collect_l1_stats(model, calibration_windows(calib_ids, n_windows, seqlen, seed), batch_size=batch_size)


# --- 2. neurons -------------------------------------------------------------------------------

def mask_attention_rows(model: nn.Module, stats: L1Stats, eps: float,
                        kinds: tuple[str, ...] = MASKABLE_ROWS) -> dict[str, torch.Tensor]:
    """``{key: bool[out_features]}`` for the attention projections ``kinds``: rows under ε (True = prune)."""
    adapter = adapter_for(model)
    paths = {adapter.attn_paths[k] for k in kinds if k in adapter.attn_paths}
    keys = [k for k in stats.linear if k.split(".", 1)[1] in paths]
    return dict(zip(keys, mask_threshold([stats.linear[k] for k in keys], eps, "attention row")))


def prune_neurons(model: nn.Module, stats: L1Stats, eps: float, criterion: str = "any",
                  attention: str = "skip", verbose: bool = True) -> PruneReport:
    """Threshold pruning in place: remove FFN neurons under ε; attention rows ``"skip"`` or ``"mask"``."""
    if attention not in ("skip", "mask"):
        raise ValueError(f"attention must be 'skip' or 'mask', got {attention!r}")
    eps = check_threshold(eps)
    masks = mask_threshold(score_neurons_l1(model, stats, criterion), eps)
    rows = mask_attention_rows(model, stats, eps) if attention == "mask" else {}
    rep = remove_neurons(model, masks, method="contextual-l1", target={"eps": eps})
    if rows:
        rep = rep.merge(zero_rows(model, rows))
    rep.notes.setdefault("rows_masked", 0)
    if verbose:
        print(f"[contextual] ε={eps:g}: removed {rep.ffn_neurons_removed} FFN neurons ({100 * rep.ffn_ratio:.1f}%), "
              f"masked {rep.notes['rows_masked']} attention rows; size {rep.params_before / 1e6:.2f}M -> "
              f"{rep.params_after / 1e6:.2f}M ({100 * rep.size_ratio:.1f}%)")
    return rep


# --- 3. vocabulary ----------------------------------------------------------------------------

def prune_vocabulary(model: nn.Module, tokenizer, corpus_ids: torch.Tensor, min_count: int = 1,
                     fallback: str | None = None, verbose: bool = True) -> tuple[RemappedTokenizer, PruneReport]:
    """Count tokens in ``corpus_ids``, remove the embedding/head rows of the tokens a domain does not
    use, in place; returns the remapped tokenizer and the report."""
    emb = adapter_for(model).input_embeddings(model)
    mask = mask_vocab(token_counts(corpus_ids, emb.num_embeddings), tokenizer, min_count)
    tok, rep = remove_vocab(model, tokenizer, mask, fallback)
    if verbose:
        print(f"[contextual] vocabulary {rep.before['vocab']} -> {rep.after['vocab']} tokens; parameters "
              f"{rep.params_before / 1e6:.2f}M -> {rep.params_after / 1e6:.2f}M ({100 * rep.size_ratio:.1f}%)")
    return tok, rep


# --- 4. the protocol --------------------------------------------------------------------------

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
    eps_grid = [check_threshold(e) for e in eps_grid]
    items = validate_mcq(load_mcq(mcq, n=mcq_n), mcq) if mcq else None
    t0 = time.time()
    sp = corpus_splits(tokenizer, domain)
    sp.assert_disjoint()
    tag = {"domain": domain, "mcq": mcq}
    dense = evaluate(model, tokenizer, sp["test"], items, seqlen, eval_windows, dev_ids=sp["dev"])
    size0 = parameters_by_type(model)
    records = [{**tag, "eps": None, "stage": "dense", "params": size0["total"], "size_pct": 100.0,
                **{f"{k}_params": v for k, v in size0.items() if k != "total"}, "fallback_rate": 0.0, **dense}]
    if verbose:
        print(f"[{domain}] dense: {dense}")
    stats = domain_stats(model, sp["calib"], calib_windows, seqlen, seed=seed)
    vocab_ids = torch.cat([sp["calib"], sp["train"]])
    curves = []
    for eps in eps_grid:
        m = copy.deepcopy(model)
        rep = prune_neurons(m, stats, eps, attention=attention, verbose=verbose) if eps > 0 else None
        tok, test, dev, train, vrep = tokenizer, sp["test"], sp["dev"], sp["train"], None
        if prune_embeddings:
            tok, vrep = prune_vocabulary(m, tokenizer, vocab_ids, min_count, verbose=verbose)
            test, dev, train = tok.map_tensor(sp["test"]), tok.map_tensor(sp["dev"]), tok.map_tensor(sp["train"])
            tok.reset_counts()
            tok.map_ids(sp["test"].tolist())
        size = parameters_by_type(m)
        base = {**tag, "eps": eps, "params": size["total"], "size_pct": 100.0 * size["total"] / size0["total"],
                **{f"{k}_params": v for k, v in size.items() if k != "total"},
                "vocab": vrep.after["vocab"] if vrep is not None else (size0["embedding"] and len(tokenizer)),
                "ffn_neurons_removed": rep.ffn_neurons_removed if rep else 0,
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


# --- the notebook's parameters and profiles (minilib.params) -----------------------------------

from minilib.params import Bool, Dict, Float, HubOr, Int, List, Param, Str  # noqa: E402

SPEC = {
    "model": Str(),
    "domains": List(Str(), min_len=1),
    "mcq_sets": Dict(Param("str", optional=True)),
    "thresholds": List(Float(0.0), min_len=1),
    "prune_embeddings": Bool(),
    "min_count": Int(1),
    "mcq_n": Int(0, help="MCQ items per domain (0 = the whole set)"),
    "calib_windows": Int(1),
    "seqlen": Int(2),
    "eval_windows": Int(1),
    "epochs": Int(1),
    "ft_steps": Int(0),
    "ft_seqlen": Int(2),
    "ft_batch": Int(1),
    "ft_lr": Float(0.0),
    "ft_eval_every": Int(1),
    "seed": Int(0),
}
PROFILES = {
    "test": dict(model="tiny-llama", domains=["tiny"], mcq_sets={"tiny": "piqa"}, thresholds=[0.001, 0.1], mcq_n=4,
                 calib_windows=4, seqlen=64, eval_windows=2, ft_steps=2, ft_seqlen=32, ft_batch=2, ft_eval_every=1),
    "default": dict(model="smollm2-135m", domains=["wiki", "tiny", "code"],
                    mcq_sets={"wiki": "arc_easy", "tiny": "piqa", "code": "mmlu:high_school_computer_science"},
                    thresholds=[0.001, 0.01, 0.1], mcq_n=32, calib_windows=16, seqlen=256, eval_windows=4, ft_steps=12,
                    ft_seqlen=128, ft_batch=4, ft_eval_every=4),
    "paper": dict(model=HubOr("microsoft/phi-1_5", "smollm2-135m"), domains=["wiki", "tiny", "code"],
                  mcq_sets={"wiki": "arc_easy", "tiny": "piqa", "code": "mmlu:high_school_computer_science"},
                  thresholds=[1e-5, 1e-3, 1e-1], mcq_n=0, calib_windows=128, seqlen=512, eval_windows=64,
                  ft_steps=1000, ft_seqlen=512, ft_batch=8, ft_eval_every=50),
}
NOTEBOOKS = {"contextual_pruning": (SPEC, PROFILES)}
