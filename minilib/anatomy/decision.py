"""The decision task: a labelled classification set, read at the decision token.

The decision is taken by a linear head on the final hidden state of the decision token
(``adapter.decision_positions``: ``[CLS]`` for encoders, the last token for decoders), the output of
``adapter.base(model)``.  The head is trained **head-only** (the transformer is frozen): logistic
regression on those features, for both families.  It is cached in the asset cache as safetensors
(key: model name and weights, dataset, split, template), so reruns do not retrain.

    task = decision_task("sarcasm", n_train=2000, n_test=2000, seed=0)
    head, info = trained_head(loaded, task)
    decision_accuracy(model, tokenizer, head, task.test, template=task.template)   # Wilson CI
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minilib import assets
from minilib.data.tasks import ClassificationSet, SchemaError, load_classification
from minilib.eval.classify import accuracy
from minilib.models.adapters import adapter_for

HEAD_FILE = "decision_head.safetensors"


@dataclass
class DecisionTask:
    """Disjoint, seeded train/test parts of a labelled set, and how texts are shown to the model."""

    dataset: str
    train: ClassificationSet
    test: ClassificationSet
    template: str = "{text}"
    seed: int = 0
    info: dict = field(default_factory=dict)

    def texts(self, part: str) -> list[str]:
        return [self.template.format(text=t) for t in getattr(self, part).texts]


def check_labels(ds: ClassificationSet, name: str = "dataset") -> None:
    labels = getattr(ds, "labels", None)
    if labels is None or len(labels) != len(ds.texts):
        raise SchemaError(f"{name} has no labels for the task ({0 if labels is None else len(labels)} labels "
                          f"for {len(ds.texts)} texts)")
    if len(np.unique(labels)) < 2:
        raise SchemaError(f"{name}: the task needs at least two classes, found {np.unique(labels).tolist()}")


def decision_task(dataset: str | ClassificationSet, n_train: int = 2000, n_test: int = 2000, seed: int = 0,
                  test_fraction: float = 0.2, template: str = "{text}") -> DecisionTask:
    """Split ``dataset`` (a name/path for ``load_classification`` or a ``ClassificationSet``) into
    disjoint seeded train/test parts of at most ``n_train`` / ``n_test`` examples."""
    if "{text}" not in template:
        raise ValueError(f"template must contain '{{text}}', got {template!r}")
    name = dataset if isinstance(dataset, str) else "custom"
    ds = load_classification(dataset) if isinstance(dataset, str) else dataset
    check_labels(ds, name)
    train, test = ds.split(test_fraction, seed)
    train = train.subset(np.arange(min(n_train, len(train))))
    test = test.subset(np.arange(min(n_test, len(test))))
    return DecisionTask(name, train, test, template, seed,
                        {"n_train": len(train), "n_test": len(test), "n_total": len(ds),
                         "label_names": list(ds.label_names)})


def _batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
    """Batches in order of length (little padding); yields (original indices, encoding)."""
    lengths = [len(t) for t in texts]
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(texts), batch_size):
        idx = order[i:i + batch_size]
        enc = tokenizer([texts[j] for j in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        yield idx, enc


@torch.no_grad()
def decision_features(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 128) -> torch.Tensor:
    """Final hidden state at the decision token, ``[n, hidden]`` (fp32, CPU)."""
    adapter = adapter_for(model)
    base = adapter.base(model)
    device = next(model.parameters()).device
    out = torch.empty(len(texts), model.config.hidden_size)
    model.eval()
    for idx, enc in _batches(tokenizer, texts, batch_size, max_length):
        enc = enc.to(device)
        h = base(**enc).last_hidden_state                                   # (B, T, H)
        pos = adapter.decision_positions(enc["attention_mask"])
        out[torch.as_tensor(idx)] = h[torch.arange(len(idx), device=device), pos].float().cpu()
    return out


def fit_head(features: torch.Tensor, labels, l2: float = 0.1, max_iter: int = 200, seed: int = 0) -> nn.Linear:
    """Logistic regression (L-BFGS, fp32) on standardised features, folded back into one ``nn.Linear``."""
    torch.manual_seed(seed)
    x = features.float()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows for {len(y)} labels")
    n_cls = int(y.max()) + 1
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


def save_head(head: nn.Linear, path: str | Path, meta: dict | None = None) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
              str(tmp), metadata={k: str(v) for k, v in (meta or {}).items()})
    tmp.replace(path)
    return path


def load_head(path: str | Path) -> nn.Linear:
    from safetensors.torch import load_file
    t = load_file(str(path))
    head = nn.Linear(t["weight"].shape[1], t["weight"].shape[0])
    with torch.no_grad():
        head.weight.copy_(t["weight"])
        head.bias.copy_(t["bias"])
    return head.eval()


def trained_head(loaded, task: DecisionTask, batch_size: int = 32, max_length: int = 128, l2: float = 0.1,
                 features: torch.Tensor | None = None, cache: bool = True) -> tuple[nn.Linear, dict]:
    """The head-only classifier for ``task`` on ``loaded`` (a ``LoadedModel``), from the cache when
    present.  ``features`` (of ``task.train``) skips the feature pass, e.g. when they came from
    ``collect_anatomy``.  Returns ``(head, info)``; ``info["cached"]`` says whether it was reused."""
    model, tok = loaded.model, loaded.tokenizer
    key = head_key(model, task, max_length, l2)
    path = assets.cache_dir() / "heads" / f"{key}.safetensors"
    device = next(model.parameters()).device
    if cache and path.is_file():
        return load_head(path).to(device), {"cached": True, "path": str(path), "key": key}
    if features is None:
        features = decision_features(model, tok, task.texts("train"), batch_size, max_length)
    head = fit_head(features, task.train.labels, l2)
    train_acc = float((head(features).argmax(-1).numpy() == task.train.labels).mean())
    if cache:
        save_head(head, path, {"model": loaded.name, "dataset": task.dataset, "train_acc": train_acc})
    return head.to(device), {"cached": False, "path": str(path), "key": key, "train_acc": train_acc}


@torch.no_grad()
def decision_logits(model, tokenizer, head: nn.Linear, texts: list[str], batch_size: int = 32,
                    max_length: int = 128) -> np.ndarray:
    """Head logits ``[n, classes]`` at the decision token (texts already templated)."""
    feats = decision_features(model, tokenizer, texts, batch_size, max_length)
    head_cpu = head.to("cpu")
    return head_cpu(feats).numpy()


def decision_accuracy(model, tokenizer, head: nn.Linear, task: DecisionTask, part: str = "test",
                      batch_size: int = 32, max_length: int = 128) -> dict:
    """Accuracy with its 95% Wilson interval: ``{acc, ci95_low, ci95_high, n}``."""
    device = next(model.parameters()).device
    logits = decision_logits(model, tokenizer, head, task.texts(part), batch_size, max_length)
    head.to(device)
    return accuracy(logits.argmax(-1), getattr(task, part).labels)
