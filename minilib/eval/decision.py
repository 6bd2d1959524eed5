"""The decision task: a labelled classification set, read at the decision token.

The decision is taken by a linear head on the final hidden state of the decision token
(``adapter.decision_positions``: ``[CLS]`` for encoders, the last token for decoders), the output of
``adapter.base(model)`` -- for decoders the state after the final norm, which is what the LM head
reads.  Heads are trained by ``minilib.train.heads`` (head-only logistic regression, cached).

    task = decision_task("sarcasm", n_train=2000, n_test=2000, seed=0)
    head, info = trained_head(loaded, task)                    # minilib.train.heads
    decision_accuracy(model, tokenizer, head, task, "test")   # Wilson 95% interval
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from minilib.data.tasks import ClassificationSet, SchemaError, check_labels_array, load_classification
from minilib.device import model_device
from minilib.eval.classify import accuracy
from minilib.models.adapters import adapter_for


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


def length_sorted_batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
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
    device = model_device(model)
    out = torch.empty(len(texts), model.config.hidden_size)
    model.eval()
    for idx, enc in length_sorted_batches(tokenizer, texts, batch_size, max_length):
        enc = enc.to(device)
        h = base(**enc).last_hidden_state                                   # (B, T, H)
        pos = adapter.decision_positions(enc["attention_mask"])
        out[torch.as_tensor(idx)] = h[torch.arange(len(idx), device=device), pos].float().cpu()
    return out


@torch.no_grad()
def decision_logits(model, tokenizer, head: nn.Linear, texts: list[str], batch_size: int = 32,
                    max_length: int = 128) -> np.ndarray:
    """Head logits ``[n, classes]`` at the decision token (texts already templated)."""
    feats = decision_features(model, tokenizer, texts, batch_size, max_length)
    w, b = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
    return nn.functional.linear(feats, w, b).numpy()


def decision_accuracy(model, tokenizer, head: nn.Linear, task: DecisionTask, part: str = "test",
                      batch_size: int = 32, max_length: int = 128, return_correct: bool = False) -> dict:
    """Accuracy with its 95% Wilson interval: ``{acc, ci95_low, ci95_high, n}``; with
    ``return_correct`` also ``correct``, the per-example correctness (bool ``[n]``, in the order of
    ``task.<part>``) that paired tests (McNemar, paired bootstrap) between two models need."""
    texts = task.texts(part)
    # a label the head cannot output would only ever count as wrong: refused before any forward
    labels = check_labels_array(getattr(task, part).labels, len(texts), f"the {part} labels of {task.dataset!r}",
                                int(head.out_features))
    logits = decision_logits(model, tokenizer, head, texts, batch_size, max_length)
    pred = logits.argmax(-1)
    out = accuracy(pred, labels)
    if return_correct:
        out["correct"] = np.asarray(pred) == np.asarray(labels)
    return out
