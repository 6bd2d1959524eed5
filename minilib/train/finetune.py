"""Fine-tuning of a (pruned) language model: AdamW, cosine schedule, early stopping on a dev split.

Training windows are the non-overlapping ``seqlen`` windows of the domain's *train* split, shuffled
per epoch with a seed.  Every ``eval_every`` steps (and before the first step) the perplexity on the
*dev* split is measured; training stops as soon as it is at or below ``target_ppl`` (the unpruned
model's dev perplexity), or after ``max_epochs`` / ``max_steps``.  The best dev checkpoint is kept
(in memory, and on disk with ``save_to``) and restored at the end.

``dev_eval`` replaces dev perplexity by any dev measure where lower is better (a callable
``model -> float``, e.g. bits per byte on fixed dev text, which stays comparable when the model's
tokenizer changes); ``target_ppl`` is then on that measure's scale, and the history rows carry it
under ``dev_name``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.data.corpora import CorpusError, eval_windows
from minilib.device import model_device, resolve_device
from minilib.eval.perplexity import lm_nll, perplexity


@dataclass
class FinetuneResult:
    history: list[dict] = field(default_factory=list)  # one row per step / evaluation
    best_step: int = 0
    best_dev_ppl: float = math.inf
    start_dev_ppl: float = math.inf
    steps: int = 0
    stopped: str = ""

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.history)


def finetune(model: nn.Module, train_ids: torch.Tensor, dev_ids: torch.Tensor, target_ppl: float | None = None,
             seqlen: int = 128, batch_size: int = 4, lr: float = 5e-5, weight_decay: float = 0.0,
             max_epochs: int = 1, max_steps: int | None = 40, warmup_steps: int = 0, eval_every: int = 10,
             dev_windows: int = 8, seed: int = 0, save_to=None, tokenizer=None, device=None,
             verbose: bool = True, dev_eval=None, dev_name: str = "dev_ppl") -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train_ids`` (1-D); see the module docstring."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    device = model_device(model) if device in (None, "auto") else resolve_device(device)
    windows = eval_windows(train_ids, seqlen)
    if len(windows) < batch_size:
        raise CorpusError(f"train split has {len(windows)} windows of {seqlen}; need at least one batch of "
                          f"{batch_size}")
    per_epoch = len(windows) // batch_size
    total = per_epoch * max_epochs if max_steps is None else min(max_steps, per_epoch * max_epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_at(step):  # linear warmup, then cosine to zero over the planned steps
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total - warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    res = FinetuneResult()
    best_state = None

    def evaluate(step, epoch, train_loss):
        nonlocal best_state
        if dev_eval is not None:
            was_training = model.training
            model.eval()
            try:
                ppl = float(dev_eval(model))
            finally:
                model.train(was_training)
        else:
            ppl = perplexity(model, dev_ids, seqlen, batch_size=batch_size, max_windows=dev_windows)
        res.history.append({"step": step, "epoch": epoch, "train_loss": train_loss, dev_name: ppl,
                            "lr": sched.get_last_lr()[0]})
        if step == 0:
            res.start_dev_ppl = ppl
        if ppl < res.best_dev_ppl:
            res.best_dev_ppl, res.best_step = ppl, step
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if save_to is not None:
                from minilib.models.saving import save_model
                save_model(model, tokenizer, save_to, extra={"finetune_step": step, dev_name: ppl})
        if verbose:
            print(f"[finetune] step {step:4d}  train loss {train_loss if train_loss is not None else float('nan'):.3f}  "
                  f"{dev_name.replace('_', ' ')} {ppl:.3f}" + (f" (target {target_ppl:.3f})" if target_ppl else ""))
        return target_ppl is not None and ppl <= target_ppl

    g = torch.Generator().manual_seed(seed)
    step, done = 0, evaluate(0, 0, None)
    res.stopped = "dev perplexity at target before training" if done else ""
    model.train()
    try:
        for epoch in range(max_epochs):
            if done or step >= total:
                break
            order = torch.randperm(len(windows), generator=g)
            for b in range(per_epoch):
                if step >= total:
                    break
                x = windows[order[b * batch_size:(b + 1) * batch_size]].to(device)
                loss = lm_nll(model, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                res.history.append({"step": step, "epoch": epoch, "train_loss": loss.item(), dev_name: None,
                                    "lr": sched.get_last_lr()[0]})
                if step % eval_every == 0 or step == total:
                    if evaluate(step, epoch, loss.item()):
                        done = True
                        res.stopped = f"dev perplexity reached the target at step {step}"
                        break
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
    res.steps = step
    if not res.stopped:
        res.stopped = f"budget spent ({step} steps, {max_epochs} epoch(s) max)"
    if best_state is not None:
        model.load_state_dict(best_state)
    return res
