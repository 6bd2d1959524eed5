"""Contextual pruning (Mini-GPTs): a general model made smaller for one domain.

1. **Calibrate** (``collect_l1_stats``, toolkit code in ``minilib.calib.l1``, re-exported here): one
   whole-model pass over windows of the domain's *calib* split with ``AbsMean`` accumulators on the
   output of every linear layer and on the input of every FFN ``down`` (the post-activation neurons).
2. **Score** each neuron by the **authors' rule** (default, ``scale="absolute"``): its mean absolute
   output per token, on the absolute scale; for a linear output with a bias ``min(mean|y|, mean|y - b|)``
   (as ``get_calib_feat``/``prune_linear`` of tval2/contextual-pruning compute it).  The one
   normalized variant is an explicit option, ``scale="median"``: the first position of every window is
   left out (the attention-sink token) and each layer is divided by its **median** neuron.
3. **Prune neurons** (``prune_neurons``): ``score_neurons_l1`` -> ``mask_threshold`` (score < ε) ->
   ``remove_neurons`` (physically).  Attention rows are **skipped** by default (residual width and
   head size cannot lose one row at a time); ``attention="mask"`` zeroes the rows under ε instead.
4. **Prune the vocabulary** (``prune_vocabulary``): ``token_counts`` -> ``mask_vocab`` ->
   ``remove_vocab``; a ``RemappedTokenizer`` reads and writes any text losslessly (unseen tokens are
   spelt in byte tokens).
5. **Recover** with ``minilib.train.finetune`` and **evaluate** every model on the **same test text**
   in bits per byte (``minilib.eval.bytes``), with bootstrap intervals over text chunks (``run_domain``).

``run_domain`` takes the changes apart (``ContextualConfig``): **neurons only** (vocabulary untouched)
at the authors' thresholds (``AUTHORS_THRESHOLDS``) and others, **vocabulary only**, **both**, each
before and after the same recovery fine-tuning, against dense and against **the dense model
fine-tuned with the same recipe**; a **vocabulary coverage curve** (``vocab_coverage``: kept
vocabulary and byte-spelt test tokens against calibration text and ``min_count``, the
vocabulary-only model scored at a few points); and optionally **the authors' protocol** beside ours.

Our protocol: the corpus is cut once into disjoint calib/train/dev/test token ranges
(``minilib.data.corpus_splits``).  Neuron statistics **and** the kept vocabulary come from *calib*,
fine-tuning runs on *train*, early stopping compares bits per byte on the same *dev* text with the
dense model's, and every reported number comes from *test*.  The authors' protocol uses one text,
the test text, for all of it.  Every record says which (``protocol``) and carries the spans it used
(``calib_span``, ``train_span``, ``dev_span``, ``test_span``).  The tables and verdicts are
``minilib.tables.contextual``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from minilib.calib.l1 import SCALES, L1Stats, check_scale, collect_l1_stats, normalize  # noqa: F401 (re-exported)
from minilib.data import CorpusError, calibration_windows, corpus_splits, load_mcq, validate_mcq
from minilib.eval import mcq_accuracy
from minilib.eval.bytes import (TextScore, agree_perplexity, bits_per_byte, bpb_difference, perplexity_per_base_token,
                                score_text, split_text, text_chunks)
from minilib.eval.report import parameters_by_type
from minilib.models.adapters import adapter_for
from minilib.models.vocab import RemappedTokenizer, token_counts
from minilib.prune.apply import remove_neurons, remove_vocab, zero_rows
from minilib.prune.masks import check_threshold, mask_threshold, mask_vocab
from minilib.prune.report import PruneReport
from minilib.prune.scores import score_neurons_l1
from minilib.stats import format_ci, mcnemar
from minilib.train.config import FinetuneConfig
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


FFN_WIDTHS = {"threshold": "every FFN neuron under ε is removed (the authors' rule): widths differ per layer",
              "equal": "as many FFN neurons removed as under ε, each layer keeping its best-scoring ones at one "
                       "width (the shrink survives an export to a stock config)"}


def check_ffn_widths(widths: str) -> str:
    if widths not in FFN_WIDTHS:
        raise ValueError(f"ffn_widths must be one of {list(FFN_WIDTHS)}, got {widths!r}")
    return widths


def prune_neurons(model: nn.Module, stats: L1Stats, eps: float, criterion: str = "any",
                  attention: str = "skip", verbose: bool = True, widths: str = "threshold") -> PruneReport:
    """Threshold pruning in place: remove FFN neurons under ε; attention rows ``"skip"`` or ``"mask"``.
    ``widths`` (``FFN_WIDTHS``): ``"threshold"`` removes every neuron under ε; ``"equal"`` removes as
    many, but the same number in every layer (``widths_equal``: each keeps its best-scoring neurons)."""
    if attention not in ("skip", "mask"):
        raise ValueError(f"attention must be 'skip' or 'mask', got {attention!r}")
    check_ffn_widths(widths)
    eps = check_threshold(eps)
    scores = score_neurons_l1(model, stats, criterion)
    masks = mask_threshold(scores, eps)
    rows = mask_attention_rows(model, stats, eps) if attention == "mask" else {}
    rep = remove_neurons(model, masks, method="contextual-l1", target={"eps": eps, "scale": stats.scale},
                         equal_widths=widths == "equal", scores=scores if widths == "equal" else None)
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

# tval2/contextual-pruning, evaluation.py: ``param_comb_generator`` / ``evaluate`` sweep
# ``linear_options = activation_options = [1e-5, 1e-3, 1e-1]`` and ``embedding_options = [-1, 0]``
# (-1: the vocabulary is not pruned; 0: tokens whose normalized count is <= 0, i.e. never seen, are
# pruned -- our ``min_count = 1``); run.py's command-line defaults are ``--lprune 1e-3 --aprune 1e-3
# --eprune -1``.  One ε here is both their linear and their activation threshold (``criterion="any"``).
AUTHORS_THRESHOLDS = (1e-5, 1e-3, 1e-1)
PROTOCOLS = {"ours": "held out: calibration on calib, fine-tuning on train, early stopping on dev, scores on test",
             "authors": "the authors': calibration, token counts, fine-tuning, early stopping and scores on one "
                        "text, the test text"}
SETTINGS = {"dense": "dense", "neurons": "neurons only", "vocab": "vocabulary only", "both": "neurons and vocabulary"}


@dataclass(frozen=True)
class ContextualConfig:
    """The settings of one contextual-pruning run; the field names are the notebook's parameters.

    Our protocol, per domain: dense; the **dense model fine-tuned** with the same recipe
    (``dense_finetune``); **neurons only** at every ``neuron_thresholds`` ε (vocabulary untouched);
    every ``thresholds`` ε with the vocabulary pruned as well when ``prune_embeddings`` (ε = 0:
    **vocabulary only**, ε > 0: **both**); each pruned setting is scored before and after the same
    recovery fine-tuning.  The **vocabulary coverage curve** counts tokens in prefixes of the calib
    split of ``coverage_tokens`` tokens for every ``coverage_min_counts``, and scores the vocabulary-only
    model (``min_count``, no fine-tuning) at ``coverage_eval_tokens``.  With ``run_domain(...,
    authors=True)`` the **authors' protocol** runs too: dense fine-tuned and every ``authors_thresholds``
    ε (same meaning as ``thresholds``), with calibration, token counts, fine-tuning and early stopping
    on the test text itself.  ``mcq_n`` items of the domain's MCQ set score dense and every fine-tuned
    pruned model of our protocol (``None``: the whole set; not the dense control, to save the budget).
    ``ffn_widths`` (``FFN_WIDTHS``): ``"threshold"`` (the authors' rule) or ``"equal"`` (as many
    neurons removed, one width for every layer, so that ``minilib.export`` keeps the whole shrink)."""

    thresholds: tuple = (0.0, 0.1)
    neuron_thresholds: tuple = AUTHORS_THRESHOLDS
    dense_finetune: bool = True
    scale: str = "absolute"
    prune_embeddings: bool = True
    min_count: int = 1
    mcq_n: int | None = 32
    calib_windows: int = 16
    seqlen: int = 128
    test_chunks: int = 16
    dev_chunks: int = 6
    chunk_bytes: int = 512
    eval_seqlen: int = 256
    epochs: int = 1
    ft_steps: int = 6
    ft_seqlen: int = 128
    ft_batch: int = 4
    ft_lr: float = 5e-5
    ft_eval_every: int = 3
    coverage_tokens: tuple = (1024, 4096, 16384, 65536, 262144)
    coverage_min_counts: tuple = (1, 2, 4)
    coverage_eval_tokens: tuple = (2048,)
    authors_thresholds: tuple = (0.0, 0.1)
    attention: str = "skip"
    ffn_widths: str = "threshold"
    n_resamples: int = 10_000
    seed: int = 0

    def __post_init__(self):
        for name in ("thresholds", "neuron_thresholds", "authors_thresholds"):
            object.__setattr__(self, name, tuple(check_threshold(e) for e in getattr(self, name)))
        for name in ("coverage_tokens", "coverage_min_counts", "coverage_eval_tokens"):
            vals = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in vals):
                raise ValueError(f"{name} must hold integers >= 1, got {vals}")
            object.__setattr__(self, name, vals)
        check_scale(self.scale)
        if self.attention not in ("skip", "mask"):
            raise ValueError(f"attention must be 'skip' or 'mask', got {self.attention!r}")
        check_ffn_widths(self.ffn_widths)

    @classmethod
    def from_params(cls, params: dict) -> "ContextualConfig":
        """The config from a notebook's parameters (every field found in ``params``; ``mcq_n`` 0 = all)."""
        kw = {k: params[k] for k in cls.__dataclass_fields__ if k in params and params[k] is not None}
        if kw.get("mcq_n") == 0:
            kw["mcq_n"] = None
        return cls(**kw)

    def finetune_config(self) -> FinetuneConfig:
        """The recovery fine-tuning recipe (the same for every model) as ``minilib.train.finetune`` takes it."""
        return FinetuneConfig(seqlen=self.ft_seqlen, batch_size=self.ft_batch, lr=self.ft_lr, max_epochs=self.epochs,
                              max_steps=self.ft_steps, eval_every=self.ft_eval_every, seed=self.seed)

    def settings(self, protocol: str = "ours") -> list[tuple[str, float]]:
        """``[(setting, ε), ...]`` of ``protocol`` in run order (without dense and the dense control)."""
        grid = self.authors_thresholds if protocol == "authors" else self.thresholds
        out = [] if protocol == "authors" else [("neurons", e) for e in self.neuron_thresholds if e > 0]
        for e in grid:
            kind = ("both" if e > 0 else "vocab") if self.prune_embeddings else ("neurons" if e > 0 else None)
            if kind is not None and (kind, e) not in out:
                out.append((kind, e))
        return out


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


def chunk_key(protocol: str, setting: str, eps: float | None, stage: str) -> str:
    """Where a scored model's per-chunk NLL lives in ``chunks[domain]``: ``"dense"``,
    ``"ours/dense-finetuned"``, ``"ours/neurons/0.05/pruned"``, ``"authors/both/0.1/finetuned"``."""
    if stage == "dense":
        return "dense"
    if stage == "dense-finetuned":
        return f"{protocol}/dense-finetuned"
    return f"{protocol}/{setting}/{eps:g}/{stage}"


def vocab_params_per_token(model: nn.Module) -> int:
    """Parameters one vocabulary entry owns (its embedding row, and its head row when the head is untied)."""
    size = parameters_by_type(model)
    n = adapter_for(model).input_embeddings(model).num_embeddings
    return (size["embedding"] + size["head"]) // n


def vocab_coverage(model: nn.Module, tokenizer, calib_ids: torch.Tensor, test_base_ids, sizes,
                   min_counts) -> list[dict]:
    """The kept vocabulary against calibration text: for every prefix of ``calib_ids`` of ``sizes``
    tokens (clipped to the split; prefixes are nested) and every ``min_count``, the kept vocabulary
    (``mask_vocab``: special and byte tokens always kept), the share of the base tokens of the test
    text (``test_base_ids``) it spells in bytes, and the model size with it (counting only)."""
    emb = adapter_for(model).input_embeddings(model)
    v0, total = emb.num_embeddings, parameters_by_type(model)["total"]
    per_token = vocab_params_per_token(model)
    test = torch.as_tensor(torch.cat([torch.as_tensor(t, dtype=torch.long) for t in test_base_ids]))
    rows = []
    for n in sorted({min(int(n), len(calib_ids)) for n in sizes}):
        counts = token_counts(calib_ids[:n], v0)
        for mc in sorted(set(min_counts)):
            try:
                pruned = mask_vocab(counts, tokenizer, mc)
            except CorpusError:  # fewer counted tokens than mask_vocab's floor
                continue
            kept = int((~pruned).sum())
            rows.append({"calib_tokens": n, "min_count": mc, "vocab": kept, "vocab_pct": 100.0 * kept / v0,
                         "size_pct": 100.0 * (total - (v0 - kept) * per_token) / total,
                         "test_fallback_rate": float(pruned[test].double().mean()),
                         "whole_split": n == len(calib_ids)})
    return rows


def run_domain(model, tokenizer, domain: str, mcq: str | None = None, config: ContextualConfig | None = None, *,
               authors: bool = False, device=None, verbose: bool = True) -> dict:
    """Run the protocol of ``config`` on one domain; returns ``{"records", "curves", "layers",
    "chunks", "coverage", "splits", "text", "stats_summary", "seconds"}``.

    ``model`` is left unchanged (every setting prunes or fine-tunes a copy).  Every model is scored
    on the same ``test_chunks`` chunks of ``chunk_bytes`` bytes of the test split (bits per byte; the
    per-chunk NLL under ``chunks[chunk_key(...)]``, the record's ``key``); early stopping uses bits per
    byte on ``dev_chunks`` chunks of the dev split against the dense model's (the authors' protocol:
    on the test text against the dense model's there).  A neuron-only ε that removes no neuron is the
    dense model: it is recorded (``identical_to = "dense"``, the dense chunks) but neither scored nor
    fine-tuned.  ``authors``: also run the authors' protocol (``ContextualConfig``)."""
    cfg = config or ContextualConfig()
    ft_cfg = cfg.finetune_config()   # checked before any work
    items = validate_mcq(load_mcq(mcq, n=cfg.mcq_n), mcq) if mcq else None
    t0 = time.time()
    sp = corpus_splits(tokenizer, domain)
    sp.assert_disjoint()
    tag = {"domain": domain, "mcq": mcq, "scale": cfg.scale, "ffn_widths": cfg.ffn_widths}
    test_ch = text_chunks(split_text(tokenizer, sp["test"]), cfg.chunk_bytes, cfg.test_chunks)
    dev_ch = text_chunks(split_text(tokenizer, sp["dev"]), cfg.chunk_bytes, cfg.dev_chunks)

    def score(m, tok, chunks):
        return score_text(m, tok, chunks, seqlen=cfg.eval_seqlen)

    dense_test, dense_dev = score(model, tokenizer, test_ch), score(model, tokenizer, dev_ch)
    test_bytes, dev_bytes = int(dense_test.bytes.sum()), int(dense_dev.bytes.sum())
    span = {"ours": {"calib_span": ["calib", "tokens", *sp.ranges["calib"]],
                     "train_span": ["train", "tokens", *sp.ranges["train"]],
                     "dev_span": ["dev", "bytes", 0, dev_bytes], "test_span": ["test", "bytes", 0, test_bytes]},
            "authors": {k: ["test", "bytes", 0, test_bytes] for k in ("calib_span", "train_span", "dev_span",
                                                                       "test_span")}}
    dense_mcq = _mcq(model, tokenizer, items) if items else {}
    size0 = parameters_by_type(model)
    width0 = sum(f.width for f in adapter_for(model).ffns(model))
    dense = {**tag, "protocol": "ours", "setting": "dense", "eps": None, "stage": "dense", "key": "dense",
             "prune_neurons": False, "prune_vocab": False, "params": size0["total"], "size_pct": 100.0,
             **{f"{k}_params": v for k, v in size0.items() if k != "total"}, "vocab": len(tokenizer),
             "ffn_neurons_removed": 0, "ffn_removed_pct": 0.0, "dev_bpb": dense_dev.bpb, **span["ours"],
             **_text_measures(dense_test, None, cfg.n_resamples), **dense_mcq}
    records, curves = [dense], []
    chunks = {"bytes": dense_test.bytes.tolist(), "dense": [float(n.sum()) for n in dense_test.nll]}
    if verbose:
        print(f"[{domain}] dense: {dense['bpb']:.4f} bits/byte on {test_bytes:,} test bytes "
              f"({dense['test_chunks']} chunks); dev {dense_dev.bpb:.4f}")

    def add(rec, s: TextScore | None, copy_of: str | None = None):
        rec["key"] = chunk_key(rec["protocol"], rec["setting"], rec["eps"], rec["stage"])
        chunks[rec["key"]] = list(chunks[copy_of]) if copy_of else [float(n.sum()) for n in s.nll]
        records.append(rec)

    def recover(m, tok, train, dev, target, protocol, base, eps, with_mcq):
        """Fine-tune ``m`` (the same recipe for every model), score it; the fine-tuned record."""
        ft = finetune(m, train, train, ft_cfg.replace(target_ppl=target), device=device, verbose=verbose,
                      dev_eval=lambda mm, t=tok: score(mm, t, dev).bpb, dev_name="dev_bpb")
        curves.extend({**tag, "protocol": protocol, "setting": base["setting"], "eps": eps, **h} for h in ft.history)
        s = score(m, tok, test_ch)
        after_mcq = _mcq(m, tok, items) if items and with_mcq else {}
        stopped = ft.stopped.replace("dev perplexity", "dev bits per byte")
        rec = {**base, "stage": "finetuned", "ft_steps": ft.steps, "best_step": ft.best_step,
               "dev_bpb_start": ft.start_dev_ppl, "best_dev_bpb": ft.best_dev_ppl,
               "target_dev_bpb": target if target is not None else float("nan"), "stopped": stopped,
               **_text_measures(s, dense_test, cfg.n_resamples), **after_mcq, **_vs_dense_mcq(after_mcq, dense_mcq)}
        return rec, s

    def dense_control(protocol, train, dev):
        """The dense model fine-tuned with the same recipe: every step of the budget (its dev bits per
        byte start at the early-stopping target), the best dev checkpoint kept."""
        base = {**tag, "protocol": protocol, "setting": "dense", "eps": None, "prune_neurons": False,
                "prune_vocab": False, **{k: v for k, v in dense.items() if k.endswith("_params") or k in (
                    "params", "size_pct", "vocab", "ffn_neurons_removed", "ffn_removed_pct")},
                "train_fallback_rate": 0.0, **span[protocol]}
        rec, s = recover(copy.deepcopy(model), tokenizer, train, dev, None, protocol, base, None, False)
        rec["stage"] = "dense-finetuned"
        add(rec, s)
        if verbose:
            print(f"[{domain}] {protocol}: dense fine-tuned ({rec['stopped']}): {rec['bpb']:.4f} bits/byte "
                  f"(Δ {format_ci(rec['d_bpb'], rec['d_bpb_low'], rec['d_bpb_high'], 4)})")

    def setting(protocol, kind, eps, stats, vocab_ids, train_ids, dev, target):
        m = copy.deepcopy(model)
        rep = (prune_neurons(m, stats, eps, attention=cfg.attention, verbose=verbose, widths=cfg.ffn_widths)
               if eps > 0 else None)
        tok, train, vrep = tokenizer, train_ids, None
        if kind in ("vocab", "both"):
            tok, vrep = prune_vocabulary(m, tokenizer, vocab_ids, cfg.min_count, verbose=verbose)
            train = tok.map_tensor(train_ids)
        train_fb = tok.fallback_count / max(1, tok.token_count) if isinstance(tok, RemappedTokenizer) else 0.0
        size = parameters_by_type(m)
        removed = rep.ffn_neurons_removed if rep else 0
        base = {**tag, "protocol": protocol, "setting": kind, "eps": eps, "prune_neurons": kind != "vocab",
                "prune_vocab": kind != "neurons", "params": size["total"],
                "size_pct": 100.0 * size["total"] / size0["total"],
                **{f"{k}_params": v for k, v in size.items() if k != "total"},
                "vocab": vrep.after["vocab"] if vrep is not None else len(tokenizer),
                "ffn_neurons_removed": removed, "ffn_removed_pct": 100.0 * removed / width0,
                "train_fallback_rate": train_fb, **span[protocol]}
        label = f"[{domain}] {protocol}: {SETTINGS[kind]} ε={eps:g}"
        if kind == "neurons" and removed == 0:  # the dense model itself: nothing to score or fine-tune
            same_as = {k: v for k, v in dense.items() if k.startswith(("bpb", "ppl_base", "d_bpb", "test_", "model_"))
                       or k == "fallback_rate"}
            add({**base, "stage": "pruned", "identical_to": "dense", **same_as}, None, copy_of="dense")
            add({**base, "stage": "finetuned", "identical_to": "dense", **same_as, "ft_steps": 0, "best_step": 0,
                 "dev_bpb_start": target, "best_dev_bpb": target, "target_dev_bpb": target,
                 "stopped": "not fine-tuned: removes no neuron (at the target)"}, None, copy_of="dense")
            if verbose:
                print(f"{label}: removes no FFN neuron, the dense model")
            return
        s = score(m, tok, test_ch)
        pruned = {**base, "stage": "pruned", **_text_measures(s, dense_test, cfg.n_resamples)}
        add(pruned, s)
        if verbose:
            print(f"{label} pruned: size {base['size_pct']:.1f}%, {pruned['bpb']:.4f} bits/byte "
                  f"(Δ {format_ci(pruned['d_bpb'], pruned['d_bpb_low'], pruned['d_bpb_high'], 4)})")
        after, s = recover(m, tok, train, dev, target, protocol, base, eps, protocol == "ours")
        add(after, s)
        if verbose:
            print(f"{label} fine-tuned ({after['stopped']}): {after['bpb']:.4f} bits/byte "
                  f"(Δ {format_ci(after['d_bpb'], after['d_bpb_low'], after['d_bpb_high'], 4)})")
        del m

    # our protocol: statistics and vocabulary from calib, fine-tuning on train, early stopping on dev
    stats = domain_stats(model, sp["calib"], cfg.calib_windows, cfg.seqlen, seed=cfg.seed, scale=cfg.scale)
    all_eps = sorted({e for _, e in cfg.settings("ours") + cfg.settings("authors") if e > 0}) or [0.0]
    layers = layer_removal(model, stats, all_eps, match="median" if cfg.scale == "absolute" else "absolute")
    if cfg.dense_finetune:
        dense_control("ours", sp["train"], dev_ch)
    for kind, eps in cfg.settings("ours"):
        setting("ours", kind, eps, stats, sp["calib"], sp["train"], dev_ch, dense_dev.bpb)

    # the vocabulary coverage curve: counting at every point, the vocabulary-only model at a few
    coverage = [{**tag, **r} for r in vocab_coverage(model, tokenizer, sp["calib"], dense_test.base_ids,
                                                     cfg.coverage_tokens, cfg.coverage_min_counts)]
    for n in sorted({min(n, len(sp["calib"])) for n in cfg.coverage_eval_tokens}) if cfg.prune_embeddings else []:
        row = next((r for r in coverage if r["calib_tokens"] == n and r["min_count"] == cfg.min_count), None)
        if row is None:
            row = {**tag, **vocab_coverage(model, tokenizer, sp["calib"], dense_test.base_ids, [n],
                                           [cfg.min_count])[0]}
            coverage.append(row)
        m = copy.deepcopy(model)
        tok, vrep = prune_vocabulary(m, tokenizer, sp["calib"][:n], cfg.min_count, verbose=False)
        s = score(m, tok, test_ch)
        row.update({"scored": True, "key": f"coverage/{n}/{cfg.min_count}", "vocab": vrep.after["vocab"],
                    "size_pct": 100.0 * parameters_by_type(m)["total"] / size0["total"],
                    **_text_measures(s, dense_test, cfg.n_resamples)})
        chunks[row["key"]] = [float(x.sum()) for x in s.nll]
        if verbose:
            print(f"[{domain}] coverage: vocabulary from {n:,} calib tokens: {row['vocab']:,} tokens, "
                  f"{100 * row['fallback_rate']:.1f}% of test tokens in bytes, Δ {row['d_bpb']:+.4f} bits/byte")
        del m

    # the authors' protocol: one text (the test text) for statistics, token counts, fine-tuning, stopping
    if authors:
        same = torch.tensor(tokenizer("".join(test_ch), add_special_tokens=False)["input_ids"], dtype=torch.long)
        a_stats = domain_stats(model, same, cfg.calib_windows, min(cfg.seqlen, len(same)), seed=cfg.seed,
                               scale=cfg.scale)
        if cfg.dense_finetune:
            dense_control("authors", same, test_ch)
        for kind, eps in cfg.settings("authors"):
            setting("authors", kind, eps, a_stats, same, same, test_ch, dense_test.bpb)

    for r in records:
        r.pop("_correct", None)
    return {"records": records, "curves": curves, "layers": layers.assign(domain=domain).to_dict("records"),
            "chunks": chunks, "coverage": coverage,
            "stats_summary": stats.summary([e for e in all_eps if e > 0] or [1e-3]),
            "splits": {k: list(v) for k, v in sp.ranges.items()},
            "text": {"test_chunks": len(test_ch), "test_bytes": test_bytes, "dev_chunks": len(dev_ch),
                     "dev_bytes": dev_bytes, "authors_tokens": int(len(same)) if authors else 0},
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
