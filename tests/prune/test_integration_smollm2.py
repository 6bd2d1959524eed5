"""SmolLM2-135M, small calibration set from C4, perplexity on held-out Wikipedia windows.

Measured with these settings (8 x 256 calibration tokens, 4 x 512 test tokens): dense 13.70;
50%: sparsegpt 32.79, wanda 26.96, magnitude 224.0 (mean relative layer error 0.014 / 0.030 / 0.060);
2:4: sparsegpt 70.7, wanda 84.6, magnitude 850.  With so few calibration tokens SparseGPT
over-fits at 50% unstructured and Wanda edges it on held-out perplexity (see docs/sparsegpt.md), so
at 50% the test asserts the order of the layer-wise objective and that both beat magnitude, and the
full perplexity order at 2:4.  The layer-wise objective is in-sample (SparseGPT minimises it on the
calibration inputs), so the test also measures it on held-out C4 windows: SparseGPT's held-out error
is well above its in-sample error (measured 0.028 vs 0.0138 with the same settings), and its
advantage over Wanda shrinks there.
"""

import pytest

from minilib.data import corpus_splits, eval_windows
from minilib.eval import perplexity
from minilib.models import load
from minilib.data import calibration_set
from minilib.prune import prune_model


@pytest.mark.integration
def test_method_order_at_50_percent():
    _, tok, _ = load("smollm2-135m")
    calib = calibration_set(tok, "c4", 8, 256, seed=0)
    held = eval_windows(corpus_splits(tok, "c4")["dev"], 256, 8)
    test = corpus_splits(tok, "wiki")["test"]
    ppl, err, held_err = {}, {}, {}
    for nm in (None, (2, 4)):
        for method in ("sparsegpt", "wanda", "magnitude"):
            model, _, _ = load("smollm2-135m")
            extra = dict(heldout=held) if nm is None and method != "magnitude" else {}
            rep = prune_model(model, method, 0.5, nm=nm, calib=calib, measure_error=nm is None, **extra)
            assert rep.overall["sparsity"] == pytest.approx(0.5, abs=1e-4)
            ppl[method, nm] = perplexity(model, test, 512, max_windows=4)
            err[method, nm] = rep.overall["mean_rel_error"]
            if extra:
                held_err[method] = float(rep.layers["heldout_rel_error"].mean())
    # 50% unstructured: SparseGPT minimises the layer-wise error best; both calibrated methods beat magnitude
    assert err["sparsegpt", None] < 0.7 * err["wanda", None] < 0.7 * err["magnitude", None], err
    assert max(ppl["sparsegpt", None], ppl["wanda", None]) < 0.3 * ppl["magnitude", None], ppl
    assert ppl["sparsegpt", None] < 45 and ppl["wanda", None] < 40, ppl
    # the in-sample objective flatters SparseGPT: held out, its error is higher and its lead smaller
    assert held_err["sparsegpt"] > 1.3 * err["sparsegpt", None], (held_err, err)
    assert held_err["wanda"] / held_err["sparsegpt"] < err["wanda", None] / err["sparsegpt", None], (held_err, err)
    # 2:4: the paper's order on held-out perplexity
    assert ppl["sparsegpt", (2, 4)] < ppl["wanda", (2, 4)] < ppl["magnitude", (2, 4)], ppl
