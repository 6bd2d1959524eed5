"""Argument checks shared by the trainers: each error names the argument and what is allowed, and is
raised before any work."""

from __future__ import annotations

import math
import numbers

METHODS = ("full", "lora")
DEFAULT_LR = {"full": 5e-5, "lora": 1e-3}


def check_int(name: str, v, lo: int, optional: bool = False):
    """An integer ``>= lo`` (``None`` too when ``optional``); booleans are not integers here."""
    if optional and v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        alt = " (or None)" if optional else ""
        raise ValueError(f"{name} must be an integer >= {lo}{alt}, got {v!r}")
    return int(v)


SEED_MAX = 2**63 - 1  # what torch.manual_seed / Generator.manual_seed take


def check_seed(seed, name: str = "seed") -> int:
    """A random seed: an integer in ``[0, 2**63)`` (numpy integers too); not a bool, a float (``1.5``
    would silently become 1) or a string."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r} ({type(seed).__name__})")
    return int(seed)


def check_positive(name: str, v) -> float:
    """A finite number ``> 0``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {v!r}")
    return float(v)


def check_nonnegative(name: str, v) -> float:
    """A finite number ``>= 0``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def check_unit(name: str, v) -> float:
    """A number in ``[0, 1)``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    return float(v)


def check_method(method) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def check_lora(lora_r, lora_alpha, lora_dropout) -> None:
    """The LoRA rank (integer >= 1), scale numerator (positive) and dropout (in [0, 1))."""
    check_int("lora_r", lora_r, 1)
    check_positive("lora_alpha", lora_alpha)
    check_unit("lora_dropout", lora_dropout)
