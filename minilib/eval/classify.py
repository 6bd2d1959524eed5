"""Classification accuracy with a Wilson confidence interval."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from minilib.device import model_device
from minilib.stats import wilson_interval  # noqa: F401  (re-exported: minilib.eval.wilson_interval)


def accuracy(predictions, labels) -> dict:
    """``{"acc", "ci95_low", "ci95_high", "n"}``."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0]} predictions for {labels.shape[0]} labels")
    k, n = int((predictions == labels).sum()), len(labels)
    lo, hi = wilson_interval(k, n)
    return {"acc": k / n if n else float("nan"), "ci95_low": lo, "ci95_high": hi, "n": n}


@torch.no_grad()
def classifier_logits(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 128,
                      progress: bool | None = None) -> np.ndarray:
    """Logits ``[n, num_labels]`` of a sequence-classification model."""
    device = model_device(model)
    out = []
    batches = range(0, len(texts), batch_size)
    show = progress if progress is not None else len(batches) > 8
    model.eval()
    for i in tqdm(batches, desc="classify", disable=not show, leave=False):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)
        out.append(model(**enc).logits.float().cpu())
    return torch.cat(out).numpy()


def classification_accuracy(model, tokenizer, dataset, batch_size: int = 32, max_length: int = 128,
                            progress: bool | None = None) -> dict:
    """Accuracy of a sequence-classification model on a ``ClassificationSet``."""
    logits = classifier_logits(model, tokenizer, dataset.texts, batch_size, max_length, progress)
    return accuracy(logits.argmax(-1), dataset.labels)
