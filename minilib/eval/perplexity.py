"""Perplexity by the SparseGPT/Wanda protocol: contiguous, non-overlapping windows of ``seqlen``
tokens, and the exponent of the mean NLL over every predicted token.

``perplexity`` returns the number; ``perplexity_ci`` returns it with a 95% Student-t interval over the
windows (the windows are the units: each is scored independently; the interval is that of the mean
per-window NLL per token, exponentiated, valid at small n where a percentile bootstrap over a
handful of windows is too narrow), and the per-window NLL that paired comparisons
(``perplexity_ratio_ci``: pruned vs dense on the same windows; ``minilib.stats.nll_ratio`` in a
verdict block) need.

Inputs: a 1-D token tensor is cut into windows of ``seqlen`` (default 512); a 2-D ``[rows, width]``
tensor is a batch of independent sequences: with ``seqlen=None`` (or ``seqlen == width``) each row is
one window, otherwise each row is cut into ``width // seqlen`` windows of ``seqlen`` (a ``[1, 2048]``
tensor with ``seqlen=256`` is 8 windows of 256, never one window of 2,048).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minilib.data.corpora import CorpusError
from minilib.device import model_device
from minilib.models.adapters import adapter_for
from minilib.stats import Interval, t_interval

DEFAULT_SEQLEN = 512


def check_seqlen(model, seqlen: int) -> int:
    """``seqlen`` as an int in ``[2, max positions]``; else an error naming the argument and range."""
    maxpos = adapter_for(model).max_positions(model.config)
    allowed = f"[2, {maxpos}] (the model's maximum positions)" if maxpos else "an integer >= 2"
    if isinstance(seqlen, bool) or not isinstance(seqlen, numbers.Integral):
        raise TypeError(f"seqlen must be an integer in {allowed}, got {seqlen!r} ({type(seqlen).__name__})")
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2 to predict a token (allowed: {allowed}), got {seqlen}")
    if maxpos is not None and seqlen > maxpos:
        raise ValueError(f"seqlen {seqlen} is above the model's maximum positions ({maxpos}); allowed: {allowed}")
    return int(seqlen)


def check_token_ids(model, ids: torch.Tensor, name: str = "input_ids") -> None:
    """Raise unless ``ids`` is an integer tensor with every id in ``[0, vocabulary size)``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(ids.shape)})")
    vocab = model.get_input_embeddings().num_embeddings
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds token id {bad}, outside the model's vocabulary: allowed 0..{vocab - 1} "
                         f"({vocab} tokens); was it tokenized with another tokenizer?")


def to_windows(input_ids: torch.Tensor, seqlen: int | None = None, max_windows: int | None = None,
               model=None, name: str = "input_ids") -> torch.Tensor:
    """The ``[n, seqlen]`` windows ``perplexity`` scores (see the module docstring); errors name the
    tokens ``name``."""
    if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, numbers.Integral)
                                    or max_windows < 1):
        raise ValueError(f"max_windows must be an integer >= 1 or None (all windows), got {max_windows!r}")
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor of token ids (a 1-D stream or [rows, width] LongTensor), "
                        f"got {type(input_ids).__name__}")
    if input_ids.dim() == 1:
        seqlen = DEFAULT_SEQLEN if seqlen is None else seqlen
        rows = input_ids[None]
    elif input_ids.dim() == 2:
        seqlen = input_ids.shape[1] if seqlen is None else seqlen
        rows = input_ids
    else:
        raise ValueError(f"{name} must be 1-D (a token stream) or 2-D ([rows, width] sequences), "
                         f"got shape {tuple(input_ids.shape)}")
    if model is not None:
        seqlen = check_seqlen(model, seqlen)
        check_token_ids(model, input_ids, name)
    elif isinstance(seqlen, bool) or not isinstance(seqlen, numbers.Integral) or seqlen < 2:
        raise ValueError(f"seqlen must be an integer >= 2, got {seqlen!r}")
    per_row = rows.shape[1] // seqlen
    if per_row < 1:
        what = f"{rows.shape[1]} tokens" if input_ids.dim() == 1 else f"rows of {rows.shape[1]} tokens"
        raise CorpusError(f"{name} has {what}, too short for one window of seqlen={seqlen}: zero windows "
                          f"to score (use a longer text or seqlen <= {rows.shape[1]})")
    windows = rows[:, :per_row * seqlen].reshape(-1, seqlen)
    return windows[:max_windows] if max_windows else windows


def lm_nll(model, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token negative log-likelihood (nats) of token windows ``x`` ``[B, T]``: every position
    but the last predicts the next token.  ``reduction`` as in ``F.cross_entropy``.  The one loss that
    evaluation and fine-tuning share."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1),
                           reduction=reduction)


@torch.no_grad()
def window_nll(model, windows: torch.Tensor, batch_size: int = 4, progress: bool | None = None) -> torch.Tensor:
    """Summed NLL (nats, float64) of each window of ``windows`` ``[n, seqlen]``: a tensor ``[n]``;
    each window predicts ``seqlen - 1`` tokens."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    device = model_device(model)
    out = []
    batches = range(0, len(windows), batch_size)
    show = progress if progress is not None else len(batches) > 8
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(batches, desc="perplexity", disable=not show, leave=False):
            x = windows[i:i + batch_size].to(device)
            nll = lm_nll(model, x, reduction="none").view(x.shape[0], -1)        # (B, T-1)
            out.append(nll.double().sum(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def nll_windows(model, windows: torch.Tensor, batch_size: int = 4, progress: bool | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and the number of predicted tokens over ``windows`` ``[n, seqlen]``."""
    per = window_nll(model, windows, batch_size, progress)
    return float(per.sum()), int(windows.shape[0] * (windows.shape[1] - 1))


def perplexity(model, input_ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 4,
               max_windows: int | None = None, progress: bool | None = None) -> float:
    """Perplexity of ``model`` on ``input_ids`` (1-D stream or 2-D sequences; see the module
    docstring for how they become windows of ``seqlen``)."""
    windows = to_windows(input_ids, seqlen, max_windows, model)
    nll, n = nll_windows(model, windows, batch_size, progress)
    return math.exp(nll / n)


def perplexity_ci(model, input_ids: torch.Tensor, seqlen: int | None = None, batch_size: int = 4,
                  max_windows: int | None = None, progress: bool | None = None, confidence: float = 0.95) -> dict:
    """Perplexity with its Student-t interval over windows (of the mean per-window NLL per token,
    exponentiated; every window predicts the same number of tokens, so the mean over windows is the
    mean over tokens).

    Returns ``{"ppl", "ci95_low", "ci95_high", "windows", "seqlen", "tokens" (predicted tokens),
    "nll" (summed NLL of each window, nats)}``; ``ppl`` equals ``perplexity(...)`` on the same
    arguments.  One window gives no interval (NaN bounds): use more windows (the interval narrows
    roughly as 1/sqrt(windows))."""
    windows = to_windows(input_ids, seqlen, max_windows, model)
    per = window_nll(model, windows, batch_size, progress).numpy()
    T = windows.shape[1] - 1
    ci = t_interval(per / T, confidence=confidence)
    lo, hi = (math.exp(ci.low), math.exp(ci.high)) if ci.low == ci.low else (float("nan"), float("nan"))
    return {"ppl": math.exp(ci.estimate), "ci95_low": lo, "ci95_high": hi, "windows": int(windows.shape[0]),
            "seqlen": int(windows.shape[1]), "tokens": int(windows.shape[0] * T), "nll": per.tolist()}


def perplexity_ratio_ci(a: dict, b: dict, confidence: float = 0.95) -> Interval:
    """``ppl(a) / ppl(b)`` with a paired Student-t interval over the windows both were scored on.

    ``a``, ``b``: results of ``perplexity_ci`` on the same windows (e.g. a pruned and the dense
    model); the ratio is the exponent of the mean per-window difference of NLL per token, so the
    window-to-window variation cancels.  An interval that excludes 1 means the two perplexities
    differ on this text (for a verdict, decide it in its block: ``minilib.stats.nll_ratio``)."""
    na, nb = np.asarray(a["nll"], float), np.asarray(b["nll"], float)
    if na.shape != nb.shape or a.get("seqlen") != b.get("seqlen"):
        raise ValueError(f"a and b must be scored on the same windows: {na.size} windows of seqlen {a.get('seqlen')} "
                         f"vs {nb.size} of seqlen {b.get('seqlen')}")
    T = a["seqlen"] - 1
    d = (na - nb) / T
    if np.all(d == d[0]):
        e = math.exp(float(d[0]))
        return Interval(e, e, e)
    ci = t_interval(d, confidence=confidence)
    return Interval(math.exp(ci.estimate), math.exp(ci.low), math.exp(ci.high))