"""Hooks only through context managers, so that none is ever left behind (even when the body raises).

    with forward_hooks({module: fn, ...}):          # fn(module, args, output)
        model(x)
    with forward_pre_hooks({module: fn}, with_kwargs=True):   # fn(module, args, kwargs)
        ...
    assert_no_hooks(model)                          # for tests
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

from torch import nn


@contextmanager
def forward_hooks(hooks: Mapping[nn.Module, Callable], with_kwargs: bool = False) -> Iterator[None]:
    handles = []
    try:
        for m, fn in hooks.items():
            handles.append(m.register_forward_hook(fn, with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def forward_pre_hooks(hooks: Mapping[nn.Module, Callable], with_kwargs: bool = False) -> Iterator[None]:
    handles = []
    try:
        for m, fn in hooks.items():
            handles.append(m.register_forward_pre_hook(fn, with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


def count_hooks(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        n += (len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
              + len(m._backward_pre_hooks))
    return n


def assert_no_hooks(model: nn.Module) -> None:
    n = count_hooks(model)
    if n:
        raise AssertionError(f"{n} hook(s) left on the model")
