"""The SparseGPT study's calibration text, budget sampling and analysis (paired comparisons, seeds,
held-out errors, the generated tables), on synthetic records where the right answer is known."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from minilib.models import load
from minilib.studies import sparsegpt as study


def test_budget_windows_are_distinct_nested_and_seeded():
    pool = torch.arange(100 * 8).view(100, 8)
    a8, a4, b8 = study.budget_windows(pool, 8, 0), study.budget_windows(pool, 4, 0), study.budget_windows(pool, 8, 1)
    assert torch.equal(a8[:4], a4)                                   # nested for one seed
    assert len({tuple(r.tolist()) for r in a8}) == 8                  # distinct, non-overlapping windows
    assert torch.equal(a8, study.budget_windows(pool, 8, 0)) and not torch.equal(a8, b8)
    with pytest.raises(ValueError, match="holds only 100.*join more corpora"):
        study.budget_windows(pool, 101, 0)


def test_calibration_pool_joins_corpora():
    tok = load("tiny-llama").tokenizer
    one, both = study.corpus_part(tok, "tiny"), study.corpus_part(tok, "tiny+technical")
    assert torch.equal(both[: len(one)], one) and len(both) > len(one)
    pool = study.calibration_pool(tok, "tiny", 256)
    assert pool.shape == (len(one) // 256, 256) and torch.equal(pool[1], one[256:512])
    with pytest.raises(ValueError, match="'tiny\\+'"):
        study.corpus_part(tok, "tiny+")


def _run(method, nll, s=0.5, nm=""):
    return {"method": method, "sparsity": s, "nm": nm, "nll": list(nll), "eval_seqlen": 101,
            "perplexity": math.exp(np.sum(nll) / (100 * len(nll))), "ppl_low": 0, "ppl_high": 0}


def test_pairwise_verdict_follows_the_interval():
    rng = np.random.default_rng(0)
    base = rng.normal(300, 30, 16)  # per-window NLL sums (100 predicted tokens each)
    swing = np.tile([5.0, -5.0], 8)  # differences that average to exactly zero
    runs = pd.DataFrame([_run("sparsegpt", base - 5 + rng.normal(0, 0.5, 16)), _run("wanda", base),
                         _run("sparsegpt", base + swing, nm="2:4"), _run("wanda", base, nm="2:4")])
    p = study.pairwise(runs, "sparsegpt", "wanda").set_index("nm")
    assert p.loc["", "verdict"] == "sparsegpt lower" and p.loc["", "high"] < 1
    assert p.loc["", "ratio"] == pytest.approx(math.exp(-5 / 100), rel=0.01)
    assert p.loc["2:4", "verdict"] == "not resolved" and p.loc["2:4", "low"] < 1 < p.loc["2:4", "high"]


def _budget(effect, seeds=(0, 1, 2), budgets=(8, 32), noise=0.02, swing=None):
    """SparseGPT's NLL is (1 + effect[budget]) x Wanda's, plus per-run noise (or, with ``swing``, a
    fixed per-seed offset that averages to zero)."""
    rng = np.random.default_rng(1)
    base = rng.normal(300, 30, 8)
    rows = []
    for i, s in enumerate(seeds):
        for b in budgets:
            for meth, d in (("wanda", 0.0), ("sparsegpt", effect[b])):
                jitter = (swing[i] if meth == "sparsegpt" else 0.0) if swing is not None else rng.normal(0, noise)
                nll = base * (1 + d + jitter)
                rows.append({"seed": s, "budget": b, "tokens": b * 256, **_run(meth, nll)})
    return pd.DataFrame(rows)


def test_budget_verdicts_over_seeds():
    b = _budget({8: 0.10, 32: -0.10})  # SparseGPT 10% worse (in NLL) at 8 windows, 10% better at 32
    v = study.budget_verdicts(b).set_index("budget")
    assert v.loc[8, "verdict"] == "wanda lower" and v.loc[32, "verdict"] == "sparsegpt lower"
    assert v.loc[32, "a_wins"] == 3 and v.loc[8, "seeds"] == 3
    s = study.budget_summary(b)
    assert set(s.method) == {"sparsegpt", "wanda"} and (s.low < s.ppl).all() and (s.ppl < s.high).all()
    one = study.budget_verdicts(_budget({8: 0.1, 32: 0.0}, seeds=(0,)))
    assert (one.verdict == "one seed: no interval").all() and one.low.isna().all()


def test_budget_verdict_unresolved_without_an_effect():
    v = study.budget_verdicts(_budget({8: 0.0, 32: 0.0}, swing=[0.05, -0.05, 0.0]))
    assert (v.verdict == "not resolved").all() and (v.low < 1).all() and (v.high > 1).all()


def _layers():
    rows = []
    for blk in range(6):
        for lay in ("q", "down"):
            e = 0.01 * (1 + blk)
            rows += [{"method": "sparsegpt", "block": blk, "layer": lay, "rel_error": e, "heldout_rel_error": 2 * e},
                     {"method": "wanda", "block": blk, "layer": lay, "rel_error": 2 * e, "heldout_rel_error": 2.2 * e}]
    return pd.DataFrame(rows)


def test_error_summary_ratios_paired_over_layers():
    es = study.error_summary(_layers()).set_index("method")
    assert es.loc["wanda", "in_sample_vs_sgpt"] == pytest.approx(2.0)
    assert es.loc["wanda", "heldout_vs_sgpt"] == pytest.approx(1.1)
    assert es.loc["sparsegpt", "in_sample_low"] <= es.loc["sparsegpt", "in_sample"] <= es.loc["sparsegpt", "in_sample_high"]


def _results(tmp_path, budget=True):
    rng = np.random.default_rng(2)
    base = rng.normal(300, 30, 8)
    runs = [{"kind": "run", **_run("dense", base, 0.0)}]
    for meth, d in (("sparsegpt", 0.1), ("wanda", 0.12), ("magnitude", 0.5)):
        runs.append({"kind": "run", **_run(meth, base * (1 + d + rng.normal(0, 0.01, 8))),
                     "eval_windows": 8, "acc": 0.5, "mcq_n": 40})
    runs[0].update(eval_windows=8, acc=0.7, mcq_n=40)
    recs = runs + [{"kind": "layer", **r} for r in _layers().to_dict("records")]
    recs += [{"kind": "composition", "setting": "x", "params": 10, "nonzeros": 5, "perplexity": 20.0, "ppl_low": 19.0,
              "ppl_high": 21.0}]
    if budget:
        recs += [{"kind": "budget", **r} for r in _budget({8: 0.1, 32: -0.1}).to_dict("records")]
    res = {"notebook": "SparseGPT_one_shot", "metrics": {}, "records": recs,
           "parameters": {"model": "m", "nsamples": 8, "seqlen": 256, "calib_corpus": "c4", "seed": 0,
                          "eval_corpus": "wiki", "mcq_set": "sciq"}}
    (tmp_path / "SparseGPT_one_shot.json").write_text(json.dumps(res))
    return tmp_path


def test_tables_from_a_results_file(tmp_path):
    d = _results(tmp_path)
    out = {name: f(d) for name, f in study.TABLES.items()}
    assert "| 50% unstructured |" in out["sparsegpt_runs"] and "0.700 [" in out["sparsegpt_runs"]
    assert "sparsegpt lower" in out["sparsegpt_order"]
    assert "| 8 x 256 = 2,048 |" in out["sparsegpt_budget"] and "wanda lower" in out["sparsegpt_budget"]
    assert "Wanda beats SparseGPT" in out["sparsegpt_verdict"] and "SparseGPT beats Wanda" in out["sparsegpt_verdict"]
    assert "2.00 [2.00, 2.00] x SparseGPT's on the calibration inputs" in out["sparsegpt_verdict"]
    assert "| x | 10 | 5 | 20.00 [19.00, 21.00] |" in out["sparsegpt_composition"]


def test_tables_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        study.table_runs(tmp_path)
    d = _results(tmp_path, budget=False)
    with pytest.raises(ValueError, match="no 'budget' records.*re-run make reproduce"):
        study.table_budget(d)
    assert "t-interval over seeds" not in study.table_verdict(d)  # no budget claims without budget records
