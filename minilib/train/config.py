"""The settings of the trainers, as frozen dataclasses checked when they are made.

``TrainConfig`` holds what recovery fine-tuning (``FinetuneConfig``, for ``minilib.train.finetune``)
and task fine-tuning (``ClassifierConfig``, for ``minilib.train.finetune_classifier``) share: the
method (full or LoRA), batch size, learning rate, weight decay, seed, the LoRA rank / alpha / dropout
and ``keep_sparsity``.  Every field is checked in ``__post_init__`` (``minilib.train.checks``): an error
names the field and what is allowed, before any work.  Data, the model and runtime choices (device,
``verbose``, where to save) stay arguments of the trainers.

    cfg = FinetuneConfig(seqlen=64, max_steps=20, method="lora")
    finetune(model, train_ids, dev_ids, cfg, verbose=False)
    finetune(model, train_ids, dev_ids, cfg, lr=1e-3)      # keyword settings replace fields of cfg
    finetune(model, train_ids, dev_ids, seqlen=64)         # ... of the default config

``cfg.replace(**changes)`` is ``dataclasses.replace`` with unknown names refused by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass

import numpy as np

from minilib.train.checks import (DEFAULT_LR, check_int, check_lora, check_method, check_positive, check_seed,
                                  check_unit)
from minilib.train.masking import check_keep_sparsity


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by the trainers.  ``lr``: None is the method's default (``DEFAULT_LR``: 5e-5
    full, 1e-3 LoRA; ``learning_rate`` resolves it).  ``keep_sparsity``: ``"auto"``, ``True`` or
    ``False`` (``minilib.train.masking``).  The LoRA fields are checked when ``method="lora"``."""

    method: str = "full"
    batch_size: int = 4
    lr: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.05
    keep_sparsity: bool | str = "auto"

    lora_always_checked = False   # ClassifierConfig: the LoRA fields are checked for every method (as before)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Every field in range (an error naming the field and what is allowed)."""
        check_method(self.method)
        check_int("batch_size", self.batch_size, 1)
        check_positive("lr", self.learning_rate)
        check_unit("weight_decay", self.weight_decay)
        if self.method == "lora" or self.lora_always_checked:
            check_lora(self.lora_r, self.lora_alpha, self.lora_dropout)
        check_keep_sparsity(self.keep_sparsity)
        check_seed(self.seed)

    @property
    def learning_rate(self) -> float:
        """``lr``, or the method's default when it is None."""
        return DEFAULT_LR.get(self.method, DEFAULT_LR["full"]) if self.lr is None else self.lr

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes):
        """A copy with ``changes`` (checked again); an unknown name is a ``TypeError`` naming it."""
        check_fields(type(self), changes, type(self).__name__)
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def build(cls, config=None, caller: str | None = None, **changes):
        """``config`` (an instance of ``cls``, or None: the defaults) with the keyword ``changes``:
        what the trainers do with their ``config`` and ``**settings`` arguments."""
        if config is None:
            config = cls()
        elif not isinstance(config, cls):
            raise TypeError(f"{caller or cls.__name__}: config must be a {cls.__name__} (or None: the defaults), got "
                            f"{type(config).__name__} {config!r}; pass settings by name, e.g. method='lora'")
        check_fields(cls, changes, caller or cls.__name__)
        return dataclasses.replace(config, **changes) if changes else config

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_fields(cls, changes: dict, where: str) -> None:
    """Every key of ``changes`` a field of ``cls``; else a ``TypeError`` naming the unknown keys."""
    names = cls.field_names()
    unknown = [k for k in changes if k not in names]
    if unknown:
        hints = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise TypeError(f"{where}: unknown setting(s) {said}; {cls.__name__} has {', '.join(names)}")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """The hyper-parameters of recovery fine-tuning (``minilib.train.finetune``; its module docstring
    says what each does).  ``max_steps``: an integer >= 1, or None (``max_epochs`` epochs);
    ``dev_windows``: dev windows measured (None: all); ``target_ppl``: stop once the dev measure is at
    or below it (None: no early stopping)."""

    seqlen: int = 128
    max_epochs: int = 1
    max_steps: int | None = 40
    warmup_steps: int = 0
    eval_every: int = 10
    dev_windows: int | None = 8
    target_ppl: float | None = None

    def check(self) -> None:
        super().check()
        check_int("seqlen", self.seqlen, 2)
        check_int("max_epochs", self.max_epochs, 1)
        check_int("max_steps", self.max_steps, 1, optional=True)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_int("eval_every", self.eval_every, 1)
        check_int("dev_windows", self.dev_windows, 1, optional=True)
        t = self.target_ppl
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or math.isnan(t)):
            raise ValueError(f"target_ppl must be a number (or None: no early stopping), got {t!r}")


@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """The hyper-parameters of task fine-tuning (``minilib.train.finetune_classifier``): ``epochs``
    over the training texts, the decision head's learning rate ``head_lr``, ``warmup`` (the fraction
    of the steps warmed up linearly, in [0, 1)) and the tokenizer's ``max_length``."""

    batch_size: int = 16
    weight_decay: float = 0.01
    epochs: int = 1
    head_lr: float = 1e-3
    warmup: float = 0.1
    max_length: int = 128

    lora_always_checked = True

    def check(self) -> None:
        super().check()
        check_int("epochs", self.epochs, 1)
        check_positive("head_lr", self.head_lr)
        check_unit("warmup", self.warmup)
        check_int("max_length", self.max_length, 1)


def check_n_train(n_train) -> None:
    """The number of training examples: an integer >= 2, or None (the whole train part)."""
    if n_train is not None and (isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer))
                                or n_train < 2):
        raise ValueError(f"n_train must be an integer >= 2 (or None: the whole train part), got {n_train!r}")
