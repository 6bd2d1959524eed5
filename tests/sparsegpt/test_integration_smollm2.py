"""SmolLM2-135M, small calibration set from C4, perplexity on held-out Wikipedia windows."""

import pytest

from minilib.data import corpus_splits
from minilib.eval import perplexity
from minilib.models import load
from minilib.sparse import calibration_set, prune_model


@pytest.mark.integration
def test_method_order_at_50_percent():
    _, tok, _ = load("smollm2-135m")
    calib = calibration_set(tok, "c4", 8, 256, seed=0)
    test = corpus_splits(tok, "wiki")["test"]
    ppl, reports = {}, {}
    for method in ("sparsegpt", "wanda", "magnitude"):
        model, _, _ = load("smollm2-135m")
        reports[method] = prune_model(model, method, 0.5, calib=calib, measure_error=method == "sparsegpt")
        assert reports[method].overall["sparsity"] == pytest.approx(0.5, abs=1e-4)
        ppl[method] = perplexity(model, test, 512, max_windows=4)
    # measured (8x256 calibration tokens, 4 test windows): dense 13.7, sparsegpt 32.8
    assert ppl["sparsegpt"] < ppl["wanda"] < ppl["magnitude"], ppl
    assert ppl["sparsegpt"] < 45, ppl
    assert reports["sparsegpt"].overall["mean_rel_error"] < 0.05
