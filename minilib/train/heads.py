"""Task heads: a linear classifier on the frozen model's decision token, trained head-only.

Logistic regression (L-BFGS, fp32) on the decision features of ``minilib.eval.decision``, cached in
``$MINILIB_CACHE/heads`` as safetensors (key: the model's weights, dataset, split, template), so that
reruns do not retrain.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

from minilib import assets
from minilib.device import model_device
from minilib.data.tasks import SchemaError, check_labels_array
from minilib.eval.decision import DecisionTask, decision_features
from minilib.models.saving import load_head, save_head
from minilib.train.checks import check_int, check_nonnegative, check_seed


def fit_head(features: torch.Tensor, labels, l2: float = 0.1, max_iter: int = 200, seed: int = 0) -> nn.Linear:
    """Logistic regression (L-BFGS, fp32) on standardised features, folded back into one ``nn.Linear``.
    ``l2`` >= 0, ``max_iter`` >= 1, ``seed`` an integer >= 0."""
    check_nonnegative("l2", l2)
    check_int("max_iter", max_iter, 1)
    torch.manual_seed(check_seed(seed))
    x = features.float()
    y = torch.as_tensor(check_labels_array(labels, len(x), "fit_head: labels"), dtype=torch.long)
    n_cls = int(y.max()) + 1
    missing = sorted(set(range(n_cls)) - set(y.unique().tolist()))
    if n_cls < 2 or missing:
        raise SchemaError(f"fit_head: labels must hold every class 0..{max(n_cls, 2) - 1} (at least two), got "
                          f"{sorted(set(y.tolist()))[:10]}: a class without an example gets an output nothing trains")
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    lin = nn.Linear(x.shape[1], n_cls)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(lin(z), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head = nn.Linear(x.shape[1], n_cls)
    with torch.no_grad():
        head.weight.copy_(lin.weight / sd)
        head.bias.copy_(lin.bias - (lin.weight / sd) @ mu)
    return head.eval()


def model_fingerprint(model) -> str:
    """A short hash of the model's parameter names, shapes and sums (identifies the weights)."""
    h = hashlib.sha1()
    for name, p in model.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)}:{float(p.double().sum()):.6e};".encode())
    return h.hexdigest()[:16]


def head_key(model, task: DecisionTask, max_length: int, l2: float) -> str:
    spec = {"fingerprint": model_fingerprint(model), "dataset": task.dataset, "seed": task.seed,
            "n_train": len(task.train), "template": task.template, "max_length": max_length, "l2": l2,
            "labels_sum": int(task.train.labels.sum()), "v": 1}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def trained_head(loaded, task: DecisionTask, batch_size: int = 32, max_length: int = 128, l2: float = 0.1,
                 features: torch.Tensor | None = None, cache: bool = True) -> tuple[nn.Linear, dict]:
    """The head-only classifier for ``task`` on ``loaded`` (a ``LoadedModel``), from the cache when
    present.  ``features`` (of ``task.train``) skips the feature pass, e.g. when they came from
    ``collect_anatomy``.  Returns ``(head, info)``; ``info["cached"]`` says whether it was reused."""
    model, tok = loaded.model, loaded.tokenizer
    key = head_key(model, task, max_length, l2)
    path = assets.cache_dir() / "heads" / f"{key}.safetensors"
    device = model_device(model)
    if cache and path.is_file():
        return load_head(path).to(device), {"cached": True, "path": str(path), "key": key}
    if features is None:
        features = decision_features(model, tok, task.texts("train"), batch_size, max_length)
    head = fit_head(features, task.train.labels, l2)
    train_acc = float((head(features).argmax(-1).numpy() == task.train.labels).mean())
    if cache:
        save_head(head, path, {"model": loaded.name, "dataset": task.dataset, "train_acc": train_acc})
    return head.to(device), {"cached": False, "path": str(path), "key": key, "train_acc": train_acc}


