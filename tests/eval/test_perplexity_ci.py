"""Perplexity windows, input checks and bootstrap intervals over windows."""

import math

import pytest
import torch
import torch.nn.functional as F

from minilib.data import CorpusError
from minilib.eval import perplexity, perplexity_ci, perplexity_ratio_ci, to_windows
from minilib.models import load


@pytest.fixture(scope="module")
def llama():
    return load("tiny-llama")


def ids_(n=512, seed=0):
    return torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed))


def test_wide_2d_input_is_cut_into_windows_of_seqlen(llama):
    ids = ids_(256)
    cut = perplexity(llama.model, ids[None], seqlen=64)            # [1, 256] -> 4 windows of 64
    assert cut == pytest.approx(perplexity(llama.model, ids, seqlen=64), rel=1e-9)
    assert cut == pytest.approx(perplexity(llama.model, ids.view(4, 64)), rel=1e-9)  # seqlen=None: the width
    assert cut != pytest.approx(perplexity(llama.model, ids[None]), rel=1e-4)       # one window of 256
    assert to_windows(ids.view(2, 128), 64).tolist() == ids.view(4, 64).tolist()    # rows cut separately
    assert to_windows(torch.cat([ids[:100], ids[:100]]).view(2, 100), 64).shape == (2, 64)  # remainder dropped


def test_bad_inputs_raise_naming_the_argument(llama):
    m, ids = llama.model, ids_(512)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids"):
        perplexity(m, ids.float(), 64)
    with pytest.raises(ValueError, match=r"token id 50300, outside the model's vocabulary: allowed 0\.\.50256"):
        perplexity(m, torch.cat([ids, torch.tensor([50300])]), 64)
    with pytest.raises(ValueError, match="token id -1"):
        perplexity(m, torch.cat([ids, torch.tensor([-1])]), 64)
    with pytest.raises(ValueError, match=r"seqlen must be at least 2.*\[2, 256\]"):
        perplexity(m, ids, 0)
    with pytest.raises(ValueError, match=r"seqlen 512 is above the model's maximum positions \(256\)"):
        perplexity(m, ids, 512)
    with pytest.raises(TypeError, match="seqlen must be an integer"):
        perplexity(m, ids, 64.0)
    with pytest.raises(ValueError, match="max_windows must be an integer >= 1"):
        perplexity(m, ids, 64, max_windows=0)
    with pytest.raises(CorpusError, match="too short for one window of seqlen=64"):
        perplexity(m, ids[:40], 64)
    with pytest.raises(ValueError, match="empty"):
        perplexity(m, ids.view(8, 64)[:0])
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        perplexity(m, ids.view(2, 4, 64))


def test_perplexity_ci_matches_hand_computation(llama):
    m, ids = llama.model, ids_(512)
    res = perplexity_ci(m, ids, seqlen=64)
    w = ids.view(8, 64)
    with torch.no_grad():
        logits = m(input_ids=w).logits
    per = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                          reduction="none").view(8, 63).sum(1)
    assert res["windows"] == 8 and res["seqlen"] == 64 and res["tokens"] == 8 * 63
    assert res["nll"] == pytest.approx(per.tolist(), rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(per.sum().item() / (8 * 63)), rel=1e-5)
    assert res["ppl"] == pytest.approx(perplexity(m, ids, 64), rel=1e-9)
    assert res["ci95_low"] < res["ppl"] < res["ci95_high"]
    # the t interval of the mean per-window NLL per token, exponentiated
    from scipy import stats as st
    x = (per / 63).double().numpy()
    half = st.t.ppf(0.975, 7) * x.std(ddof=1) / math.sqrt(8)
    assert (res["ci95_low"], res["ci95_high"]) == pytest.approx((math.exp(x.mean() - half), math.exp(x.mean() + half)),
                                                               rel=1e-5)


def test_interval_narrows_with_more_windows(llama):
    m, ids = llama.model, ids_(128 * 32, seed=1) % 300   # a less uniform text: windows differ
    few = perplexity_ci(m, ids, seqlen=32, max_windows=8)
    many = perplexity_ci(m, ids, seqlen=32)
    assert many["windows"] == 128
    assert (many["ci95_high"] - many["ci95_low"]) < (few["ci95_high"] - few["ci95_low"])


def test_paired_ratio_interval(llama):
    m, ids = llama.model, ids_(1024)
    a = perplexity_ci(m, ids, seqlen=64)
    assert tuple(perplexity_ratio_ci(a, a)) == pytest.approx((1.0, 1.0, 1.0))
    other = load("tiny-llama")
    with torch.no_grad():
        for p in other.model.parameters():
            p.mul_(0.5)
    b = perplexity_ci(other.model, ids, seqlen=64)
    r = perplexity_ratio_ci(b, a)
    assert r.estimate == pytest.approx(b["ppl"] / a["ppl"], rel=1e-9)
    assert r.low <= r.estimate <= r.high
    with pytest.raises(ValueError, match="same windows"):
        perplexity_ratio_ci(a, perplexity_ci(m, ids, seqlen=32))
