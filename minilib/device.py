"""Where computation runs: ``device="auto"`` (CUDA when present, else CPU) everywhere, and timers
that synchronize CUDA so that the times they report are the times the GPU took."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class DeviceError(ValueError):
    """A device that does not exist on this machine, or cannot be parsed."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or ``None``: CUDA when present, else CPU; otherwise the named device, checked."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"device {device!r} is not a device name (use 'auto', 'cpu', 'cuda' or 'cuda:N')") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was asked for, but no CUDA GPU is available on this machine "
                              "(use device='auto' to fall back to the CPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "meta", "mps"):
        raise DeviceError(f"device {device!r} is not supported (use 'auto', 'cpu' or 'cuda')")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA work (a no-op on the CPU)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device if device is not None and torch.device(device).index is not None else None)


class Timer:
    """Accumulates wall time per key; synchronizes CUDA before reading the clock.

        timer = Timer(device)
        with timer("solve_s"): ...
        timer.totals   # {"solve_s": 1.23}
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.totals: dict[str, float] = {}

    def _sync(self):
        if self.device is not None and self.device.type == "cuda":
            synchronize(self.device)

    @contextmanager
    def __call__(self, key: str):
        self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - t

    def add(self, key: str, seconds: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + seconds
