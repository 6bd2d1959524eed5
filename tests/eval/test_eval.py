"""Evaluation maths on tiny models: perplexity, MCQ scoring, accuracy, model report."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minilib.data import (CorpusError, MCQItem)
from minilib.eval import (accuracy, check_seqlen, count_parameters, layer_sparsity, mcq_accuracy, model_report,
                          perplexity, wilson_interval)
from minilib.eval.mcq import choice_loglikelihoods, choice_loglikelihoods_shared
from minilib.models import load
from minilib.models.linear import weight_oi

# --- assets ---------------------------------------------------------------------------------------


def test_perplexity_matches_a_hand_computation():
    model, tok, _ = load("tiny-llama")
    ids = torch.randint(0, 1000, (300,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = ids[:256].view(2, 128)
        logits = model(input_ids=w).logits
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    assert perplexity(model, ids, seqlen=128, batch_size=1) == pytest.approx(math.exp(nll.item()), rel=1e-5)
    assert perplexity(model, ids[:256].view(2, 128), seqlen=128) == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_perplexity_bad_input():
    model, _, _ = load("tiny-gpt2")
    with pytest.raises(ValueError, match="maximum positions \\(256\\)"):
        perplexity(model, torch.arange(2000), seqlen=512)
    with pytest.raises(CorpusError, match="too short"):
        perplexity(model, torch.arange(50), seqlen=128)
    with pytest.raises(ValueError, match="at least 2"):
        check_seqlen(model, 1)


def test_mcq_scoring_by_hand(tiny_decoder):
    """Log-likelihoods equal a direct computation, and acc/acc_norm follow lm-eval's definitions."""
    model, tok = tiny_decoder.model, tiny_decoder.tokenizer
    items = [MCQItem("Question: what is red?\nAnswer:", ("an apple", "the sky at noon", "grass"), 0),
             MCQItem("The cat", ("sat", "ran away quickly"), 1)]
    lls = choice_loglikelihoods(model, tok, items)
    for it, ll in zip(items, lls):
        for j, ch in enumerate(it.choices):
            ctx = tok(it.question, add_special_tokens=False).input_ids
            whole = tok(it.question + " " + ch, add_special_tokens=False).input_ids
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
            want = sum(logp[p - 1, whole[p]].item() for p in range(len(ctx), len(whole)))
            assert ll[j] == pytest.approx(want, abs=1e-3)
    shared = choice_loglikelihoods_shared(model, tok, items)
    for a, b in zip(lls, shared):
        np.testing.assert_allclose(a, b, atol=1e-3)
    res = mcq_accuracy(model, tok, items)
    pred = [int(np.argmax(ll)) for ll in lls]
    pred_norm = [int(np.argmax(ll / np.array([len(c) for c in it.choices]))) for ll, it in zip(lls, items)]
    assert res["acc"] == np.mean([p == it.answer for p, it in zip(pred, items)])
    assert res["acc_norm"] == np.mean([p == it.answer for p, it in zip(pred_norm, items)])
    assert res["n"] == 2 and res["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_shared_prefix_batches_equal_the_batched_path(tiny_decoder):
    """Questions of different lengths share a padded batch; every choice still scores as if alone:
    mixed choice counts, one-token choices (nothing fed after the question), a batch of them only,
    and (tiny-gemma3, tiny-mistral, tiny-gemma2: sliding window 64) items past half the window that take the
    fallback."""
    model, tok = tiny_decoder.model, tiny_decoder.tokenizer
    items = [MCQItem("Q: colour?\nA:", ("red", "a pale shade of blue", "green"), 0),
             MCQItem("The cat " * 9 + "sat on the", ("mat", "chair by the door"), 1),
             MCQItem("x", ("y", "z", "w", "v"), 2),
             MCQItem("word " * 40 + "\nAnswer:", ("A", "B is longer than A", "C"), 1),
             MCQItem("word " * 56 + "\nAnswer:", ("A", "B"), 0),  # with the next: past a 64-slot window if padded
             MCQItem("Q: sky?", ("a pale shade of blue, like the sky on a clear morning in May", "red"), 0),
             MCQItem("One more question, of a middling length?", ("yes", "no"), 0)]
    want = choice_loglikelihoods(model, tok, items)
    for batch_items in (1, 2, 8):
        got = choice_loglikelihoods_shared(model, tok, items, batch_items=batch_items)
        for a, b in zip(want, got):
            np.testing.assert_allclose(a, b, atol=2e-4)
    single = [MCQItem("x", ("y", "z"), 0), MCQItem("Q: a longer one", ("a", "b"), 1)]
    for a, b in zip(choice_loglikelihoods(model, tok, single), choice_loglikelihoods_shared(model, tok, single)):
        np.testing.assert_allclose(a, b, atol=2e-4)
    with pytest.raises(ValueError, match="batch_items"):
        choice_loglikelihoods_shared(model, tok, items, batch_items=0)


def test_mcq_needs_a_decoder():
    m = load("tiny-bert")
    with pytest.raises(ValueError, match="encoder"):
        mcq_accuracy(m.model, m.tokenizer, [MCQItem("q", ("a", "b"), 0)])


def test_accuracy_and_wilson():
    res = accuracy([1, 0, 1, 1], [1, 1, 1, 1])
    assert res["acc"] == 0.75 and res["n"] == 4 and res["ci95_low"] < 0.75 < res["ci95_high"]
    lo, hi = wilson_interval(500, 1000)
    assert lo == pytest.approx(0.469, abs=1e-3) and hi == pytest.approx(0.531, abs=1e-3)
    with pytest.raises(ValueError):
        accuracy([1, 0], [1, 0, 1])


def test_model_report_counts_what_was_zeroed():
    model, _, ad = load("tiny-opt")
    params, nz = count_parameters(model)
    up = ad.ffn(ad.blocks(model)[0]).up
    weight_oi(up)[:, :32] = 0  # [out=128, in=64]: 128 x 32 weights
    rep = model_report(model, seqlen=16, repeats=1)
    assert rep["params"] == params and rep["nonzeros"] == nz - 128 * 32
    row = rep["layers"].set_index("layer").loc["model.decoder.layers.0.fc1"]
    assert row["sparsity"] == pytest.approx(0.5)
    assert rep["checkpoint_bytes"] > 4 * params * 0.99 and rep["tokens_per_s"] > 0
    assert (layer_sparsity(model)["sparsity"] > 0.4).sum() == 1  # (the tied head has a zero padding row)


def test_tqdm_progress_bars_are_optional(capsys):
    model, _, _ = load("tiny-llama")
    perplexity(model, torch.arange(2048) % 500, seqlen=32, progress=False)
    assert "perplexity" not in capsys.readouterr().err

