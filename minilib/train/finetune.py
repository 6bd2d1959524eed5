"""Fine-tuning of a (pruned) language model: AdamW, cosine schedule, early stopping on a dev split.

Training windows are the non-overlapping ``seqlen`` windows of the domain's *train* split, shuffled
per epoch with ``seed``; dropout (the model's and LoRA's) draws from generators seeded with ``seed``
too, so a run is the same whatever the caller drew before, and the caller's global generators are
left as they were.  Every ``eval_every`` steps (and before the first step) the perplexity on the
*dev* split is measured; training stops as soon as it is at or below ``target_ppl`` (the unpruned
model's dev perplexity), or after ``max_epochs`` / ``max_steps``.  The best dev checkpoint is kept
(in memory, and on disk with ``save_to``) and restored at the end.

The hyper-parameters are one ``FinetuneConfig`` (``minilib.train.config``, checked when made); the
model, the data and the runtime (``device``, ``verbose``, ``save_to``, ``dev_eval``) are arguments:

    cfg = FinetuneConfig(seqlen=64, batch_size=4, max_steps=20, eval_every=5, method="lora")
    res = finetune(model, train_ids, dev_ids, cfg, verbose=False)
    res = finetune(model, train_ids, dev_ids, seqlen=64, max_steps=20)   # fields by name: the same

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
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from minilib.data.corpora import CorpusError, eval_windows
from minilib.determinism import seeded
from minilib.device import model_device, resolve_device
from minilib.eval.perplexity import check_seqlen, check_token_ids, lm_nll, perplexity, to_windows
from minilib.train.config import FinetuneConfig
from minilib.train.masking import SparsityMasks

__all__ = ["FinetuneConfig", "FinetuneResult", "check_finetune_data", "finetune"]


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


def finetune(model: nn.Module, train_ids: torch.Tensor, dev_ids: torch.Tensor, config: FinetuneConfig | None = None,
             *, save_to=None, tokenizer=None, device=None, verbose: bool = True, dev_eval=None,
             dev_name: str = "dev_ppl", **settings) -> FinetuneResult:
    """Fine-tune ``model`` in place on ``train_ids`` (1-D) with the hyper-parameters ``config`` (a
    ``FinetuneConfig``; None: its defaults), any ``settings`` by name replacing its fields
    (``finetune(m, train, dev, seqlen=64, method="lora")``; an unknown name is a ``TypeError``); see
    the module docstring.

    ``train_ids`` (and ``dev_ids`` unless ``dev_eval`` is given) must be LongTensors of ids within the
    model's vocabulary; everything is checked before any work.  ``save_to``: the best checkpoint
    (LoRA: the merged model, at the end), with ``tokenizer``.  ``device``: None is the model's own;
    ``"auto"`` means what it means everywhere (``minilib.device.resolve_device``: CUDA when present,
    else the CPU), and the model is moved there.  Raises ``SparsityLostError`` if a weight that should have stayed zero did not."""
    cfg = FinetuneConfig.build(config, "finetune", **settings)
    windows = check_finetune_data(model, train_ids, dev_ids, cfg.seqlen, cfg.dev_windows, dev_eval)
    device = model_device(model) if device is None else resolve_device(device)
    if model_device(model) != device:
        model.to(device)   # fine-tuned in place: it stays where it was trained
    if len(windows) < cfg.batch_size:
        raise CorpusError(f"train split has {len(windows)} windows of {cfg.seqlen}; need at least one batch of "
                          f"{cfg.batch_size}")
    masks = SparsityMasks.capture(model, cfg.keep_sparsity)
    before = masks.report(model)
    lora = cfg.method == "lora"
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    peft_model = _attach_lora(model, cfg) if lora else None
    run = _Run(dev_ids, dev_eval, dev_name, None if lora else save_to, tokenizer, device, verbose)
    try:
        with seeded(cfg.seed, device):
            res = _train(model, windows, cfg, run, masks if masks.enforced and not lora else None, adapters_only=lora)
    except BaseException:
        if peft_model is not None:   # leave the caller's model as it was given: no adapters, same flags
            from minilib.train.lora import unload_lora
            unload_lora(peft_model)
            _restore_flags(model, grad_flags)
        raise
    res.method = cfg.method
    if lora:
        _merge_lora(model, peft_model, masks, grad_flags, res, cfg, run._replace(save_to=save_to))
    else:
        res.final_dev_ppl = res.best_dev_ppl
    _report_sparsity(model, masks, before, res, verbose)
    return res


class _Run(NamedTuple):
    """What a run measures and where it goes (everything of ``finetune`` but the model, data and config)."""
    dev_ids: torch.Tensor | None
    dev_eval: object
    dev_name: str
    save_to: object
    tokenizer: object
    device: object
    verbose: bool


def _planned_steps(cfg: FinetuneConfig, windows: torch.Tensor) -> tuple[int, int]:
    """``(total, per_epoch)``: the steps planned (``max_steps`` capped by ``max_epochs`` epochs) and per epoch."""
    per_epoch = len(windows) // cfg.batch_size
    total = per_epoch * cfg.max_epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.max_epochs)
    return total, per_epoch


def _attach_lora(model: nn.Module, cfg: FinetuneConfig):
    """LoRA adapters added to ``model`` in place, initialised from ``cfg.seed``; the peft model."""
    from minilib.train.lora import add_lora
    with seeded(cfg.seed):   # the adapters' initialisation follows ``seed``
        return add_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)   # in place: ``model`` holds them


def _merge_lora(model, peft_model, masks, grad_flags, res: FinetuneResult, cfg: FinetuneConfig, run: _Run) -> None:
    """Merge the adapters into ``model`` (masked: zeros stay zeros), measure it once more, save it."""
    from minilib.train.lora import merge_lora
    merged = merge_lora(peft_model, masks)   # the merged update is masked: zeros stay zeros
    if merged is not model:
        raise RuntimeError("peft returned a new model object on merge; finetune works in place")
    _restore_flags(model, grad_flags)
    res.final_dev_ppl = _dev_measure(model, cfg, run)
    if run.save_to is not None:
        from minilib.models.saving import save_model
        save_model(model, run.tokenizer, run.save_to, extra={"finetune_step": res.best_step,
                                                             run.dev_name: res.final_dev_ppl, "method": "lora"})
    if run.verbose:
        print(f"[finetune] LoRA merged{' (zeros kept)' if masks.enforced else ''}: "
              f"{run.dev_name.replace('_', ' ')} {res.final_dev_ppl:.3f}")


def _report_sparsity(model, masks: SparsityMasks, before: dict, res: FinetuneResult, verbose: bool) -> None:
    """The sparsity before and after into ``res``; ``SparsityLostError`` if a kept zero was lost."""
    after = masks.report(model)
    res.sparsity_before, res.sparsity_after = before["sparsity"], after["sparsity"]
    res.sparsity = {**after, "before": before["sparsity"], "after": after["sparsity"]}
    if verbose:
        print(f"[finetune] {SparsityMasks.describe(before, after)}")
    masks.check(model, "after fine-tuning")


def _restore_flags(model: nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


def _dev_measure(model, cfg: FinetuneConfig, run: _Run) -> float:
    if run.dev_eval is None:
        return perplexity(model, run.dev_ids, cfg.seqlen, batch_size=cfg.batch_size, max_windows=cfg.dev_windows)
    was_training = model.training
    model.eval()
    try:
        return float(run.dev_eval(model))
    finally:
        model.train(was_training)


def _lr_factor(warmup_steps: int, total: int):
    """The schedule: linear warmup, then cosine to zero over the ``total`` planned steps."""
    def lr_at(step):
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total - warmup_steps)))
    return lr_at


class _BestCheckpoint:
    """The dev evaluations: history rows, the start and best dev measure, the best state (in memory;
    on disk with ``run.save_to``) and whether the target is reached.  ``adapters_only``: the state
    holds only the trainable parameters (LoRA adapters)."""

    def __init__(self, model, cfg: FinetuneConfig, run: _Run, res: FinetuneResult, sched, adapters_only: bool):
        self.model, self.cfg, self.run, self.res, self.sched = model, cfg, run, res, sched
        self.full_state = not adapters_only
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.state = None

    def evaluate(self, step: int, epoch: int, train_loss: float | None) -> bool:
        """Measure, record, keep the best; True when the target is reached."""
        model, res, run, target = self.model, self.res, self.run, self.cfg.target_ppl
        ppl = _dev_measure(model, self.cfg, run)
        res.history.append({"step": step, "epoch": epoch, "train_loss": train_loss, run.dev_name: ppl,
                            "lr": self.sched.get_last_lr()[0]})
        if step == 0:
            res.start_dev_ppl = ppl
        if ppl < res.best_dev_ppl:
            res.best_dev_ppl, res.best_step = ppl, step
            self._keep(step, ppl)
        if run.verbose:
            print(f"[finetune] step {step:4d}  train loss {train_loss if train_loss is not None else float('nan'):.3f}  "
                  f"{run.dev_name.replace('_', ' ')} {ppl:.3f}" + (f" (target {target:.3f})" if target else ""))
        return target is not None and ppl <= target

    def _keep(self, step: int, ppl: float) -> None:
        model = self.model
        if self.full_state:
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                          if n in self.trainable}
        run = self.run
        if run.save_to is not None:
            from minilib.models.saving import save_model
            save_model(model, run.tokenizer, run.save_to, extra={"finetune_step": step, run.dev_name: ppl})

    def restore(self) -> None:
        if self.state is not None:
            self.model.load_state_dict(self.state, strict=self.full_state)


def _train(model, windows, cfg: FinetuneConfig, run: _Run, masks: SparsityMasks | None,
           adapters_only: bool = False) -> FinetuneResult:
    """The training loop; ``masks``: masked gradients and masks re-applied after every step;
    ``adapters_only``: the best checkpoint holds only the trainable parameters (LoRA adapters)."""
    total, per_epoch = _planned_steps(cfg, windows)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.warmup_steps, total))
    res = FinetuneResult()
    best = _BestCheckpoint(model, cfg, run, res, sched, adapters_only)
    g = torch.Generator().manual_seed(cfg.seed)
    step, done = 0, best.evaluate(0, 0, None)
    res.stopped = "dev perplexity at target before training" if done else ""
    model.train()
    try:
        for epoch in range(cfg.max_epochs):
            if done or step >= total:
                break
            order = torch.randperm(len(windows), generator=g)
            for b in range(per_epoch):
                if step >= total:
                    break
                x = windows[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]].to(run.device)
                loss = _step(model, x, opt, sched, params, masks)
                step += 1
                res.history.append({"step": step, "epoch": epoch, "train_loss": loss.item(), run.dev_name: None,
                                    "lr": sched.get_last_lr()[0]})
                if step % cfg.eval_every == 0 or step == total:
                    if best.evaluate(step, epoch, loss.item()):
                        done = True
                        res.stopped = f"dev perplexity reached the target at step {step}"
                        break
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
    res.steps = step
    if not res.stopped:
        res.stopped = f"budget spent ({step} steps, {cfg.max_epochs} epoch(s) max)"
    best.restore()
    return res


def _step(model, x, opt, sched, params, masks: SparsityMasks | None) -> torch.Tensor:
    """One optimizer step on the batch ``x`` (gradients masked and masks re-applied with ``masks``); the loss."""
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
    return loss
