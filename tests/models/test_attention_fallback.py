"""bf16/fp16 attention on a CPU whose flash kernel refuses reduced precision under the AVX2 pin
(AMX CPUs with torch 2.13): routed to SDPA's math backend, fp32 untouched."""
import pytest
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import minilib.determinism as D
from minilib.models import load


@pytest.fixture
def flash_broken(monkeypatch):
    monkeypatch.setattr(D, "_FLASH_CPU_OK", False)


def _logits(m, dtype=None):
    ids = torch.arange(3, 40).view(1, -1) % m.config.vocab_size
    with torch.no_grad():
        if dtype is None:
            return m(input_ids=ids).logits.float()
        with torch.autocast("cpu", dtype=dtype):
            return m(input_ids=ids).logits.float()


def test_sdpa_is_the_wrapped_function_and_idempotent():
    fn = ALL_ATTENTION_FUNCTIONS["sdpa"]
    assert getattr(fn, "__wrapped_by_minilib__", False)
    D.install_attention_fallback()
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is fn


def test_fp32_goes_through_unchanged(flash_broken, monkeypatch):
    m = load("tiny-llama").model
    calls = []
    orig = torch.nn.attention.sdpa_kernel
    monkeypatch.setattr(torch.nn.attention, "sdpa_kernel", lambda *a, **k: calls.append(a) or orig(*a, **k))
    _logits(m)
    assert calls == []  # no backend forced for fp32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_runs_on_the_math_backend(flash_broken, dtype):
    m = load("tiny-llama").model
    ref = _logits(m)
    got = _logits(m, dtype)
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()
    mb = load("tiny-llama", dtype=dtype).model  # weights in that dtype, no autocast
    assert torch.isfinite(_logits(mb)).all()
