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

``method="full"`` trains every parameter that requires a gradient; ``method="lora"`` trains LoRA
adapters (``peft``, rank ``lora_r``, initialised from ``seed``) on the block linears
(``minilib.train.lora.lora_targets``) and merges them into the weights at the end, so the model keeps
its architecture.  Dev measures during
LoRA training are of the model with its adapters; the merged model is measured once more
(``final_dev_ppl``), and with ``save_to`` it is the merged model that is saved, at the end.

A pruned model stays pruned (``keep_sparsity``, default ``"auto"``; see ``minilib.train.masking``):
the masks of its pruned block linears are captured before training, full fine-tuning masks their
gradients and re-applies the masks after every optimizer step, and the LoRA merge is masked.  After
training every pruned weight is checked to be exactly zero (``SparsityLostError`` otherwise), and
the result reports the sparsity before and after (``sparsity_before``, ``sparsity_after``,
``sparsity``); with ``verbose`` one line says it ("sparsity 0.500 before, 0.500 after ...").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.data.corpora import CorpusError, eval_windows
from minilib.device import model_device, resolve_device
from minilib.eval.perplexity import check_seqlen, check_token_ids, lm_nll, perplexity, to_windows
from minilib.train.checks import (DEFAULT_LR, check_int, check_lora, check_method, check_positive, check_seed,
                                  check_unit)
from minilib.train.masking import SparsityMasks, check_keep_sparsity


@dataclass
class FinetuneResult:
    history: list[dict] = field(default_factory=list)  # one row per step / evaluation
    best_step: int = 0
    best_dev_ppl: float = math.inf
    start_dev_ppl: float = math.inf
    steps: int = 0
    stopped: str = ""
    method: str = "full"
    final_dev_ppl: float = math.inf   # the dev measure of the model as returned (LoRA: merged, zeros kept)
    sparsity_before: float = 0.0      # exact-zero fraction of the masked (pruned) layers, before training
    sparsity_after: float = 0.0       # ... and after
    sparsity: dict = field(default_factory=dict)  # SparsityMasks.report after training, "before": sparsity_before

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.history)


def check_finetune_args(method, seqlen, batch_size, lr, weight_decay, max_epochs, max_steps, warmup_steps,
                        eval_every, dev_windows, target_ppl, lora_r, lora_alpha, lora_dropout, keep_sparsity,
                        seed=0) -> None:
    """Clear errors, before any work, for arguments out of range."""
    check_method(method)
    check_int("seqlen", seqlen, 2)
    check_int("batch_size", batch_size, 1)
    check_positive("lr", lr)
    check_unit("weight_decay", weight_decay)
    check_int("max_epochs", max_epochs, 1)
    check_int("max_steps", max_steps, 1, optional=True)
    check_int("warmup_steps", warmup_steps, 0)
    check_int("eval_every", eval_every, 1)
    check_int("dev_windows", dev_windows, 1, optional=True)
    if target_ppl is not None and (isinstance(target_ppl, bool) or not isinstance(target_ppl, numbers.Real)
                                   or math.isnan(target_ppl)):
        raise ValueError(f"target_ppl must be a number (or None: no early stopping), got {target_ppl!r}")
    if method == "lora":
        check_lora(lora_r, lora_alpha, lora_dropout)
    check_keep_sparsity(keep_sparsity)
    check_seed(seed)


def check_finetune_data(model, train_ids, dev_ids, seqlen, dev_windows, dev_eval) -> torch.Tensor:
    """The training windows ``[n, seqlen]`` of ``train_ids`` (a 1-D LongTensor), every id within the
    model's vocabulary, and (without ``dev_eval``) ``dev_ids`` checked the same way, before any work."""
    check_seqlen(model, seqlen)
    if not isinstance(train_ids, torch.Tensor) or train_ids.dim() != 1:
        got = f"shape {tuple(train_ids.shape)}" if isinstance(train_ids, torch.Tensor) else type(train_ids).__name__
        raise TypeError(f"train_ids must be a 1-D LongTensor of token ids (the train split as one stream), got {got}")
    check_token_ids(model, train_ids, "train_ids")
    if dev_eval is None:
        to_windows(dev_ids, seqlen, dev_windows, model, name="dev_ids")
    elif not callable(dev_eval):
        raise TypeError(f"dev_eval must be a callable model -> float (or None: dev perplexity), got "
                        f"{type(dev_eval).__name__}")
    return eval_windows(train_ids, seqlen)


def finetune(model: nn.Module, train_ids: torch.Tensor, dev_ids: torch.Tensor, target_ppl: float | None = None,
             seqlen: int = 128, batch_size: int = 4, lr: float | None = None, weight_decay: float = 0.0,
             max_epochs: int = 1, max_steps: int | None = 40, warmup_steps: int = 0, eval_every: int = 10,
             dev_windows: int | None = 8, seed: int = 0, save_to=None, tokenizer=None, device=None,
             verbose: bool = True, dev_eval=None, dev_name: str = "dev_ppl", method: str = "full",
             lora_r: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.05,
             keep_sparsity="auto") -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train_ids`` (1-D); see the module docstring.

    ``lr``: None is 5e-5 for ``method="full"`` and 1e-3 for ``"lora"``.  ``max_steps``: an integer
    >= 1, or None (``max_epochs`` epochs).  ``seed``: an integer >= 0.  ``train_ids`` (and ``dev_ids``
    unless ``dev_eval`` is given) must be LongTensors of ids within the model's vocabulary; everything
    is checked before any work.  ``keep_sparsity``: ``"auto"`` (the layers with >= 1%
    exact zeros keep them), ``True`` (every exact zero), ``False`` (none; the report still shows the
    loss).  Raises ``SparsityLostError`` if a weight that should have stayed zero did not."""
    lr = DEFAULT_LR.get(method, DEFAULT_LR["full"]) if lr is None else lr
    check_finetune_args(method, seqlen, batch_size, lr, weight_decay, max_epochs, max_steps, warmup_steps,
                        eval_every, dev_windows, target_ppl, lora_r, lora_alpha, lora_dropout, keep_sparsity, seed)
    windows = check_finetune_data(model, train_ids, dev_ids, seqlen, dev_windows, dev_eval)
    device = model_device(model) if device in (None, "auto") else resolve_device(device)
    if len(windows) < batch_size:
        raise CorpusError(f"train split has {len(windows)} windows of {seqlen}; need at least one batch of "
                          f"{batch_size}")
    masks = SparsityMasks.capture(model, keep_sparsity)
    before = masks.report(model)
    per_epoch = len(windows) // batch_size
    total = per_epoch * max_epochs if max_steps is None else min(max_steps, per_epoch * max_epochs)
    lora = method == "lora"
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    peft_model = None
    if lora:
        from minilib.train.lora import add_lora
        with torch.random.fork_rng(devices=[]):   # the adapters' initialisation follows ``seed``
            torch.manual_seed(seed)
            peft_model = add_lora(model, lora_r, lora_alpha, lora_dropout)   # in place: ``model`` holds them
    try:
        res = _train(model, windows, dev_ids, target_ppl, seqlen, batch_size, lr, weight_decay, max_epochs, total,
                     per_epoch, warmup_steps, eval_every, dev_windows, seed, None if lora else save_to, tokenizer,
                     device, verbose, dev_eval, dev_name, masks if masks.enforced and not lora else None,
                     adapters_only=lora)
    except BaseException:
        if peft_model is not None:   # leave the caller's model as it was given: no adapters, same flags
            from minilib.train.lora import unload_lora
            unload_lora(peft_model)
            _restore_flags(model, grad_flags)
        raise
    res.method = method
    if lora:
        from minilib.train.lora import merge_lora
        merged = merge_lora(peft_model, masks)   # the merged update is masked: zeros stay zeros
        if merged is not model:
            raise RuntimeError("peft returned a new model object on merge; finetune works in place")
        _restore_flags(model, grad_flags)
        res.final_dev_ppl = _dev_measure(model, dev_ids, dev_eval, seqlen, batch_size, dev_windows)
        if save_to is not None:
            from minilib.models.saving import save_model
            save_model(model, tokenizer, save_to, extra={"finetune_step": res.best_step, dev_name: res.final_dev_ppl,
                                                         "method": "lora"})
        if verbose:
            print(f"[finetune] LoRA merged{' (zeros kept)' if masks.enforced else ''}: "
                  f"{dev_name.replace('_', ' ')} {res.final_dev_ppl:.3f}")
    else:
        res.final_dev_ppl = res.best_dev_ppl
    after = masks.report(model)
    res.sparsity_before, res.sparsity_after = before["sparsity"], after["sparsity"]
    res.sparsity = {**after, "before": before["sparsity"], "after": after["sparsity"]}
    if verbose:
        print(f"[finetune] {SparsityMasks.describe(before, after)}")
    masks.check(model, "after fine-tuning")
    return res


def _restore_flags(model: nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


def _dev_measure(model, dev_ids, dev_eval, seqlen, batch_size, dev_windows) -> float:
    if dev_eval is None:
        return perplexity(model, dev_ids, seqlen, batch_size=batch_size, max_windows=dev_windows)
    was_training = model.training
    model.eval()
    try:
        return float(dev_eval(model))
    finally:
        model.train(was_training)


def _train(model, windows, dev_ids, target_ppl, seqlen, batch_size, lr, weight_decay, max_epochs, total, per_epoch,
           warmup_steps, eval_every, dev_windows, seed, save_to, tokenizer, device, verbose, dev_eval, dev_name,
           masks: SparsityMasks | None, adapters_only: bool = False) -> FinetuneResult:
    """The training loop; ``masks``: masked gradients and masks re-applied after every step;
    ``adapters_only``: the best checkpoint holds only the trainable parameters (LoRA adapters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def lr_at(step):  # linear warmup, then cosine to zero over the planned steps
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total - warmup_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    res = FinetuneResult()
    best_state = None
    full_state = not adapters_only

    def evaluate(step, epoch, train_loss):
        nonlocal best_state
        ppl = _dev_measure(model, dev_ids, dev_eval, seqlen, batch_size, dev_windows)
        res.history.append({"step": step, "epoch": epoch, "train_loss": train_loss, dev_name: ppl,
                            "lr": sched.get_last_lr()[0]})
        if step == 0:
            res.start_dev_ppl = ppl
        if ppl < res.best_dev_ppl:
            res.best_dev_ppl, res.best_step = ppl, step
            if full_state:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                best_state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if n in trainable}
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
                if masks is not None:
                    masks.mask_grads(model)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                if masks is not None:
                    masks.apply(model)
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
        model.load_state_dict(best_state, strict=full_state)
    return res
