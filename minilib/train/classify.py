"""Task fine-tuning for the decision task: the whole model (``method="full"``) or a LoRA adapter
(``method="lora"``, through ``peft``), trained together with a linear decision head.

The classifier is the model's decision state -- the output of ``adapter.base(model)`` at the
decision token (``[CLS]`` for encoders, the last token for decoders, i.e. after the final norm) --
read by one ``nn.Linear``: the same head form as the head-only protocol (``minilib.train.heads``),
so every evaluation (``minilib.eval.decision``) and the anatomy work unchanged on the fine-tuned
model, whose own trained head is its decision head.  (The original study put a dropout and a
100-unit dense layer between the state and the output; a linear head keeps "the vector the head
reads" well defined.)

Training: AdamW, linear warm-up then linear decay, gradient clipping at 1, shuffled batches from a
seeded generator; the model is copied first (the caller's model is never changed).  A LoRA adapter
is merged into the weights at the end, so the result is a plain model of the same architecture.

A pruned model stays pruned (``keep_sparsity``, default ``"auto"``; see ``minilib.train.masking``):
full fine-tuning masks the gradients of the pruned weights and re-applies the masks after every
optimizer step; the LoRA merge is masked (the merged update ``B A`` is zero at the pruned
positions, so the merged model differs from the adapter-augmented one there).  ``info`` reports the
sparsity before and after (``sparsity_before``, ``sparsity_after``, ``sparsity``), and a pruned
weight that is not exactly zero after training raises ``SparsityLostError``.
The result is cached (``minilib.models.save_model``: safetensors + plan + head) under
``$MINILIB_CACHE/finetuned/<key>``, the key naming the model's weights, the dataset and split, the
template, the hyper-parameters and the head initialisation, so reruns reuse it.

    ft, head, info = finetuned_classifier(loaded, task, ClassifierConfig(method="lora", epochs=1), n_train=300)
    decision_accuracy(ft.model, ft.tokenizer, head, task, "test")
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minilib import assets
from minilib.data.tasks import check_training_data
from minilib.determinism import seeded
from minilib.device import model_device
from minilib.eval.decision import DecisionTask
from minilib.models.adapters import adapter_for
from minilib.train.checks import DEFAULT_LR, METHODS
from minilib.train.config import ClassifierConfig, check_n_train
from minilib.train.heads import model_fingerprint
from minilib.train.lora import add_lora, lora_targets, merge_lora
from minilib.train.masking import SparsityMasks

__all__ = ["DEFAULT_LR", "METHODS", "ClassifierConfig", "DecisionClassifier", "finetune_classifier", "finetune_key",
           "finetuned_classifier", "lora_targets"]


class DecisionClassifier(nn.Module):
    """``model``'s decision state read by a linear ``head``: logits ``(B, classes)``."""

    def __init__(self, model: nn.Module, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head
        self.adapter = adapter_for(model)

    def forward(self, **enc) -> torch.Tensor:
        h = self.adapter.base(self.model)(**enc).last_hidden_state                        # (B, T, H)
        pos = self.adapter.decision_positions(enc["attention_mask"])
        return self.head(h[torch.arange(h.shape[0], device=h.device), pos])             # (B, C)


def finetune_key(model, task: DecisionTask, n_train: int, max_length: int, hparams: dict,
                 init_head: nn.Linear | None) -> str:
    """Cache key: the model's weights, the dataset and split, the template, the hyper-parameters and
    the head initialisation."""
    def raw(t):
        return t.detach().double().cpu().numpy().tobytes()
    init = "random" if init_head is None else hashlib.sha1(raw(init_head.weight) + raw(init_head.bias)).hexdigest()[:12]
    spec = {"fingerprint": model_fingerprint(model), "dataset": task.dataset, "seed": task.seed, "n_train": n_train,
            "labels_sum": int(np.asarray(task.train.labels[:n_train]).sum()), "template": task.template,
            "max_length": max_length, "hparams": hparams, "init_head": init, "v": 2}  # v2: saved with a content manifest
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def finetune_classifier(model: nn.Module, tokenizer, texts: list[str], labels, config: ClassifierConfig | None = None,
                        *, init_head: nn.Linear | None = None, verbose: bool = True,
                        **settings) -> tuple[nn.Module, nn.Linear, dict]:
    """Fine-tune a copy of ``model`` with a linear head on ``texts`` (already templated) and
    ``labels`` with the hyper-parameters ``config`` (a ``ClassifierConfig``; None: its defaults), any
    ``settings`` by name replacing its fields (``method="lora", epochs=2``; an unknown name is a
    ``TypeError``); returns ``(model, head, info)`` in eval mode (a LoRA adapter merged in, its update
    masked so that pruned weights stay zero).  ``init_head``: the head to start from (else a small
    random one).  ``info``: hyper-parameters, steps, seconds, the training loss per step, and the
    sparsity before and after (``keep_sparsity``: ``"auto"``, ``True`` or ``False``, as in
    ``minilib.train.masking``).  Raises ``SparsityLostError`` if a pruned weight is not exactly zero
    after training."""
    cfg = ClassifierConfig.build(config, "finetune_classifier", **settings)
    check_training_data(texts, labels, None if init_head is None else init_head.out_features, "finetune_classifier")
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(texts) != len(y_all) or len(texts) < 2:
        raise ValueError(f"need >= 2 texts with one label each, got {len(texts)} texts and {len(y_all)} labels")
    n_cls = int(y_all.max()) + 1
    device = model_device(model)
    g = torch.Generator().manual_seed(cfg.seed)
    with seeded(cfg.seed, device):   # head initialisation and dropout follow ``seed``; the caller's draws are kept
        work = copy.deepcopy(model)
        head = _start_head(init_head, n_cls, int(work.config.hidden_size), device)
        masks = SparsityMasks.capture(work, cfg.keep_sparsity)
        before = masks.report(work)
        peft_model = None
        if cfg.method == "lora":
            peft_model = add_lora(work, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)   # into ``work``, the rest frozen
        else:
            for p in work.parameters():
                p.requires_grad_(True)
        t0 = time.perf_counter()
        losses = _train_classifier(DecisionClassifier(work, head), tokenizer, texts, y_all, cfg, g, device,
                                   masks if masks.enforced and cfg.method == "full" else None, verbose)
        if peft_model is not None:
            work = merge_lora(peft_model, masks)   # the merged update is masked: zeros stay zeros
        after = masks.report(work)
        if verbose:
            print(f"[finetune-classifier] {SparsityMasks.describe(before, after)}", flush=True)
        masks.check(work, f"after {cfg.method} fine-tuning")
        for p in [*work.parameters(), *head.parameters()]:
            p.requires_grad_(False)
    info = {"method": cfg.method, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.learning_rate,
            "head_lr": cfg.head_lr, "weight_decay": cfg.weight_decay, "warmup": cfg.warmup, "n_train": len(texts),
            "max_length": cfg.max_length, "seed": cfg.seed, "steps": len(losses), "seconds": time.perf_counter() - t0,
            "loss": losses, "init_head": "given" if init_head is not None else "random",
            "sparsity_before": before["sparsity"], "sparsity_after": after["sparsity"],
            "sparsity": {**after, "before": before["sparsity"], "after": after["sparsity"]}}
    if cfg.method == "lora":
        info.update({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                     "lora_targets": lora_targets(work)})
    return work.eval(), head.eval(), info


def _start_head(init_head: nn.Linear | None, n_cls: int, hidden: int, device) -> nn.Linear:
    """A copy of ``init_head`` (shape checked), else a linear head initialised N(0, 0.02), bias 0."""
    if init_head is not None:
        if tuple(init_head.weight.shape) != (n_cls, hidden):
            raise ValueError(f"init_head has shape {tuple(init_head.weight.shape)}, the task needs "
                             f"({n_cls}, {hidden})")
        return copy.deepcopy(init_head).float().to(device)
    head = nn.Linear(hidden, n_cls).to(device)
    nn.init.normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


def _train_classifier(clf: DecisionClassifier, tokenizer, texts, y_all, cfg: ClassifierConfig, g, device,
                      grad_masks: SparsityMasks | None, verbose: bool) -> list[float]:
    """The training loop (AdamW, linear warm-up then linear decay, clipping at 1); the loss per step.
    ``grad_masks``: gradients masked and masks re-applied after every step."""
    work, head = clf.model, clf.head
    body = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": body, "lr": cfg.learning_rate},
                             {"params": list(head.parameters()), "lr": cfg.head_lr}], weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    n_warm = int(round(cfg.warmup * total))

    def factor(step):  # linear warm-up, then linear decay to zero
        if step < n_warm:
            return (step + 1) / (n_warm + 1)
        return max(0.0, (total - step) / max(1, total - n_warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses, step, bs = [], 0, cfg.batch_size
    clf.train()
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(texts), generator=g)
            for b in range(per_epoch):
                idx = order[b * bs:(b + 1) * bs].tolist()
                enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                max_length=cfg.max_length).to(device)
                loss = nn.functional.cross_entropy(clf(**enc), y_all[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_masks is not None:
                    grad_masks.mask_grads(work)
                torch.nn.utils.clip_grad_norm_(body + list(head.parameters()), 1.0)
                opt.step()
                if grad_masks is not None:
                    grad_masks.apply(work)
                sched.step()
                step += 1
                losses.append(float(loss.item()))
                if verbose and (step % max(1, total // 10) == 0 or step == total):
                    print(f"[finetune-classifier] {cfg.method} step {step}/{total} epoch {epoch}  "
                          f"loss {np.mean(losses[-per_epoch:]):.4f}", flush=True)
    finally:
        clf.eval()
        opt.zero_grad(set_to_none=True)
    return losses


def cache_hparams(cfg: ClassifierConfig, zeros_kept: bool) -> dict:
    """The hyper-parameters in the cache key (as they always were: LoRA fields for LoRA only,
    ``keep_sparsity`` only when pruned zeros are kept, so dense models keep their keys)."""
    hp = {"method": cfg.method, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.learning_rate,
          "head_lr": cfg.head_lr, "weight_decay": cfg.weight_decay, "warmup": cfg.warmup, "seed": cfg.seed}
    if cfg.method == "lora":
        hp.update({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout})
    if zeros_kept:   # training differs from the mask-less one only then (dense models keep their keys)
        hp["keep_sparsity"] = cfg.keep_sparsity
    return hp


def finetuned_classifier(loaded, task: DecisionTask, config: ClassifierConfig | None = None, *,
                         n_train: int | None = None, init_head: nn.Linear | None = None,
                         directory: str | Path | None = None, cache: bool = True, verbose: bool = True, **settings):
    """The fine-tuned classifier of ``loaded`` (a ``LoadedModel``) on the first ``n_train`` examples
    of ``task.train`` (all of them with None), from the cache when present, else trained and stored.
    ``config`` / ``settings``: the hyper-parameters, as for ``finetune_classifier``; the training seed
    is the task's (``task.seed``; a ``seed`` setting is refused).

    Returns ``(ft, head, info)``: ``ft`` a ``LoadedModel`` of the fine-tuned weights (its ``name`` says
    so, so caches keyed by name never mix it with the base model), ``head`` its decision head,
    ``info`` with ``cached``, ``key``, ``path`` and the training record (sparsity included).

    When the model has pruned layers whose zeros are kept (``keep_sparsity``), the cache key says
    so: a classifier cached before zeros were kept (or with ``keep_sparsity=False``) is not reused;
    a cached model that lost a pruned weight raises ``SparsityLostError``."""
    from minilib.models.saving import load_model, save_model
    if "seed" in settings:
        raise TypeError("finetuned_classifier: the training seed is the task's (task.seed); no seed setting")
    cfg = ClassifierConfig.build(config, "finetuned_classifier", **settings).replace(seed=task.seed)
    check_n_train(n_train)
    n = len(task.train) if n_train is None else min(int(n_train), len(task.train))
    masks = SparsityMasks.capture(loaded.model, cfg.keep_sparsity)
    key = finetune_key(loaded.model, task, n, cfg.max_length, cache_hparams(cfg, masks.enforced), init_head)
    path = (Path(directory) if directory else assets.cache_dir() / "finetuned") / key
    device = model_device(loaded.model)
    if cache and (path / "minilib_plan.json").is_file():
        ft = load_model(path, device=device)
        if ft.head is None:
            raise ValueError(f"{path} holds no decision head; delete the folder to fine-tune again")
        ft.name = f"{loaded.name}+ft-{cfg.method}-{key[:8]}"
        masks.check(ft.model, f"in the cached classifier {path}")
        rec = ft.plan.get("extra", {}).get("finetune", {})
        return ft, ft.head, {**rec, "cached": True, "key": key, "path": str(path)}
    texts, labels = task.texts("train")[:n], np.asarray(task.train.labels[:n])
    model, head, rec = finetune_classifier(loaded.model, loaded.tokenizer, texts, labels, cfg, init_head=init_head,
                                           verbose=verbose)
    rec = {**rec, "base_model": loaded.name, "dataset": task.dataset}
    if cache:
        save_model(model, loaded.tokenizer, path, extra={"finetune": rec}, head=head, overwrite=False)
    from minilib.models.loading import LoadedModel
    ft = LoadedModel(model, loaded.tokenizer, loaded.adapter, f"{loaded.name}+ft-{cfg.method}-{key[:8]}")
    return ft, head, {**rec, "cached": False, "key": key, "path": str(path)}
