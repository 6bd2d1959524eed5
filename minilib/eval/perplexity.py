"""Perplexity by the SparseGPT/Wanda protocol: contiguous, non-overlapping windows of ``seqlen``
tokens, and the exponent of the mean NLL over every predicted token."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minilib.data.corpora import eval_windows
from minilib.device import model_device
from minilib.models.adapters import adapter_for


def check_seqlen(model, seqlen: int) -> None:
    """Raise if ``seqlen`` exceeds the model's maximum positions."""
    maxpos = adapter_for(model).max_positions(model.config)
    if maxpos is not None and seqlen > maxpos:
        raise ValueError(f"seqlen {seqlen} is above the model's maximum positions ({maxpos})")
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2 to predict a token, got {seqlen}")


def lm_nll(model, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token negative log-likelihood (nats) of token windows ``x`` ``[B, T]``: every position
    but the last predicts the next token.  ``reduction`` as in ``F.cross_entropy``.  The one loss that
    evaluation and fine-tuning share."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1),
                           reduction=reduction)


@torch.no_grad()
def nll_windows(model, windows: torch.Tensor, batch_size: int = 4, progress: bool | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and the number of predicted tokens over ``windows`` ``[n, seqlen]``."""
    device = model_device(model)
    total, count = 0.0, 0
    batches = range(0, len(windows), batch_size)
    show = progress if progress is not None else len(batches) > 8
    for i in tqdm(batches, desc="perplexity", disable=not show, leave=False):
        x = windows[i:i + batch_size].to(device)
        total += lm_nll(model, x, reduction="sum").item()
        count += x[:, 1:].numel()
    return total, count


def perplexity(model, input_ids: torch.Tensor, seqlen: int = 512, batch_size: int = 4,
               max_windows: int | None = None, progress: bool | None = None) -> float:
    """Perplexity of ``model`` on ``input_ids``: a 1-D token tensor (cut into non-overlapping windows
    of ``seqlen``) or a 2-D ``[n, seqlen]`` batch of windows."""
    if input_ids.dim() == 1:
        windows = eval_windows(input_ids, seqlen, max_windows)
    elif input_ids.dim() == 2:
        windows = input_ids[:max_windows] if max_windows else input_ids
    else:
        raise ValueError(f"input_ids must be 1-D or 2-D, got shape {tuple(input_ids.shape)}")
    check_seqlen(model, windows.shape[1])
    was_training = model.training
    model.eval()
    try:
        nll, n = nll_windows(model, windows, batch_size, progress)
    finally:
        model.train(was_training)
    return math.exp(nll / n)
