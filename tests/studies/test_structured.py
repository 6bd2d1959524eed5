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
                           score_neurons_anatomy, score_neurons_norm, score_neurons_random, zero_neurons)
from minilib.studies.anatomy import Anatomy, layer_profile, preserved_neurons


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
        masks = mask_neurons(scores, ratio, layer_profile(an), pres)
        assert not any(bool(k[p].any()) for k, p in zip(masks, pres)), f"preserved neuron removed at {ratio}"
        assert abs(sum(int(k.sum()) for k in masks) - round(ratio * 256)) == 0
    with pytest.raises(SparsityError):
        mask_neurons(scores, 0.95, layer_profile(an), pres)


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
    rep = remove_neurons(m.model, mask_neurons(score_neurons_norm(m.model), 0.3), method="magnitude")
    path = save_model(m.model, m.tokenizer, tmp_path / "pruned", extra={"pruning": rep.as_dict()}, head=head)
    files = {p.name for p in Path(path).iterdir()}
    assert "model.safetensors" in files and "minilib_plan.json" in files and "decision_head.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    re = load_model(path)
    assert ffn_widths(re.model) == rep.after["ffn_widths"]
    assert re.plan["extra"]["pruning"]["method"] == "magnitude"
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


def test_ratio_sweep_rows_carry_seeds_and_correctness():
    from minilib.eval.decision import decision_task
    from minilib.models import load
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=8, n_test=12, seed=0)
    head = torch.nn.Linear(64, 2)
    df = st.ratio_sweep(m, head, task, st.baseline_methods(seeds=[0, 1, 2]), [0.0, 0.5], verbose=False,
                        latency_repeats=1)
    assert set(df.method) == {"random", "magnitude"} and len(df) == 8
    assert sorted(df[(df.method == "random") & (df.ratio == 0.5)].seed) == [0, 1, 2]
    assert df[df.method == "magnitude"].seed.isna().all()
    for r in df.itertuples():
        assert r.correct.dtype == bool and r.correct.shape == (12,) and r.correct.mean() == pytest.approx(r.acc)
    records, packed = st.split_correct(df.assign(protocol="head-only"))
    assert "correct" not in records.columns and len(packed) == 8 and all(set(v) <= {"0", "1"} for v in packed.values())
    back = st.attach_correct(records, packed)
    for a, b in zip(back.correct, df.correct):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="distinct"):
        st.baseline_methods(seeds=[1, 1])
    assert set(st.baseline_methods(0)) == {"random", "magnitude"}           # the old form still works


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
    mag[20:60] = False                                    # magnitude wrong on 40 more: b = 40, c = 0
    rnd = {("random", s): rng.random(n) < 0.5 for s in (0, 1, 2)}
    df = pd.DataFrame(_rows({("anatomy", None): strat, ("magnitude", None): mag, **rnd})
                      + _rows({("anatomy", None): strat, ("magnitude", None): strat.copy(), **rnd}, ratio=0.5))
    t = st.paired_tests(df, n_resamples=1000)
    m = t[(t.baseline == "magnitude") & (t.ratio == 0.3)].iloc[0]
    assert (m.b, m.c) == (40, 0) and m.p == pytest.approx(2 * 0.5 ** 40) and m.verdict == "better"
    assert m["diff"] == pytest.approx(0.2) and m.diff_low > 0
    same = t[(t.baseline == "magnitude") & (t.ratio == 0.5)].iloc[0]
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
    df = pd.DataFrame(_rows({("anatomy", None): np.ones(10, bool), ("magnitude", None): np.ones(12, bool)}))
    with pytest.raises(ValueError, match="same test examples"):
        st.paired_tests(df)
    with pytest.raises(ValueError, match="columns"):
        st.paired_tests(df.drop(columns=["correct"]))


def _results(tmp_path, rng, n=60):
    import json
    rows = []
    for proto in ("head-only", "finetuned"):
        for ratio in (0.0, 0.3):
            for method, seed in [("anatomy", None), ("magnitude", None), ("random", 0), ("random", 1), ("random", 2)]:
                c = rng.random(n) < (0.8 if method == "anatomy" or ratio == 0 else 0.5)
                rows += _rows({(method, seed): c}, proto, ratio)
    df = pd.DataFrame(rows)
    tests = st.paired_tests(df, n_resamples=1000)
    records, packed = st.split_correct(df)
    params = {"model": "tiny-llama", "dataset": "sst2", "template": "{text}", "n_train": 8, "n_test": n, "seed": 0,
              "max_length": 64, "random_seeds": [0, 1, 2], "ratios": [0.0, 0.3], "protocols": ["head-only", "finetuned"],
              "decision_state": "head"}
    base = records[records.method != "anatomy"]
    (tmp_path / "BERT_pruning_baseline.json").write_text(json.dumps(
        {"parameters": params, "records": base.to_dict("records"),
         "correct": {k: v for k, v in packed.items() if "|anatomy|" not in k}}, default=lambda o: None))
    (tmp_path / "BERT_pruning_strategy.json").write_text(json.dumps(
        {"parameters": params, "metrics": {"paired_tests": tests.to_dict("records")}, "records": records.to_dict("records"),
         "correct": packed}, default=lambda o: None))
    return params, df


def test_reuse_baselines_only_when_everything_matches(tmp_path):
    params, df = _results(tmp_path, np.random.default_rng(1))
    f = tmp_path / "BERT_pruning_baseline.json"
    got = st.reuse_baselines(f, params, [0.0, 0.3], ["head-only", "finetuned"])
    assert got is not None and set(got.method) == {"magnitude", "random"} and len(got) == 16
    want = df[df.method == "magnitude"].correct.iloc[0]
    np.testing.assert_array_equal(got[got.method == "magnitude"].correct.iloc[0], want)
    assert st.reuse_baselines(f, {**params, "n_test": 61}, [0.3], ["head-only"]) is None
    assert st.reuse_baselines(f, {**params, "random_seeds": [0, 1]}, [0.3], ["head-only"]) is None
    assert st.reuse_baselines(f, params, [0.5], ["head-only"]) is None
    assert st.reuse_baselines(tmp_path / "missing.json", params, [0.3], ["head-only"]) is None


def test_tables_from_results(tmp_path):
    _results(tmp_path, np.random.default_rng(2))
    from minilib.tables import structured as stab
    table = stab.TABLES["anatomy_pruning_bert"](tmp_path)
    lines = [l for l in table.splitlines() if l.startswith("| head-only") or l.startswith("| finetuned")]
    assert len(lines) == 4 and "McNemar p" in table and "t-interval" in table and "(seeds 0." in table
    assert "No results" in stab.TABLES["anatomy_pruning_gpt2"](tmp_path)
    verdict = stab.TABLES["anatomy_verdict"](tmp_path)
    assert "BERT (`tiny-llama`), head-only protocol" in verdict and "finetuned protocol" in verdict
    assert "Strategy vs magnitude: **better** at 30%" in verdict  # 0.8 vs 0.5 on 60 items is significant
    assert "One multiple-comparison family: the 4 tests" in verdict  # 2 protocols x (magnitude, random)
    assert "over the random-mask seeds): **better** at 30%" in verdict   # resolved at the seeds level too


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
    assert set(df.method) == {"anatomy", "random", "magnitude"} and set(df.protocol) == {"head-only"}
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
