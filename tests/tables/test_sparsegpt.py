"""minilib.tables.sparsegpt: the generated tables from synthetic results files where the answer is
known (SparseGPT 5% lower in NLL over 3 seeds and 16 windows; a budget where Wanda wins)."""

import json
import math

import numpy as np

from minilib.tables import sparsegpt as tables


def _run(method, nll, s=0.5, nm="", seed=None, **kw):
    return {"kind": "run", "method": method, "sparsity": s, "nm": nm, "nll": list(nll), "eval_seqlen": 101,
            "seed": seed, "eval_windows": len(nll), "perplexity": math.exp(np.sum(nll) / (100 * len(nll))),
            "ppl_low": 0.0, "ppl_high": 0.0, **kw}


def _results(tmp_path, budget=True, seeds=(0, 1, 2)):
    rng = np.random.default_rng(2)
    base = rng.normal(300, 30, 16)
    recs = [_run("dense", base, 0.0, acc=0.7, mcq_n=40), _run("magnitude", base * 1.5, acc=0.5, mcq_n=40)]
    for sd in seeds:
        w = base * (1 + rng.normal(0, 0.01))
        recs += [_run("wanda", w, seed=sd), _run("sparsegpt", w * (0.95 + rng.normal(0, 0.005)), seed=sd)]
    layers = [{"kind": "layer", "method": m, "block": b, "layer": "q", "rel_error": e * (b + 1),
               "heldout_rel_error": 2 * e * (b + 1)} for b in range(6) for m, e in (("sparsegpt", 0.01), ("wanda", 0.02))]
    recs += layers + [{"kind": "composition", "setting": "x", "params": 10, "nonzeros": 5, "perplexity": 20.0,
                       "ppl_low": 19.0, "ppl_high": 21.0}]
    if budget:
        for sd in seeds:
            for bud, eff in ((8, 1.10), (32, 0.95)):
                w = base * (1 + rng.normal(0, 0.01))
                for m, f in (("wanda", 1.0), ("sparsegpt", eff)):
                    recs.append({**_run(m, w * f * (1 + rng.normal(0, 0.003)), seed=sd), "kind": "budget",
                                 "budget": bud, "tokens": bud * 128})
    res = {"notebook": "SparseGPT_one_shot", "metrics": {}, "records": recs,
           "parameters": {"model": "m", "nsamples": 32, "seqlen": 128, "calib_corpus": "c4", "seed": 0,
                          "eval_corpus": "wiki", "mcq_set": "sciq", "budget_corpus": "c4"}}
    (tmp_path / "SparseGPT_one_shot.json").write_text(json.dumps(res))
    return tmp_path


def test_tables_from_a_results_file(tmp_path):
    d = _results(tmp_path)
    out = {name: f(d) for name, f in tables.TABLES.items()}
    assert "3 calibration seed(s) (0, 1, 2)" in out["sparsegpt_runs"] and "16 x 101" in out["sparsegpt_runs"]
    assert "| 50% unstructured |" in out["sparsegpt_runs"] and "0.700 [" in out["sparsegpt_runs"]
    order = out["sparsegpt_order"]
    assert "| 50% unstructured: SparseGPT / Wanda |" in order and "SparseGPT lower" in order
    assert "| 8 x 128 = 1,024 | 3 |" in out["sparsegpt_budget"] and "Wanda lower" in out["sparsegpt_budget"]
    v = out["sparsegpt_verdict"]
    assert "One multiple-comparison family: the 8 tests below" in v
    assert "**SparseGPT has a lower perplexity than Wanda**" in v and "**Wanda has a lower perplexity than SparseGPT**" in v
    assert "n = 3 calibration seeds" in v and "n = 16 windows" in v and "resolvable" in v
    assert "2.00 [2.00, 2.00] x SparseGPT's on the calibration inputs" in v and "Described, not tested" in v
    assert "| x | 10 | 5 | 20.00 [19.00, 21.00] |" in out["sparsegpt_composition"]


def test_one_seed_is_too_few_to_test(tmp_path):
    v = tables.table_verdict(_results(tmp_path, budget=False, seeds=(0,)))
    assert v.count("**too few to test**") == 2 and "at least 3 needed" in v
    assert "budget sweep" not in v   # no budget claims without budget records


def test_tables_name_what_is_missing(tmp_path):
    assert "make reproduce" in tables.table_runs(tmp_path)
    d = _results(tmp_path, budget=False)
    assert "No results in the current format" in tables.table_budget(d)
    (tmp_path / "SparseGPT_one_shot.json").write_text("{broken")
    assert "No results in the current format" in tables.table_runs(tmp_path)


def _history(d, *results):
    runs = [{"commit": f"c{i}", "date": f"2026-12-0{i}", "summary": tables.run_summary(r)} for i, r in enumerate(results)]
    (d / f"{tables.HISTORY}.json").write_text(json.dumps({"runs": runs}))


def test_across_runs_says_where_an_outcome_did_not_hold(tmp_path):
    d = _results(tmp_path)
    now = json.loads((d / "SparseGPT_one_shot.json").read_text())
    flipped = json.loads(json.dumps(now))   # a run where SparseGPT is 5% worse at 50%: the outcome flips
    for r in flipped["records"]:
        if r["kind"] == "run" and r["method"] == "sparsegpt":
            r["nll"] = [x / 0.95 ** 2 for x in r["nll"]]
            r["perplexity"] = math.exp(np.sum(r["nll"]) / (100 * len(r["nll"])))
    other = json.loads(json.dumps(now))
    other["parameters"]["nsamples"] = 8     # another protocol: left out
    _history(d, other, flipped, now)
    out = tables.table_across_runs(d)
    assert "2 run(s) of this protocol" in out and "| comparison | 2026-12-01 c1 (host not recorded) |" in out
    assert "**the outcome differs between runs** (Wanda lower: 1, SparseGPT lower: 1): read it as not resolved" in out
    assert "8 calibration windows (budget sweep): SparseGPT / Wanda: **Wanda lower in all 2 run(s)**" in out
    assert ("dense agrees to the printed digits in 2 runs; magnitude 50% unstructured agrees to the printed digits "
            "in 2 runs") in out
    # the current results file not yet recorded: it is added as a column of its own
    _history(d, flipped)
    out = tables.table_across_runs(d)
    assert "2 run(s) of this protocol" in out and "this results file" in out
    _history(d, now)                        # one run: nothing to agree with
    assert "dense ran in one run only" in tables.table_across_runs(d)


def test_across_runs_without_a_history_says_so(tmp_path):
    assert "SparseGPT_one_shot_history" in tables.table_across_runs(_results(tmp_path))


def test_the_committed_history_records_the_committed_results():
    """``tools.results_history`` was re-run after the last SparseGPT results: else the README's
    across-runs table silently omits a run (it would show as 'this results file')."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "results"
    hist = json.loads((root / f"{tables.HISTORY}.json").read_text())
    now = json.loads((root / "SparseGPT_one_shot.json").read_text())
    assert hist["runs"][-1]["summary"] == json.loads(json.dumps(tables.run_summary(now))), (
        "results/SparseGPT_one_shot_history.json does not end with the committed results: run "
        ".venv/bin/python -m tools.results_history, then .venv/bin/python -m tools.tables")


def test_the_verdict_says_in_short_where_owl_helps(tmp_path):
    """With Wanda + OWL runs at 50%, 20% lower in NLL than uniform Wanda on the same draws, the verdict
    block ends with the OWL line: lower at 50%, and OWL's 70% claim not run (no 70% OWL run); without OWL
    runs there is no such line."""
    d = _results(tmp_path, budget=False)
    assert "In short, OWL" not in tables.table_verdict(d)
    res = json.loads((d / "SparseGPT_one_shot.json").read_text())
    rng = np.random.default_rng(4)
    res["records"] += [{**r, "method": "wanda+owl", "nll": list(np.asarray(r["nll"]) * (0.8 + rng.normal(0, 0.002, 16)))}
                       for r in res["records"] if r.get("method") == "wanda" and r["kind"] == "run"]
    for r in res["records"]:
        if r.get("method") == "wanda+owl":
            r["perplexity"] = math.exp(np.sum(r["nll"]) / (100 * len(r["nll"])))
    (d / "SparseGPT_one_shot.json").write_text(json.dumps(res))
    v = tables.table_verdict(d)
    assert "* **In short, OWL against uniform sparsity**" in v and "Wanda + OWL is lower at 50%" in v
    assert "not run for Wanda" in v
