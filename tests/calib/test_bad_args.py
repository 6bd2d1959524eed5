"""Bad arguments to the calibration passes: errors that name the argument and what is allowed,
raised before any forward pass and with no hook left behind."""

import pytest
import torch

from minilib.calib import (CalibrationError, Hessian, calibrate, capture_block_inputs, collect_l1_stats,
                           sequential_pass)
from minilib.hooks import count_hooks
from minilib.models import load


def _windows(n=4, seqlen=16):
    return torch.randint(0, 1000, (n, seqlen), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model():
    return load("tiny-llama").model


def _passes(m, **kw):
    """Every pass, called with the same windows and extra arguments."""
    w = kw.pop("windows", _windows())
    return {"calibrate": lambda: calibrate(m, w, {"0.mlp.up_proj": Hessian(64)}, **kw),
            "capture_block_inputs": lambda: capture_block_inputs(m, w, **kw),
            "sequential_pass": lambda: sequential_pass(m, w, lambda step: None, device="cpu", **kw),
            "collect_l1_stats": lambda: collect_l1_stats(m, w, min_tokens=1, **kw)}


@pytest.mark.parametrize("which", ["calibrate", "capture_block_inputs", "sequential_pass", "collect_l1_stats"])
@pytest.mark.parametrize("batch_size,err", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError),
                                            ("4", TypeError), (None, TypeError)])
def test_bad_batch_size_is_named(model, which, batch_size, err):
    run = _passes(model, batch_size=batch_size)[which]
    with pytest.raises(err, match=r"batch_size must be an integer >= 1"):
        run()
    assert count_hooks(model) == 0


@pytest.mark.parametrize("which", ["calibrate", "capture_block_inputs", "sequential_pass", "collect_l1_stats"])
@pytest.mark.parametrize("bad,match", [
    (_windows().tolist(), r"\[n, seqlen\] LongTensor"),
    (_windows()[0], r"non-empty \[n, seqlen\] tensor, got shape \(16,\)"),
    (_windows()[None], r"got shape \(1, 4, 16\)"),
    (_windows().float(), "integer token ids, got dtype torch.float32"),
    (_windows().bool(), "integer token ids, got dtype torch.bool"),
    (_windows() + 60000, r"token ids must lie in \[0, 50257\)"),
    (torch.zeros(1, 300, dtype=torch.long), "maximum positions"),
])
def test_bad_windows_are_refused_by_every_pass(model, which, bad, match):
    with pytest.raises(CalibrationError, match=match):
        _passes(model, windows=bad)[which]()
    assert count_hooks(model) == 0


@pytest.mark.parametrize("dtype,want", [("float16", torch.float16), ("fp16", torch.float16),
                                        ("bf16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
                                        (torch.bfloat16, torch.bfloat16), (None, torch.float32)])
def test_capture_dtype_names_map_through_one_table(model, dtype, want):
    cap = capture_block_inputs(model, _windows(), batch_size=2, dtype=dtype)
    assert all(h.dtype == want for h in cap.hidden)


@pytest.mark.parametrize("dtype", ["int8", "float17", torch.int64, 16])
def test_bad_capture_dtype_lists_the_allowed_names(model, dtype):
    with pytest.raises(ValueError, match=r"dtype must be None .*'bfloat16'.*'float16'"):
        capture_block_inputs(model, _windows(), dtype=dtype)


@pytest.mark.parametrize("skip_first,err,match", [(-1, ValueError, "skip_first must be an integer >= 0"),
                                                  (1.5, TypeError, "skip_first must be an integer >= 0"),
                                                  (16, ValueError, r"below the window length 16 \(allowed: 0..15\)"),
                                                  (99, ValueError, "below the window length")])
def test_bad_skip_first(model, skip_first, err, match):
    acc = Hessian(64)
    with pytest.raises(err, match=match):
        calibrate(model, _windows(), {"0.mlp.up_proj": acc}, skip_first=skip_first)
    assert acc.tokens == 0 and count_hooks(model) == 0


def test_valid_skip_first_leaves_out_those_positions(model):
    acc = Hessian(64)
    calibrate(model, _windows(), {"0.mlp.up_proj": acc}, skip_first=15)
    assert acc.tokens == 4  # one position of each of the 4 windows
