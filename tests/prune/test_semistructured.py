"""Semi-structured 2:4: the speed check's arithmetic and warning (CPU), the conversion on CUDA."""

import warnings

import pytest
import torch

from minilib.prune.semistructured import SlowSparseWarning, check_backend, speed_summary, warn_if_slower


def test_speed_summary_and_warning_when_slower():
    s = speed_summary({"0.q": 1.0, "0.up": 4.0}, {"0.q": 2.0, "0.up": 2.0})
    assert s["speedup"] == {"0.q": 0.5, "0.up": 2.0} and s["overall_speedup"] == pytest.approx(5 / 4)
    with pytest.warns(SlowSparseWarning, match=r"1 of 2 layers \(worst 0.q: 0.50x"):
        warn_if_slower(s, 2048)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowSparseWarning)
        warn_if_slower(speed_summary({"a": 2.0}, {"a": 1.0}), 2048)


@pytest.mark.parametrize("dense,sparse,match", [({"a": 1.0}, {"b": 1.0}, "same layers"),
                                                ({"a": 0.0}, {"a": 1.0}, "> 0 seconds")])
def test_speed_summary_bad_input(dense, sparse, match):
    with pytest.raises(ValueError, match=match):
        speed_summary(dense, sparse)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_backend_needs_cuda():
    with pytest.raises(RuntimeError, match="CUDA"):
        check_backend()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_conversion_reports_measured_speedups():
    from minilib.models import load
    from minilib.prune import prune_model, to_semi_structured
    m, _, _ = load("tiny-llama", device="cuda")
    prune_model(m, "magnitude", nm=(2, 4))
    m.half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowSparseWarning)
        info = to_semi_structured(m, tokens=256)
    assert set(info["speedup"]) >= set(info["converted"]) and info["overall_speedup"] > 0
