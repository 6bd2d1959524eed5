"""Structured FFN pruning: physical removal == zero-masking, budgets, preserved neurons, seeds,
reports, save/load round trips, bad input.  Masks: True = prune."""

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from minilib.models import ffn_widths, load_model, save_model
from minilib.prune import (PruneReport, SparsityError, layer_budgets, mask_neurons, remove_neurons,
                           score_neurons_anatomy, score_neurons_maxprod, score_neurons_norm, score_neurons_random,
                           zero_neurons)
from minilib.prune.scores import score_neurons_shared_random
from minilib.studies.anatomy import Anatomy, decision_layer_profile, preserved_neurons


def _logits(loaded, texts=("hello there, general", "a b c d e f g")):
    enc = loaded.tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = loaded.model(**enc)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def test_physical_removal_equals_zero_masking(tiny):
    masks = mask_neurons(score_neurons_random(tiny.model, 0), 0.4)
    zeroed = copy.deepcopy(tiny.model)
    zero_neurons(zeroed, masks)
    rep = remove_neurons(tiny.model, masks)
    assert ffn_widths(tiny.model) == [int((~m).sum()) for m in masks] == rep.after["ffn_widths"]
    enc = tiny.tokenizer(["hello there, general", "a b c d e f g"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a, b = zeroed(**enc), tiny.model(**enc)
    key = "logits" if hasattr(a, "logits") else "last_hidden_state"
    torch.testing.assert_close(getattr(a, key), getattr(b, key), atol=1e-5, rtol=1e-4)


def test_report_matches_request(tiny_decoder):
    for ratio in (0.1, 0.5):
        m = copy.deepcopy(tiny_decoder.model)
        rep = remove_neurons(m, mask_neurons(score_neurons_norm(m), ratio), target={"ratio": ratio})
        assert isinstance(rep, PruneReport) and rep.check() is rep
        assert abs(rep.ffn_ratio - ratio) <= 1 / 128
        assert rep.params_after < rep.params_before
        assert rep.removed_per_layer == [round(ratio * 128)] * 2


def test_random_is_seeded_and_independent_per_layer(tiny_decoder):
    m = tiny_decoder.model
    a, b, c = (mask_neurons(score_neurons_random(m, s), 0.5) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], a[1]), "the same indices were drawn in every layer"


HAND_BUILT = [(10.0, 0.5, 0.05, 0.0), (1.0, 1.0, 1.0, -1.0), (0.2, 0.2, 0.2, 0.1), (0.9, 0.9, 0.9, 0.0)]  # up, gate, down


def _hand_built_ffn(name):
    """Block 0 of a tiny model with known weights: every weight zero except, per neuron j, one entry of
    its up (and gate) row and two of its down column.  Neuron 0: one outsized up weight (the largest
    norm, a small max-product); neuron 1: balanced unit weights; neuron 2: all small; neuron 3: balanced
    0.9 (a smaller norm than neuron 1, a larger max-product than neuron 0); the others zero."""
    from minilib.models import load
    from minilib.models.adapters import adapter_for
    from minilib.models.linear import weight_oi
    m = load(name).model
    f = adapter_for(m).ffns(m)[0]
    parts = [f.up, f.down] + ([f.gate] if f.gate is not None else [])
    with torch.no_grad():
        for lin in parts:
            weight_oi(lin).zero_()
        up, down = weight_oi(f.up), weight_oi(f.down)                   # [W, H], [H, W]
        gate = weight_oi(f.gate) if f.gate is not None else None
        for j, (u, g, d0, d1) in enumerate(HAND_BUILT):
            up[j, 3] = u
            down[0, j], down[5, j] = d0, d1
            if gate is not None:
                gate[j, 7] = g
    return m, f.gate is not None


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])   # gated nn.Linear, and GPT-2's Conv1D
def test_neuron_norm_and_maxprod_follow_their_definitions(name):
    m, gated = _hand_built_ffn(name)
    norm = score_neurons_norm(m)[0]
    maxprod = score_neurons_maxprod(m)[0]
    for j, (u, g, d0, d1) in enumerate(HAND_BUILT):
        want_norm = np.sqrt(u ** 2 + d0 ** 2 + d1 ** 2 + (g ** 2 if gated else 0))
        want_mp = u * max(abs(d0), abs(d1)) * (g if gated else 1)
        assert float(norm[j]) == pytest.approx(want_norm, rel=1e-5)
        assert float(maxprod[j]) == pytest.approx(want_mp, rel=1e-5)
    assert (norm[4:] == 0).all() and (maxprod[4:] == 0).all()
    # the rankings differ: by the norm neuron 0 (one outsized weight) comes first, by max-product neuron 1
    assert torch.argsort(norm[:4], descending=True).tolist() == [0, 1, 3, 2]
    assert torch.argsort(maxprod[:4], descending=True).tolist() == [1, 3, 0, 2]
    # known weights -> known masks: removing all but 2 neurons of block 0 keeps exactly the top 2 by each score
    width = len(norm)
    keep_norm = ~mask_neurons(score_neurons_norm(m), (width - 2) / width)[0]
    keep_mp = ~mask_neurons(score_neurons_maxprod(m), (width - 2) / width)[0]
    assert torch.nonzero(keep_norm).flatten().tolist() == [0, 1]
    assert torch.nonzero(keep_mp).flatten().tolist() == [1, 3]


def test_authors_random_removes_the_same_neurons_in_every_layer(tiny_decoder):
    m = tiny_decoder.model
    a, b, c = (mask_neurons(score_neurons_shared_random(m, s), 0.3) for s in (0, 0, 1))
    assert all(torch.equal(a[0], x) for x in a[1:]), "the authors' baseline masks one index set in every layer"
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert int(a[0].sum()) == round(0.3 * len(a[0]))
    remove_neurons(m, [torch.arange(len(x)) < (5 if i == 0 else 0) for i, x in enumerate(a)])
    with pytest.raises(ValueError, match="one FFN width"):
        score_neurons_shared_random(m, 0)


def test_budgets_sum_cap_and_profile():
    widths = [100, 100, 100, 100]
    assert layer_budgets(widths, 0.3) == [30] * 4
    prof = np.array([0.2, 1.0, 1.0, 1.8])
    n = layer_budgets(widths, 0.5, prof, strength=1.0, max_layer_ratio=0.9)
    assert sum(n) == 200 and max(n) <= 90
    assert n[0] >= n[1] >= n[3], "a more important layer must not lose more neurons"
    n0 = layer_budgets(widths, 0.5, prof, strength=0.0)
    assert n0 == [50] * 4
    with pytest.raises(SparsityError, match="caps"):
        layer_budgets(widths, 0.95, prof, max_layer_ratio=0.9)


def _fake_anatomy(model, seed=0):
    from minilib.studies.anatomy import NEURON_ARRAYS, model_signature
    sig = model_signature(model)
    g = np.random.default_rng(seed)
    arrays = {k: g.random((sig["n_layers"], sig["widths"][0])).astype(np.float32) for k in NEURON_ARRAYS}
    return Anatomy(arrays, {"signature": sig, "model": "fake"})


def test_preserved_neurons_are_never_removed(tiny_decoder):
    m = tiny_decoder.model
    an = _fake_anatomy(m)
    pres = preserved_neurons(an, 0.1)
    assert all(int(p.sum()) == round(0.1 * 128) for p in pres)
    # make the preserved neurons the *least* important by score: they must still survive
    scores = score_neurons_anatomy(m, an)
    for s, p in zip(scores, pres):
        s[p] = -1.0
    for ratio in (0.3, 0.6, 0.85):
        masks = mask_neurons(scores, ratio, decision_layer_profile(an), pres)
        assert not any(bool(k[p].any()) for k, p in zip(masks, pres)), f"preserved neuron removed at {ratio}"
        assert abs(sum(int(k.sum()) for k in masks) - round(ratio * 256)) == 0
    with pytest.raises(SparsityError):
        mask_neurons(scores, 0.95, decision_layer_profile(an), pres)


def test_bad_ratios(tiny_decoder):
    s = score_neurons_random(tiny_decoder.model, 0)
    for bad in (-0.1, 1.0, 1.5, float("nan"), "0.3", None, True):
        with pytest.raises(SparsityError, match=r"\[0, 1\)"):
            mask_neurons(s, bad)
    with pytest.raises(SparsityError, match="no neurons"):
        mask_neurons(s, 0.999)


def test_score_anatomy_rejects_foreign_arrays():
    from minilib.models import load
    from minilib.studies.anatomy import AnatomyMismatchError
    a, b = load("tiny-gpt2"), load("tiny-opt")
    with pytest.raises(AnatomyMismatchError):
        score_neurons_anatomy(b.model, _fake_anatomy(a.model))
    with pytest.raises(ValueError, match="unknown anatomy score"):
        score_neurons_anatomy(a.model, _fake_anatomy(a.model), "nope")


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_save_load_round_trip(tmp_path, name):
    from minilib.models import load
    m = load(name)
    head = torch.nn.Linear(m.model.config.hidden_size, 2)
    rep = remove_neurons(m.model, mask_neurons(score_neurons_norm(m.model), 0.3), method="neuron-norm")
    path = save_model(m.model, m.tokenizer, tmp_path / "pruned", extra={"pruning": rep.as_dict()}, head=head)
    files = {p.name for p in Path(path).iterdir()}
    assert "model.safetensors" in files and "minilib_plan.json" in files and "decision_head.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    re = load_model(path)
    assert ffn_widths(re.model) == rep.after["ffn_widths"]
    assert re.plan["extra"]["pruning"]["method"] == "neuron-norm"
    torch.testing.assert_close(_logits(m), _logits(re))
    torch.testing.assert_close(head.weight, re.head.weight)


def test_bad_neuron_masks_change_nothing(tiny_decoder):
    m = tiny_decoder.model
    widths = ffn_widths(m)
    good = mask_neurons(score_neurons_random(m, 0), 0.3)
    with pytest.raises(TypeError, match="bool tensor"):
        remove_neurons(m, [g.float() for g in good])
    with pytest.raises(ValueError, match="one neuron mask per block"):
        remove_neurons(m, good[:1])
    with pytest.raises(ValueError, match="every neuron"):
        remove_neurons(m, [torch.ones(w, dtype=torch.bool) for w in widths])
    with pytest.raises(ValueError, match="width"):
        remove_neurons(m, [g[:10] for g in good])
    assert ffn_widths(m) == widths


def test_failure_half_way_names_what_was_changed(monkeypatch):
    from minilib.models import load
    from minilib.prune import PartialPruneError
    from minilib.prune import apply as apply_mod
    m = load("tiny-llama").model
    real = apply_mod.remove_ffn_neurons

    def flaky(model, layer, keep, adapter=None):
        if layer == 1:
            raise RuntimeError("disk full")
        return real(model, layer, keep, adapter)
    monkeypatch.setattr(apply_mod, "remove_ffn_neurons", flaky)
    with pytest.raises(PartialPruneError, match=r"blocks \[0\] were already pruned"):
        remove_neurons(m, mask_neurons(score_neurons_random(m, 0), 0.3))


# --- seeds, per-example correctness, paired tests, baseline reuse, tables -----------------------

from minilib.studies import structured as st  # noqa: E402


def test_ratio_sweep_rows_carry_seeds_and_correctness(monkeypatch):
    from minilib.eval.decision import decision_task
    from minilib.models import load
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=8, n_test=12, seed=0)
    head = torch.nn.Linear(64, 2)
    calls = []
    real = st.forward_throughput
    monkeypatch.setattr(st, "forward_throughput", lambda *a, **k: calls.append(1) or real(*a, **k))
    methods = st.baseline_methods(seeds=[0, 1, 2], names=["random", "neuron-norm", "neuron-maxprod", "authors-random"])
    df = st.ratio_sweep(m, head, task, methods, [0.0, 0.5], verbose=False, latency_repeats=1)
    assert set(df.method) == {"random", "neuron-norm", "neuron-maxprod", "authors-random"} and len(df) == 16
    for seeded in ("random", "authors-random"):
        assert sorted(df[(df.method == seeded) & (df.ratio == 0.5)].seed) == [0, 1, 2]
    assert df[df.method.isin(["neuron-norm", "neuron-maxprod"])].seed.isna().all()
    for r in df.itertuples():
        assert r.correct.dtype == bool and r.correct.shape == (12,) and r.correct.mean() == pytest.approx(r.acc)
    # every baseline prunes a uniform budget: one shape per ratio, its latency and size measured once
    assert len(calls) == 2
    half = df[df.ratio == 0.5]
    assert half.latency_s.nunique() == 1 and half.checkpoint_bytes.nunique() == 1 and half.params.nunique() == 1
    assert (df[df.ratio == 0].params > half.params.iloc[0]).all()
    records, packed = st.split_correct(df.assign(protocol="head-only"))
    assert "correct" not in records.columns and len(packed) == 16 and all(set(v) <= {"0", "1"} for v in packed.values())
    back = st.attach_correct(records, packed)
    for a, b in zip(back.correct, df.correct):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="distinct"):
        st.baseline_methods(seeds=[1, 1])
    with pytest.raises(ValueError, match="unknown baselines"):
        st.baseline_methods(names=["magnitude"])          # the word is kept for |W| in minilib.prune
    assert set(st.baseline_methods(0)) == {"random", "neuron-norm", "neuron-maxprod"}
    assert set(st.baseline_methods(seeds=[4], names=["authors-random"])) == {"authors-random@4"}
    assert st.split_method("authors-random@4") == ("authors-random", 4)


def test_pack_correct_rejects_garbage():
    assert st.unpack_correct(st.pack_correct([True, False, True])).tolist() == [True, False, True]
    with pytest.raises(ValueError):
        st.unpack_correct("01x")


def test_holm_known_values():
    np.testing.assert_allclose(st.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(st.holm([0.5]), [0.5])


def _rows(correct_by_method, protocol="head-only", ratio=0.3):
    rows = []
    for (method, seed), c in correct_by_method.items():
        c = np.asarray(c, dtype=bool)
        rows.append({"protocol": protocol, "method": method, "seed": seed, "ratio": ratio, "correct": c,
                     "acc": c.mean(), "ci95_low": 0.0, "ci95_high": 1.0, "n_test": len(c)})
    return rows


def test_paired_tests_mcnemar_and_random_mean():
    n = 200
    rng = np.random.default_rng(0)
    strat = np.ones(n, bool)
    strat[:20] = False                                    # strategy right on 180
    mag = strat.copy()
    mag[20:60] = False                                    # neuron-norm wrong on 40 more: b = 40, c = 0
    rnd = {("random", s): rng.random(n) < 0.5 for s in (0, 1, 2)}
    df = pd.DataFrame(_rows({("anatomy", None): strat, ("neuron-norm", None): mag, ("neuron-maxprod", None): strat,
                             **rnd})
                      + _rows({("anatomy", None): strat, ("magnitude", None): strat.copy(), **rnd}, ratio=0.5))
    t = st.paired_tests(df, n_resamples=1000)        # "magnitude" (older results) is read as neuron-norm
    assert set(t.baseline) == {"neuron-norm", "neuron-maxprod", "random"}
    m = t[(t.baseline == "neuron-norm") & (t.ratio == 0.3)].iloc[0]
    assert (m.b, m.c) == (40, 0) and m.p == pytest.approx(2 * 0.5 ** 40) and m.verdict == "better"
    assert m["diff"] == pytest.approx(0.2) and m.diff_low > 0
    mp = t[(t.baseline == "neuron-maxprod") & (t.ratio == 0.3)].iloc[0]
    assert mp.p == 1.0 and mp.verdict == "no difference"
    same = t[(t.baseline == "neuron-norm") & (t.ratio == 0.5)].iloc[0]
    assert same.p == 1.0 and same["diff"] == 0 and same.verdict == "no difference"
    r = t[(t.baseline == "random") & (t.ratio == 0.3)].iloc[0]
    assert r.runs == 3 and r.acc_baseline == pytest.approx(np.mean([v.mean() for v in rnd.values()]))
    assert r.verdict == "better" and r.p < 1e-6 and r.baseline_sd > 0
    assert (t.p_holm >= t.p).all()


def test_random_verdict_needs_the_strategy_beyond_every_seed():
    """The per-example test against the seeds' mean is conditional on the seeds drawn: a strategy that
    beats that mean but not every seed gets no verdict."""
    n, rng = 400, np.random.default_rng(1)
    strat = rng.random(n) < 0.8
    seeds = {("random", s): rng.random(n) < p for s, p in enumerate((0.5, 0.5, 0.95))}
    t = st.paired_tests(pd.DataFrame(_rows({("anatomy", None): strat, **seeds})), n_resamples=1000)
    r = t.iloc[0]
    assert r.p_holm < 1e-6 and r.diff_low > 0 and r.baseline_max > r.acc_strategy > r.baseline_min
    assert r.verdict == "no difference"


def test_paired_tests_refuse_unpaired_data():
    df = pd.DataFrame(_rows({("anatomy", None): np.ones(10, bool), ("neuron-norm", None): np.ones(12, bool)}))
    with pytest.raises(ValueError, match="same test examples"):
        st.paired_tests(df)
    with pytest.raises(ValueError, match="columns"):
        st.paired_tests(df.drop(columns=["correct"]))


ALL_METHODS = [("anatomy", None), ("anatomy-uniform", None), ("neuron-norm", None), ("neuron-maxprod", None),
               ("random", 0), ("random", 1), ("random", 2), ("authors-random", 0), ("authors-random", 1),
               ("authors-random", 2)]


def _results(tmp_path, rng, n=60, methods=(("anatomy", None), ("magnitude", None), ("random", 0), ("random", 1),
                                         ("random", 2)), acc=None, fam="BERT", protocols=("head-only", "finetuned"),
             ratios=(0.0, 0.3), ppl=None, majority=0.5, copy_of=None):
    """A strategy (and baseline) results file in ``tmp_path``: per protocol, ratio and method, per-item
    correctness drawn at ``acc(method, ratio)`` (default: 0.8 for the strategy and the dense model,
    0.5 otherwise), and ``ppl(method, ratio)`` as perplexity when given; ``copy_of[m]``: a method whose
    correctness ``m`` copies (listed before it).  The default methods are those of results written
    before the rename ("magnitude")."""
    import json
    acc = acc or (lambda method, ratio: 0.8 if method == "anatomy" or ratio == 0 else 0.5)
    rows = []
    for proto in protocols:
        for ratio in ratios:
            drawn = {}
            for method, seed in methods:
                c = drawn[(copy_of or {})[method]].copy() if method in (copy_of or {}) else rng.random(n) < acc(method, ratio)
                drawn[method] = c
                rows += _rows({(method, seed): c}, proto, ratio)
                if ppl is not None:
                    rows[-1]["perplexity"] = ppl(method, ratio)
    df = pd.DataFrame(rows)
    from minilib.stats import wilson_interval
    df["ci95_low"] = [wilson_interval(int(c.sum()), len(c))[0] for c in df.correct]
    df["ci95_high"] = [wilson_interval(int(c.sum()), len(c))[1] for c in df.correct]
    tests = st.paired_tests(df, n_resamples=200)
    records, packed = st.split_correct(df)
    params = {"model": "tiny-llama", "dataset": "sst2", "template": "{text}", "n_train": 8, "n_test": n, "seed": 0,
              "max_length": 64, "random_seeds": [0, 1, 2], "ratios": list(ratios), "protocols": list(protocols),
              "decision_state": "head"}
    base = records[~records.method.isin(["anatomy", "anatomy-uniform"])]
    (tmp_path / f"{fam}_pruning_baseline.json").write_text(json.dumps(
        {"parameters": params, "records": base.to_dict("records"),
         "correct": {k: v for k, v in packed.items() if "|anatomy" not in k}}, default=lambda o: None))
    (tmp_path / f"{fam}_pruning_strategy.json").write_text(json.dumps(
        {"parameters": params, "metrics": {"paired_tests": tests.to_dict("records"), "majority": majority},
         "records": records.to_dict("records"), "correct": packed}, default=lambda o: None))
    return params, df


def test_reuse_baselines_only_when_everything_matches(tmp_path):
    params, df = _results(tmp_path, np.random.default_rng(1))          # an older file: "magnitude"
    f = tmp_path / "BERT_pruning_baseline.json"
    got = st.reuse_baselines(f, params, [0.0, 0.3], ["head-only", "finetuned"])
    assert got is not None and set(got.method) == {"neuron-norm", "random"} and len(got) == 16
    want = df[df.method == "magnitude"].correct.iloc[0]
    np.testing.assert_array_equal(got[got.method == "neuron-norm"].correct.iloc[0], want)
    assert st.reuse_baselines(f, params, [0.3], ["head-only"], methods=["random", "neuron-norm"]) is not None
    assert st.reuse_baselines(f, params, [0.3], ["head-only"], methods=["random", "neuron-maxprod"]) is None
    only = st.reuse_baselines(f, params, [0.3], ["head-only"], methods=["random"])
    assert set(only.method) == {"random"}                               # only the baselines asked for
    assert st.reuse_baselines(f, {**params, "n_test": 61}, [0.3], ["head-only"]) is None
    assert st.reuse_baselines(f, {**params, "random_seeds": [0, 1]}, [0.3], ["head-only"]) is None
    assert st.reuse_baselines(f, params, [0.5], ["head-only"]) is None
    assert st.reuse_baselines(tmp_path / "missing.json", params, [0.3], ["head-only"]) is None
    cut = tmp_path / "cut" / "BERT_pruning_baseline.json"   # a write cut off: an error naming it, not "rerun"
    cut.parent.mkdir()
    cut.write_text(f.read_text()[:200])
    from minilib.results import ResultsError
    with pytest.raises(ResultsError, match=r"BERT_pruning_baseline.json is truncated.*rerun the BERT_pruning_baseline"):
        st.reuse_baselines(cut, params, [0.3], ["head-only"])


def test_tables_from_results(tmp_path):
    _results(tmp_path, np.random.default_rng(2), majority=0.3)          # older results: "magnitude"
    from minilib.tables import structured as stab
    table = stab.TABLES["anatomy_pruning_bert"](tmp_path)
    lines = [l for l in table.splitlines() if l.startswith("| head-only") or l.startswith("| finetuned")]
    assert len(lines) == 4 and "McNemar p" in table and "t-interval" in table and "(seeds 0." in table
    assert "neuron-norm" in table and "magnitude" not in table
    assert "No results" in stab.TABLES["anatomy_pruning_gpt2"](tmp_path)
    verdict = stab.TABLES["anatomy_verdict"](tmp_path)
    assert "BERT (`tiny-llama`), head-only protocol" in verdict and "finetuned protocol" in verdict
    assert "Strategy vs neuron-norm: **better** at 30%" in verdict  # 0.8 vs 0.5 on 60 items is significant
    assert "One multiple-comparison family: the 4 tests" in verdict  # 2 protocols x (neuron-norm, random)
    assert "over the random-mask seeds): **better** at 30%" in verdict   # resolved at the seeds level too
    assert "the uniform-budget ablation did not run" in verdict and "magnitude" not in verdict


def test_tables_and_verdict_with_every_baseline(tmp_path):
    _results(tmp_path, np.random.default_rng(3), n=400, methods=ALL_METHODS, fam="GPT2", protocols=("head-only",),
             ratios=(0.0, 0.1, 0.3), ppl=lambda m, r: 15.0 * (1 + r))
    from minilib.tables import structured as stab
    table = stab.TABLES["anatomy_pruning_gpt2"](tmp_path)
    head = table.splitlines()[2]
    for col in ("anatomy strategy", "anatomy, uniform budget", "| neuron-norm |", "| neuron-maxprod |",
                "authors-random (mean of 3 seeds", "random (mean of 3 seeds", "strategy - neuron-maxprod [paired bootstrap], McNemar p",
                "strategy - authors-random mean", "perplexity strategy / neuron-norm / neuron-maxprod / random"):
        assert col in head, col
    assert all(l.count("|") == head.count("|") for l in table.splitlines()[2:])
    assert "No fine-tuned protocol in this run" in table
    verdict = stab.TABLES["anatomy_verdict"](tmp_path)
    # per ratio: strategy vs neuron-norm, neuron-maxprod, random, authors-random, uniform; uniform vs the two weight scores
    assert "One multiple-comparison family: the 14 tests" in verdict
    for part in ("Strategy vs neuron-maxprod:", "Strategy vs the authors' random baseline", "Strategy vs its uniform-budget "
                 "ablation", "The anatomy score alone (uniform budget) vs neuron-maxprod", "**What does the work**"):
        assert part in verdict, part
    assert "GPT2 (`tiny-llama`)**: No fine-tuned protocol in this run" in verdict


def test_verdict_says_whether_the_score_or_the_budget_does_the_work(tmp_path):
    from minilib.tables import structured as stab
    meth = [("anatomy", None), ("anatomy-uniform", None), ("neuron-norm", None), ("neuron-maxprod", None),
            ("random", 0), ("random", 1), ("random", 2)]
    budget = {"anatomy": 0.85, "anatomy-uniform": 0.6, "neuron-norm": 0.6, "neuron-maxprod": 0.6}
    _results(tmp_path, np.random.default_rng(4), n=400, methods=meth, protocols=("head-only",),
             acc=lambda m, r: 0.8 if r == 0 else budget.get(m, 0.55),
             copy_of={"neuron-norm": "anatomy-uniform", "neuron-maxprod": "anatomy-uniform"})
    v = stab.verdict_text(tmp_path)
    assert "the layer budget **helps**" in v and "is not distinguished from neuron-norm or neuron-maxprod" in v
    assert "In short: **the layer budget does the work, not the anatomy score**" in v
    score = {"anatomy": 0.85, "anatomy-uniform": 0.85, "neuron-norm": 0.6, "neuron-maxprod": 0.6}
    meth = [meth[1], meth[0]] + meth[2:]             # the strategy copies its uniform-budget version
    _results(tmp_path, np.random.default_rng(5), n=400, methods=meth, protocols=("head-only",),
             acc=lambda m, r: 0.8 if r == 0 else score.get(m, 0.55), copy_of={"anatomy": "anatomy-uniform"})
    v = stab.verdict_text(tmp_path)
    assert "the layer budget makes no resolved difference" in v and "**beats** neuron-norm at 30%" in v
    assert "In short: **the anatomy score does the work, not the layer budget**" in v


def test_collapsed_baselines_are_flagged_not_counted(tmp_path):
    """A baseline at the majority class (or with a perplexity far above the dense model's) has
    collapsed the model: beating it is reported as no evidence, and the collapse is named."""
    from minilib.tables import structured as stab
    meth = [("anatomy", None), ("anatomy-uniform", None), ("neuron-norm", None), ("neuron-maxprod", None),
            ("random", 0), ("random", 1), ("random", 2)]
    acc = {"anatomy": 0.75, "anatomy-uniform": 0.75, "neuron-norm": 0.5, "neuron-maxprod": 0.75}
    ppl = {"neuron-norm": 8000.0}
    _results(tmp_path, np.random.default_rng(6), n=400, methods=meth, fam="GPT2", protocols=("head-only",),
             acc=lambda m, r: 0.8 if r == 0 else acc.get(m, 0.7), ppl=lambda m, r: 15.0 if r == 0 else ppl.get(m, 20.0),
             majority=0.54, copy_of={"neuron-maxprod": "anatomy-uniform"})
    entries = stab.block_tests(tmp_path)
    nn = [e for e in entries if e["b"] == "neuron-norm"]
    assert nn and all("not above the majority class 0.540" in e["collapsed"] and "perplexity 8,000 against dense 15.0"
                      in e["collapsed"] for e in nn)
    assert not any(e["collapsed"] for e in entries if e["b"] != "neuron-norm")
    v = stab.verdict_text(tmp_path)
    assert "Strategy vs neuron-norm: better only than a collapsed neuron-norm at 30%" in v and "(no evidence for it)" in v
    assert "Collapsed models (accuracy whose 95% interval is not above the majority class, or perplexity over 10x the dense model's): " \
           "neuron-norm at 30%" in v
    # beating a collapsed baseline is no evidence that the anatomy score works
    assert "beats only a collapsed neuron-norm" in v and "the anatomy score does the work" not in v
    # a seeded baseline has collapsed only where every seed's model has
    g = pd.DataFrame([{"method": "random", "acc": a, "ci95_low": a - 0.05, "perplexity": 20.0} for a in (0.5, 0.52, 0.7)])
    assert stab.collapse_note(g, "random", 0.54, 15.0) == ""
    g.loc[2, "ci95_low"] = 0.5
    assert "seeds 0.500-0.700" in stab.collapse_note(g, "random", 0.54, 15.0)


def test_profiles_size_the_decoder_like_the_encoder():
    """The GPT2 default runs >= 1,000 test items and ratios up to >= 30% with the uniform-budget
    ablation and both weight-score baselines; its protocol is head-only (the LoRA run was no fine-tuning)."""
    from minilib.profiles import NOTEBOOKS
    for nb in ("GPT2_pruning_baseline", "GPT2_pruning_strategy", "BERT_pruning_baseline", "BERT_pruning_strategy"):
        d = NOTEBOOKS[nb][1]["default"]
        assert d["n_test"] >= 1000 and max(d["ratios"]) >= 0.3, nb
        assert {"neuron-norm", "neuron-maxprod"} <= set(d["baselines"]), nb
    assert NOTEBOOKS["GPT2_pruning_strategy"][1]["default"]["uniform_ablation"] is True
    assert NOTEBOOKS["GPT2_pruning_baseline"][1]["default"]["protocols"] == ["head-only"]
    assert set(NOTEBOOKS["GPT2_pruning_baseline"][1]["test"]["baselines"]) >= {"authors-random"}
    assert set(NOTEBOOKS["GPT2_pruning_baseline"][1]["default"]["baselines"]) <= set(st.BASELINES)


def test_strategy_sweep_budgets_preserved_and_reused_baselines(tmp_path, monkeypatch):
    """The strategy notebooks' loop: budgets add up to the ratio, preserved neurons survive, and
    baselines reused from an earlier run give the same strategy rows as baselines measured here."""
    from minilib.eval.decision import decision_task
    from minilib.models import load
    monkeypatch.setenv("MINILIB_CACHE", str(tmp_path / "cache"))
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=16, n_test=12, seed=0)
    opts = dict(random_seeds=[0, 1], preserve_fraction=0.05, strength=0.5, anatomy_dir=tmp_path / "an",
                batch_size=8, max_length=32, verbose=False, latency_repeats=1)
    run = st.strategy_sweep(m, task, ["head-only"], [0.0, 0.3], **opts)
    df = run["sweep"]
    assert set(df.method) == {"anatomy", "random", "neuron-norm", "neuron-maxprod"} and set(df.protocol) == {"head-only"}
    assert sorted(df[(df.method == "random") & (df.ratio == 0.3)].seed) == [0, 1]
    b = run["budgets"]["head-only"]
    widths = ffn_widths(m.model)
    assert int(b["removed@0.3"].sum()) == round(0.3 * sum(widths))
    assert (b["removed@0.3"] <= np.array(widths) - b["preserved"]).all() and (b["preserved"] > 0).all()
    assert run["preserved_removed"] == {"head-only": 0}
    anat = df[(df.method == "anatomy") & (df.ratio == 0.3)].iloc[0]
    assert anat.ffn_ratio == pytest.approx(0.3, abs=0.01)
    base = df[df.method != "anatomy"]
    again = st.strategy_sweep(m, task, ["head-only"], [0.0, 0.3], baselines=base, **opts)["sweep"]
    assert len(again) == len(df)
    reused = again[(again.method == "anatomy") & (again.ratio == 0.3)].iloc[0]
    np.testing.assert_array_equal(reused.correct, anat.correct)
