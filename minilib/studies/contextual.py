"""Contextual pruning (Mini-GPTs): a general model made smaller for one domain.

1. **Calibrate** (``collect_l1_stats``): one whole-model pass (``minilib.calib.calibrate``) over
   windows of the domain's *calib* split with ``AbsMean`` accumulators on the output of every linear
   layer and on the input of every FFN ``down`` (the post-activation neurons).
2. **Score** each neuron by the **authors' rule** (default, ``scale="absolute"``): its mean absolute
   output per token, on the absolute scale; for a linear output with a bias ``min(mean|y|, mean|y - b|)``
   (as ``get_calib_feat``/``prune_linear`` of tval2/contextual-pruning compute it).  The one
   normalized variant is an explicit option, ``scale="median"``: the first position of every window is
   left out (the attention-sink token, whose activations can be 1,000x the rest) and each layer is
   divided by its **median** neuron, so ε means "a fraction of a typical neuron of this layer".  (The
   former rule, dividing by the layer's maximum, let one massive activation set the scale of a whole
   layer; it is gone.)
3. **Prune neurons** (``prune_neurons``): ``score_neurons_l1`` -> ``mask_threshold`` (score < ε) ->
   ``remove_neurons`` (physically).  ``down`` rows and attention ``o`` rows write the residual
   stream, whose width every block shares, and ``q/k/v`` rows belong to heads of fixed ``head_dim``:
   they cannot be removed one at a time, so attention rows are **skipped** by default;
   ``attention="mask"`` zeroes the rows under ε instead (``zero_rows``: fewer nonzeros, same shapes).
4. **Prune the vocabulary** (``prune_vocabulary``): ``token_counts`` -> ``mask_vocab`` ->
   ``remove_vocab``; a ``RemappedTokenizer`` reads and writes any text losslessly (unseen tokens are
   spelt in byte tokens).
5. **Recover** with ``minilib.train.finetune`` and **evaluate** dense, pruned and fine-tuned models on
   the **same test text** in bits per byte (``minilib.eval.bytes``), with paired bootstrap intervals
   over text chunks (``run_domain``).

The corpus is cut once into disjoint calib/train/dev/test token ranges (``minilib.data.corpus_splits``).
Neuron statistics **and** the kept vocabulary come from *calib* only, so the fine-tuning text (*train*)
holds tokens outside the kept vocabulary, as the test text does; fine-tuning runs on *train*, early
stopping compares bits per byte on the same *dev* text with the dense model's, and every reported
number comes from *test*.  ``TABLES`` turn the results JSON into the docs' tables and verdicts.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import nn

from minilib.calib.l1 import SCALES, L1Stats, check_scale, collect_l1_stats, normalize
from minilib.data import CorpusError, calibration_windows, corpus_splits, load_mcq, validate_mcq
from minilib.eval import mcq_accuracy
from minilib.eval.bytes import (TextScore, agree_perplexity, bits_per_byte, bpb_difference, perplexity_per_base_token,
                                score_text, text_chunks)
from minilib.eval.report import parameters_by_type
from minilib.models.adapters import adapter_for
from minilib.models.linear import out_features
from minilib.models.vocab import RemappedTokenizer, token_counts
from minilib.prune.apply import remove_neurons, remove_vocab, zero_rows
from minilib.prune.masks import check_threshold, mask_threshold, mask_vocab
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_l1
from minilib.stats import format_ci, mcnemar
from minilib.train.finetune import finetune

NOTEBOOK = "contextual_pruning"
MASKABLE_ROWS = ("q", "k", "v", "qkv", "o")
SCALE_LABELS = {"absolute": "absolute mean of abs. output (authors' rule)",
                "median": "divided by the layer median, first position excluded"}


# --- 1. statistics (the toolkit's ``minilib.calib.l1``; re-exported here) ------------------------

def domain_stats(model: nn.Module, calib_ids: torch.Tensor, n_windows: int = 16, seqlen: int = 256,
                 seed: int = 0, batch_size: int = 4, scale: str = "absolute") -> L1Stats:
    """``collect_l1_stats`` over ``n_windows`` seeded random windows of a calibration split."""
    if len(calib_ids) < seqlen:
        raise CorpusError(f"calibration split has {len(calib_ids)} tokens, fewer than one window of {seqlen}")
    return collect_l1_stats(model, calibration_windows(calib_ids, n_windows, seqlen, seed), batch_size=batch_size,
                            scale=scale)


def layer_removal(model: nn.Module, stats: L1Stats, eps_grid, criterion: str = "any",
                  match: str | None = "median") -> pd.DataFrame:
    """Per block and ε: how many FFN neurons the threshold removes (``rule`` = ``stats.scale``).

    With ``match`` (another scale), the same statistics are also scored on that scale at the ε that
    removes the same total number of neurons, so the two rules can be compared layer by layer at an
    equal budget.  Columns: ``rule, eps, block, removed, width, fraction, total_fraction``."""
    rows = []

    def add(rule, eps, scores, label_eps):
        total = sum(int((s < eps).sum()) for s in scores)
        n = sum(s.numel() for s in scores)
        for b, s in enumerate(scores):
            k = int((s < eps).sum())
            rows.append({"rule": rule, "eps": label_eps, "threshold": float(eps), "block": b, "removed": k,
                         "width": s.numel(), "fraction": k / s.numel(), "total_fraction": total / n})
        return total

    base = score_neurons_l1(model, stats, criterion)
    other = score_neurons_l1(model, stats.rescaled(match), criterion) if match and match != stats.scale else None
    flat = torch.sort(torch.cat(other)).values if other is not None else None
    for eps in eps_grid:
        eps = check_threshold(eps)
        total = add(stats.scale, eps, base, eps)
        if other is not None:
            thr = float(flat[total]) if 0 < total < len(flat) else (0.0 if total == 0 else float(flat[-1]) + 1)
            add(match, thr, other, eps)
    return pd.DataFrame(rows)


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
    rep = remove_neurons(model, masks, method="contextual-l1", target={"eps": eps, "scale": stats.scale})
    if rows:
        rep = rep.merge(zero_rows(model, rows))
    rep.notes.setdefault("rows_masked", 0)
    if verbose:
        print(f"[contextual] ε={eps:g} ({stats.scale}): removed {rep.ffn_neurons_removed} FFN neurons "
              f"({100 * rep.ffn_ratio:.1f}%), masked {rep.notes['rows_masked']} attention rows; size "
              f"{rep.params_before / 1e6:.2f}M -> {rep.params_after / 1e6:.2f}M ({100 * rep.size_ratio:.1f}%)")
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
        print(f"[contextual] vocabulary {rep.before['vocab']} -> {rep.after['vocab']} tokens ({tok.vmap.fallback} "
              f"fallback); parameters {rep.params_before / 1e6:.2f}M -> {rep.params_after / 1e6:.2f}M "
              f"({100 * rep.size_ratio:.1f}%)")
    return tok, rep


# --- 4. the protocol --------------------------------------------------------------------------

def split_text(tokenizer, ids: torch.Tensor) -> str:
    """The text of a token split (decoded by the base tokenizer), without a partial character at
    either end (a split boundary may fall inside a multi-byte character)."""
    return tokenizer.decode(ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)).strip("\ufffd")


def _mcq(model, tok, items) -> dict:
    r = mcq_accuracy(model, tok, items, details=True)
    return {"acc": r["acc"], "acc_low": r["acc_ci95_low"], "acc_high": r["acc_ci95_high"], "acc_norm": r["acc_norm"],
            "mcq_n": r["n"], "_correct": r["correct"]}


def _text_measures(s: TextScore, dense: TextScore | None, n_resamples: int) -> dict:
    bpb = bits_per_byte(s, n_resamples=n_resamples)
    ppl = perplexity_per_base_token(s, n_resamples=n_resamples)
    out = {"bpb": bpb.estimate, "bpb_low": bpb.low, "bpb_high": bpb.high, "ppl_base": ppl.estimate,
           "ppl_base_low": ppl.low, "ppl_base_high": ppl.high, "fallback_rate": s.fallback_rate,
           "test_chunks": s.chunks, "test_bytes": int(s.bytes.sum()), "model_tokens": int(s.tokens.sum())}
    if dense is None:
        return {**out, "d_bpb": 0.0, "d_bpb_low": 0.0, "d_bpb_high": 0.0}
    d = bpb_difference(s, dense, n_resamples=n_resamples)
    ag = agree_perplexity(s, dense, n_resamples=n_resamples)
    return {**out, "d_bpb": d.estimate, "d_bpb_low": d.low, "d_bpb_high": d.high, "ppl_agree": ag["a"].estimate,
            "dense_ppl_agree": ag["b"].estimate, "agree_ratio": ag["ratio"].estimate,
            "agree_ratio_low": ag["ratio"].low, "agree_ratio_high": ag["ratio"].high, "agree_share": ag["share"]}


def _vs_dense_mcq(m: dict, dense: dict) -> dict:
    if "_correct" not in m or "_correct" not in dense:
        return {}
    t = mcnemar(m["_correct"], dense["_correct"])
    return {"mcq_b": t.b, "mcq_c": t.c, "mcq_p": t.p_value}


def run_domain(model, tokenizer, domain: str, mcq: str | None = None, eps_grid=(0.0, 0.05, 0.1),
               scale: str = "absolute", prune_embeddings: bool = True, min_count: int = 1, mcq_n: int | None = 32,
               calib_windows: int = 16, seqlen: int = 128, test_chunks: int = 16, dev_chunks: int = 6,
               chunk_bytes: int = 512, eval_seqlen: int = 256, ft_steps: int = 6, ft_epochs: int = 1,
               ft_seqlen: int = 128, ft_batch: int = 4, ft_lr: float = 5e-5, ft_eval_every: int = 3,
               attention: str = "skip", n_resamples: int = 10_000, seed: int = 0, device=None,
               verbose: bool = True) -> dict:
    """Run the whole protocol on one domain; returns ``{"records", "curves", "layers", "chunks", ...}``.

    ``model`` is left unchanged (every ε prunes a copy).  ``eps_grid`` may contain 0: with
    ``prune_embeddings`` that is vocabulary pruning alone.  Every stage is scored on the same
    ``test_chunks`` chunks of ``chunk_bytes`` bytes of the test split (bits per byte); early stopping
    uses bits per byte on ``dev_chunks`` chunks of the dev split, against the dense model's.
    """
    check_scale(scale)
    eps_grid = [check_threshold(e) for e in eps_grid]
    items = validate_mcq(load_mcq(mcq, n=mcq_n), mcq) if mcq else None
    t0 = time.time()
    sp = corpus_splits(tokenizer, domain)
    sp.assert_disjoint()
    tag = {"domain": domain, "mcq": mcq, "scale": scale}
    test_ch = text_chunks(split_text(tokenizer, sp["test"]), chunk_bytes, test_chunks)
    dev_ch = text_chunks(split_text(tokenizer, sp["dev"]), chunk_bytes, dev_chunks)

    def score(m, tok, chunks):
        return score_text(m, tok, chunks, seqlen=eval_seqlen)

    dense_test, dense_dev = score(model, tokenizer, test_ch), score(model, tokenizer, dev_ch)
    dense_mcq = _mcq(model, tokenizer, items) if items else {}
    size0 = parameters_by_type(model)
    dense = {**tag, "eps": None, "stage": "dense", "params": size0["total"], "size_pct": 100.0,
             **{f"{k}_params": v for k, v in size0.items() if k != "total"}, "vocab": len(tokenizer),
             "ffn_neurons_removed": 0, "ffn_removed_pct": 0.0, "dev_bpb": dense_dev.bpb,
             **_text_measures(dense_test, None, n_resamples), **dense_mcq}
    records, chunks = [dense], {"bytes": dense_test.bytes.tolist(), "dense": [float(n.sum()) for n in dense_test.nll]}
    if verbose:
        print(f"[{domain}] dense: {dense['bpb']:.4f} bits/byte on {dense['test_bytes']:,} test bytes "
              f"({dense['test_chunks']} chunks); dev {dense_dev.bpb:.4f}")
    stats = domain_stats(model, sp["calib"], calib_windows, seqlen, seed=seed, scale=scale)
    layers = layer_removal(model, stats, [e for e in eps_grid if e > 0] or [0.0],
                           match="median" if scale == "absolute" else "absolute")
    width0 = sum(f.width for f in adapter_for(model).ffns(model))
    curves = []
    for eps in eps_grid:
        m = copy.deepcopy(model)
        rep = prune_neurons(m, stats, eps, attention=attention, verbose=verbose) if eps > 0 else None
        tok, train, vrep = tokenizer, sp["train"], None
        if prune_embeddings:  # the kept vocabulary comes from the calib split only
            tok, vrep = prune_vocabulary(m, tokenizer, sp["calib"], min_count, verbose=verbose)
            train = tok.map_tensor(sp["train"])
        train_fb = tok.fallback_count / max(1, tok.token_count) if isinstance(tok, RemappedTokenizer) else 0.0
        size = parameters_by_type(m)
        removed = rep.ffn_neurons_removed if rep else 0
        base = {**tag, "eps": eps, "params": size["total"], "size_pct": 100.0 * size["total"] / size0["total"],
                **{f"{k}_params": v for k, v in size.items() if k != "total"},
                "vocab": vrep.after["vocab"] if vrep is not None else len(tokenizer),
                "ffn_neurons_removed": removed, "ffn_removed_pct": 100.0 * removed / width0,
                "train_fallback_rate": train_fb}
        s_pruned = score(m, tok, test_ch)
        pruned = {**base, "stage": "pruned", **_text_measures(s_pruned, dense_test, n_resamples)}
        records.append(pruned)
        chunks[f"{eps:g}/pruned"] = [float(n.sum()) for n in s_pruned.nll]
        if verbose:
            print(f"[{domain}] ε={eps:g} pruned: size {base['size_pct']:.1f}%, {pruned['bpb']:.4f} bits/byte "
                  f"(Δ {format_ci(pruned['d_bpb'], pruned['d_bpb_low'], pruned['d_bpb_high'], 4)})")
        ft = finetune(m, train, train, target_ppl=dense_dev.bpb, seqlen=ft_seqlen, batch_size=ft_batch, lr=ft_lr,
                      max_epochs=ft_epochs, max_steps=ft_steps, eval_every=ft_eval_every, seed=seed, device=device,
                      verbose=verbose, dev_eval=lambda mm, t=tok: score(mm, t, dev_ch).bpb, dev_name="dev_bpb")
        curves += [{**tag, "eps": eps, **h} for h in ft.history]
        s_ft = score(m, tok, test_ch) if ft.steps else s_pruned
        after_mcq = _mcq(m, tok, items) if items else {}
        stopped = ft.stopped.replace("dev perplexity", "dev bits per byte")
        after = {**base, "stage": "finetuned", "ft_steps": ft.steps, "best_step": ft.best_step,
                 "dev_bpb_start": ft.start_dev_ppl, "best_dev_bpb": ft.best_dev_ppl, "target_dev_bpb": dense_dev.bpb,
                 "stopped": stopped, **_text_measures(s_ft, dense_test, n_resamples), **after_mcq,
                 **_vs_dense_mcq(after_mcq, dense_mcq)}
        records.append(after)
        chunks[f"{eps:g}/finetuned"] = [float(n.sum()) for n in s_ft.nll]
        if verbose:
            print(f"[{domain}] ε={eps:g} fine-tuned ({stopped}): {after['bpb']:.4f} bits/byte "
                  f"(Δ {format_ci(after['d_bpb'], after['d_bpb_low'], after['d_bpb_high'], 4)})")
        del m
    for r in records:
        r.pop("_correct", None)
    return {"records": records, "curves": curves, "layers": layers.assign(domain=domain).to_dict("records"),
            "chunks": chunks, "stats_summary": stats.summary([e for e in eps_grid if e > 0] or [1e-3]),
            "splits": {k: list(v) for k, v in sp.ranges.items()},
            "text": {"test_chunks": len(test_ch), "test_bytes": int(dense_test.bytes.sum()), "dev_chunks": len(dev_ch),
                     "dev_bytes": int(dense_dev.bytes.sum())},
            "seconds": time.time() - t0}


def verdict(d_low: float, d_high: float) -> str:
    """What a paired interval of Δ bits per byte (model - dense) supports."""
    if d_low > 0:
        return "worse than dense"
    if d_high < 0:
        return "better than dense"
    return "not resolved from dense"


def best_reduction(records, domain: str) -> dict | None:
    """The smallest fine-tuned model of ``domain`` that is not detectably worse than dense: the lower
    end of its paired 95% interval of Δ bits per byte is <= 0.  None if every one is worse."""
    ok = [r for r in records if r["domain"] == domain and r["stage"] == "finetuned" and r["d_bpb_low"] <= 0]
    return min(ok, key=lambda r: r["size_pct"]) if ok else None
