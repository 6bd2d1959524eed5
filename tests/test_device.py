"""Devices: 'auto' everywhere, clear errors for devices that do not exist, synchronized timers."""


import pytest
import torch


# --- assets ---------------------------------------------------------------------------------------


def test_device_cuda_when_present():
    from minilib.models import resolve_device
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == want and resolve_device("cpu").type == "cpu"



def test_auto_and_bad_devices():
    from minilib.device import DeviceError, resolve_device
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want and resolve_device("AUTO").type == want
    with pytest.raises(DeviceError, match="not a device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        from minilib.models import load
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            load("tiny-gpt2", device="cuda")


def test_timer_accumulates():
    import time

    from minilib.device import Timer
    t = Timer("cpu")
    with t("a"):
        time.sleep(0.01)
    with t("a"):
        time.sleep(0.01)
    t.add("b", 1.0)
    assert 0.015 < t.totals["a"] < 1.0 and t.totals["b"] == 1.0
