"""Integration tests on the embedded real models (bounds measured on our runs, with margin)."""

import copy

import numpy as np
import pytest
import torch

from minilib.eval.decision import decision_accuracy, decision_task
from minilib.hooks import count_hooks
from minilib.prune import mask_neurons, remove_neurons, score_neurons_random, zero_neurons
from minilib.studies.anatomy import anatomy_for
from minilib.train.heads import trained_head

pytestmark = pytest.mark.integration


def test_minilm_sarcasm_head_and_anatomy(minilm):
    task = decision_task("sarcasm", n_train=400, n_test=400, seed=0)
    an, _ = anatomy_for(minilm, task, batch_size=64)
    assert count_hooks(minilm.model) == 0
    head, _ = trained_head(minilm, task, batch_size=64, features=torch.as_tensor(an["features"]))
    acc = decision_accuracy(minilm.model, minilm.tokenizer, head, task, batch_size=64)
    # head-only probe on [CLS] of all-MiniLM-L6-v2: 0.678 [0.640, 0.714] on our default run
    # (1000 train / 600 test); majority class ~0.52
    assert acc["acc"] > 0.6 and acc["ci95_low"] > 0.55, acc
    hid = an["layer_hidden_cos"].mean(0)
    np.testing.assert_allclose(hid[-1], 1.0, atol=1e-5)
    # measured: ~0.71 for layers 0-4, 1.0 after the last (post-LN anisotropy, then the last layer turns it)
    assert 0.5 < hid[0] < 0.9 and hid[-2] < 0.9, hid


def test_smollm2_removal_equals_zero_masking(smollm2):
    model = copy.deepcopy(smollm2.model)
    masks = mask_neurons(score_neurons_random(model, 1), 0.3)
    zeroed = copy.deepcopy(model)
    zero_neurons(zeroed, masks)
    rep = remove_neurons(model, masks)
    assert abs(rep.ffn_ratio - 0.3) < 1e-3 and rep.params_after < 0.85 * rep.params_before  # measured 0.822 (embeddings stay)
    x = smollm2.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        a, b = zeroed(**x).logits, model(**x).logits
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_smollm2_head_vector_is_not_the_residual(smollm2):
    """The vector SmolLM2's head reads (after the final RMSNorm) is far from the residual stream before
    it, and the per-layer curves through the final norm differ from those in the residual stream."""
    from minilib.studies.anatomy import collect_anatomies
    task = decision_task("sarcasm", n_train=32, n_test=1, seed=0, template="{text}\nIs it sarcastic?")
    ans = collect_anatomies(smollm2.model, smollm2.tokenizer, task.texts("train"), batch_size=16)
    assert count_hooks(smollm2.model) == 0
    head, res = ans["head"], ans["residual"]
    # measured on the default run (600 examples): mean cos 0.558 [0.553, 0.564]
    assert 0.45 < head["head_residual_cos"].mean() < 0.67, head["head_residual_cos"].mean()
    for an in (head, res):
        np.testing.assert_allclose(an["layer_hidden_cos"][:, -1], 1.0, atol=1e-4)
    late_h, late_r = head["layer_hidden_cos"][:, 24:29].mean(), res["layer_hidden_cos"][:, 24:29].mean()
    # measured (600 examples): 0.39 through the final norm vs 0.57 in the residual stream
    assert late_h < late_r - 0.1, (late_h, late_r)
