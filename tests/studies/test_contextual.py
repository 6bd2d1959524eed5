"""Contextual pruning (Mini-GPTs) on tiny models: L1 statistics, thresholds, physical removal, the
decomposed protocol on the same test text (neurons only, vocabulary only, both, the dense control,
the coverage curve, the authors' protocol), and the tables generated from its results."""

import json
import math

import pandas as pd
import pytest
import torch

from minilib.calib import collect_l1_stats
from minilib.data import CorpusError
from minilib.eval import parameters_by_type
from minilib.hooks import count_hooks
from minilib.models import ffn_widths, load
from minilib.prune import SparsityError, check_threshold
from minilib.studies import contextual as study
from minilib.studies.contextual import layer_removal, normalize, prune_neurons


def test_l1_statistics_live_in_the_toolkit():
    import minilib.calib
    from minilib.calib import l1
    assert study.collect_l1_stats is minilib.calib.collect_l1_stats is l1.collect_l1_stats
    assert study.L1Stats is minilib.calib.L1Stats and study.normalize is l1.normalize and study.SCALES == l1.SCALES


def test_stats_shapes_and_no_hook_leak(tiny_decoder, windows):
    model, tok, ad = tiny_decoder
    st = collect_l1_stats(model, windows(tok))
    assert count_hooks(model) == 0
    assert st.scale == "absolute" and [s.numel() for s in st.ffn] == ffn_widths(model)
    for s, raw in zip(st.ffn, st.mean_abs_ffn):  # the authors' rule: the raw mean |a| per token
        assert torch.equal(s, raw) and s.min() >= 0
    med = st.rescaled("median")
    for s in med.ffn + list(med.linear.values()):
        assert s.min() >= 0 and float(s.median()) == pytest.approx(1.0)  # a typical neuron scores 1
    n_lin = sum(len(ad.linear_layers(b)) for b in ad.blocks(model))
    assert len(st.linear) == n_lin and len(st.mean_abs_linear_rest) == n_lin


@pytest.mark.parametrize("name", ["tiny-opt", "tiny-llama"])
def test_stats_are_what_the_authors_compute(name, windows):
    """Post-activation means over every position (and without the first one), and min(mean|y|, mean|y-b|)
    for a linear output with a bias -- checked against a direct computation with plain hooks."""
    model, tok, ad = load(name)
    x = windows(tok)
    st = collect_l1_stats(model, x)
    ffn = ad.ffn(ad.blocks(model)[1])
    seen = {}
    h1 = ffn.down.register_forward_hook(lambda m, i, o: seen.__setitem__("post", i[0].detach()))
    h2 = ffn.up.register_forward_hook(lambda m, i, o: seen.__setitem__("up", o.detach()))
    try:
        with torch.no_grad():
            model(input_ids=x)
    finally:
        h1.remove()
        h2.remove()
    post, up = (seen[k].double().view(x.shape[0], x.shape[1], -1) for k in ("post", "up"))  # OPT flattens
    torch.testing.assert_close(st.mean_abs_ffn[1], post.abs().mean((0, 1)))
    torch.testing.assert_close(st.mean_abs_ffn_rest[1], post[:, 1:].abs().mean((0, 1)))
    want = up.abs().mean((0, 1))
    if ffn.up.bias is not None:
        want = torch.minimum(want, (up - ffn.up.bias.double()).abs().mean((0, 1)))
    torch.testing.assert_close(st.mean_abs_linear[f"1.{ad.ffn_paths['up']}"], want)


def test_median_scale_ignores_one_massive_neuron(windows):
    """The former max-normalization let one huge neuron set a layer's scale; the median does not."""
    a = torch.tensor([0.2, 0.4, 0.5, 0.6, 0.8], dtype=torch.float64)
    b = a.clone()
    b[4] = 2900.0  # a massive activation
    torch.testing.assert_close(normalize(a)[:4], normalize(b)[:4])
    assert torch.equal(normalize(a, "absolute"), a)
    with pytest.raises(ValueError, match="scale must be one of"):
        normalize(a, "max")
    with pytest.raises(ValueError, match="scale must be one of"):
        collect_l1_stats(load("tiny-llama").model, windows(load("tiny-llama").tokenizer), scale="max")


def test_layer_removal_counts_and_matched_budget(windows, mask_ffn_neurons):
    model, tok, _ = load("tiny-llama")
    st = collect_l1_stats(model, windows(tok))
    eps = float(torch.cat(st.ffn).median())
    lay = layer_removal(model, st, [eps])
    a = lay[lay.rule == "absolute"]
    masks = mask_ffn_neurons(model, st, eps)
    assert a.removed.tolist() == [int(m.sum()) for m in masks]
    b = lay[lay.rule == "median"]  # the other rule at the threshold that removes as many in total
    assert b.removed.sum() == a.removed.sum() and len(b) == len(a)
    assert b.threshold.iloc[0] != eps


def test_stats_hooks_removed_when_forward_raises(tiny_decoder):
    model, tok, _ = tiny_decoder
    bad = torch.full((1, 8), 10 ** 7)  # out-of-vocabulary id: the embedding raises
    with pytest.raises(Exception):
        collect_l1_stats(model, bad.repeat(64, 1))
    assert count_hooks(model) == 0


def test_corpus_too_small_for_stats(windows):
    model, tok, _ = load("tiny-llama")
    with pytest.raises(CorpusError, match="calibration has 8 tokens"):
        collect_l1_stats(model, windows(tok)[:1, :8])


def test_removing_zero_neurons_keeps_logits(tiny_decoder, windows, logits, silence_neurons):
    model, tok, ad = tiny_decoder
    idx = torch.tensor([0, 3, 7, 20, 64])
    silence_neurons(model, 0, idx)
    silence_neurons(model, 1, idx[:2])
    x = windows(tok)
    before = logits(model, x)
    st = collect_l1_stats(model, x)
    # the zeroed neurons have norm 0 (GELU/SiLU/ReLU of 0 is 0); keep every other neuron with ε tiny
    assert torch.all(st.ffn[0][idx] == 0)
    rep = prune_neurons(model, st, 1e-12, verbose=False)
    assert rep.removed_per_layer == [5, 2]
    assert ffn_widths(model) == [128 - 5, 128 - 2]
    sb, sa = rep.before["sizes"], rep.after["sizes"]
    assert sa["ffn"] < sb["ffn"] and sb["embedding"] == sa["embedding"]
    torch.testing.assert_close(logits(model, x), before, atol=1e-5, rtol=1e-5)


def test_threshold_selects_exactly_under_eps(windows, mask_ffn_neurons):
    model, tok, ad = load("tiny-llama")
    st = collect_l1_stats(model, windows(tok), scale="median")
    for eps in (0.0, 0.5, 0.9, 1.2):
        masks = mask_ffn_neurons(model, st, eps, criterion="post_act")
        for m, s in zip(masks, st.ffn):
            assert torch.equal(m, s < eps)
        masks = mask_ffn_neurons(model, st, eps, criterion="any")
        for i, (m, s) in enumerate(zip(masks, st.ffn)):
            exp = (s < eps) | (st.linear[f"{i}.mlp.up_proj"] < eps) | (st.linear[f"{i}.mlp.gate_proj"] < eps)
            assert torch.equal(m, exp)
    rep = prune_neurons(model, st, 0.9, verbose=False)
    exp = [int(m.sum()) for m in mask_ffn_neurons(load("tiny-llama").model, st, 0.9)]
    assert rep.removed_per_layer == exp and sum(exp) > 0  # what was asked is what was done
    assert rep.table().set_index("type").loc["ffn", "after"] == parameters_by_type(model)["ffn"]


def test_bad_thresholds(windows, mask_ffn_neurons):
    model, tok, _ = load("tiny-gpt2")
    st = collect_l1_stats(model, windows(tok))
    for bad in (-1e-3, float("nan"), float("inf"), "0.1", None):
        with pytest.raises(SparsityError, match="number >= 0"):
            check_threshold(bad)
    with pytest.raises(SparsityError, match="number >= 0"):
        mask_ffn_neurons(model, st, -0.1)
    with pytest.raises(SparsityError, match="remove every FFN neuron of layer 0"):
        mask_ffn_neurons(model, st, 1e6)
    other = load("tiny-llama").model  # statistics from another model: a clear error, not a KeyError
    with pytest.raises(ValueError, match="another model"):
        prune_neurons(other, st, 0.1, verbose=False)


def test_equal_widths_remove_as_many_neurons_at_one_width(windows, mask_ffn_neurons):
    """``ffn_widths="equal"``: the total removed is the threshold's (up to rounding, one neuron per
    layer), every layer keeps one width, each its best-scoring neurons; a bad value is refused."""
    from minilib.prune import score_neurons_l1
    from minilib.studies.contextual import ContextualConfig
    model, tok, _ = load("tiny-llama")
    st = collect_l1_stats(model, windows(tok), scale="median")
    asked = sum(int(m.sum()) for m in mask_ffn_neurons(model, st, 0.9))
    scores = score_neurons_l1(model, st, "any")
    rep = prune_neurons(model, st, 0.9, verbose=False, widths="equal")
    widths = ffn_widths(model)
    assert len(set(widths)) == 1 and abs(rep.ffn_neurons_removed - asked) <= len(widths) and asked > 0
    assert rep.target["equal_widths"] is True and len(set(rep.removed_per_layer)) == 1
    ref = load("tiny-llama").model
    for l, s in enumerate(scores):  # each layer kept its best-scoring neurons: the kept up rows are those
        keep = torch.argsort(s, descending=True, stable=True)[:widths[l]].sort().values
        torch.testing.assert_close(model.model.layers[l].mlp.up_proj.weight, ref.model.layers[l].mlp.up_proj.weight[keep])
    with pytest.raises(ValueError, match="ffn_widths must be one of \\['threshold', 'equal'\\], got 'same'"):
        prune_neurons(model, st, 0.9, verbose=False, widths="same")
    with pytest.raises(ValueError, match="ffn_widths must be one of"):
        ContextualConfig(ffn_widths="same")


def test_attention_mask_mode_zeroes_rows_only(windows):
    model, tok, ad = load("tiny-opt")
    st = collect_l1_stats(model, windows(tok), scale="median")
    shapes = {n: p.shape for n, p in model.named_parameters()}
    rep = prune_neurons(model, st, 0.9, attention="mask", verbose=False)
    assert rep.notes["rows_masked"] > 0 and rep.after["sizes"]["nonzeros"] < rep.before["sizes"]["nonzeros"]
    att = {n: s for n, s in shapes.items() if "self_attn" in n}
    assert all(dict(model.named_parameters())[n].shape == s for n, s in att.items())



# --- the protocol: every setting on the same text; the generated tables ---------------------------

@pytest.fixture(scope="module")
def protocol():
    """One small run of the whole protocol on tiny-llama: dense, the dense control, neurons only (an ε
    that removes nothing and one that removes ~30%), vocabulary only, both, the coverage curve, and
    the authors' protocol."""
    m = load("tiny-llama")
    eps = float(torch.cat(study.domain_stats(m.model, study.corpus_splits(m.tokenizer, "tiny")["calib"], 8, 32).ffn)
                .quantile(0.3))
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    cfg = study.ContextualConfig(thresholds=[0.0, eps], neuron_thresholds=[1e-5, eps], calib_windows=8, seqlen=32,
                                 test_chunks=12, dev_chunks=2, chunk_bytes=512, eval_seqlen=64, ft_steps=2,
                                 ft_seqlen=32, ft_batch=2, ft_eval_every=1, n_resamples=200,
                                 coverage_tokens=[1024, 2048, 4096, 8192, 10 ** 6], coverage_min_counts=[1, 2, 4],
                                 coverage_eval_tokens=[1024], authors_thresholds=[0.0, eps])
    out = study.run_domain(m.model, m.tokenizer, "tiny", None, cfg, authors=True, verbose=False)
    return m, before, out, eps, cfg


def _rec(out, protocol, setting, stage, eps=None):
    rec = pd.DataFrame(out["records"])
    sel = rec[(rec.protocol == protocol) & (rec.setting == setting) & (rec.stage == stage)]
    if eps is not None:
        sel = sel[sel.eps == eps]
    assert len(sel) == 1, (protocol, setting, stage, eps)
    return sel.iloc[0]


def test_protocol_scores_every_setting_on_the_same_text(protocol):
    m, before, out, eps, cfg = protocol
    assert all(torch.equal(v, m.model.state_dict()[k]) for k, v in before.items())  # the model is left as it was
    rec = pd.DataFrame(out["records"])
    assert rec.test_bytes.nunique() == 1 and rec.test_chunks.nunique() == 1  # the same characters everywhere
    assert list(zip(rec.protocol, rec.setting, rec.stage)) == [
        ("ours", "dense", "dense"), ("ours", "dense", "dense-finetuned"),
        ("ours", "neurons", "pruned"), ("ours", "neurons", "finetuned"),   # ε = 1e-5: removes nothing
        ("ours", "neurons", "pruned"), ("ours", "neurons", "finetuned"),
        ("ours", "vocab", "pruned"), ("ours", "vocab", "finetuned"), ("ours", "both", "pruned"),
        ("ours", "both", "finetuned"), ("authors", "dense", "dense-finetuned"), ("authors", "vocab", "pruned"),
        ("authors", "vocab", "finetuned"), ("authors", "both", "pruned"), ("authors", "both", "finetuned")]
    assert rec.key.is_unique and set(rec.key) <= set(out["chunks"])
    dense = rec.iloc[0]
    assert dense.d_bpb == 0 and dense.fallback_rate == 0 and dense.bpb_low < dense.bpb < dense.bpb_high
    for r in rec.iloc[1:].itertuples():
        assert len(out["chunks"][r.key]) == r.test_chunks == cfg.test_chunks
        assert r.d_bpb_low <= r.d_bpb <= r.d_bpb_high
        assert r.d_bpb == pytest.approx(r.bpb - dense.bpb)
        assert r.prune_vocab == (r.setting in ("vocab", "both")) and r.prune_neurons == (r.setting in ("neurons", "both"))
    for r in rec[rec.setting.isin(["vocab", "both"]) & (rec.protocol == "ours")].itertuples():
        assert r.vocab < dense.vocab and r.fallback_rate > 0  # unseen test tokens are spelt in bytes
        assert r.train_fallback_rate > 0  # the vocabulary comes from calib only: train holds unseen tokens too
    vocab_only = _rec(out, "ours", "vocab", "pruned")
    both = _rec(out, "ours", "both", "pruned")
    assert 0 < both.ffn_removed_pct < 100 and both.size_pct < vocab_only.size_pct < 100
    ft = rec[rec.stage == "finetuned"]
    assert (ft[ft.protocol == "ours"].target_dev_bpb == dense.dev_bpb).all()  # early stopping against dense, same dev
    assert ft.stopped.str.contains("bits per byte|budget spent|removes no neuron").all()
    assert {"dev_bpb", "step", "protocol", "setting"} <= set(pd.DataFrame(out["curves"]).columns)


def test_neuron_only_keeps_the_vocabulary_and_vocab_only_keeps_the_ffns(protocol):
    m, before, out, eps, cfg = protocol
    dense = _rec(out, "ours", "dense", "dense")
    for stage in ("pruned", "finetuned"):
        n = _rec(out, "ours", "neurons", stage, eps)
        assert n.vocab == dense.vocab and n.embedding_params == dense.embedding_params and n.fallback_rate == 0
        assert n.ffn_params < dense.ffn_params and n.ffn_neurons_removed > 0 and not n.prune_vocab
        v = _rec(out, "ours", "vocab", stage)
        assert v.ffn_params == dense.ffn_params and v.ffn_neurons_removed == 0 and v.attention_params == dense.attention_params
        assert v.embedding_params < dense.embedding_params and not v.prune_neurons
        b = _rec(out, "ours", "both", stage, eps)
        assert b.ffn_params == n.ffn_params and b.vocab == v.vocab  # both = the same neurons and the same vocabulary
    # an ε that removes no neuron is the dense model: recorded, not scored
    same = _rec(out, "ours", "neurons", "pruned", 1e-5)
    assert same.identical_to == "dense" and same.ffn_neurons_removed == 0 and same.d_bpb == 0
    assert out["chunks"][same.key] == out["chunks"]["dense"]


def test_dense_finetuned_control(protocol):
    m, before, out, eps, cfg = protocol
    for proto in ("ours", "authors"):
        c = _rec(out, proto, "dense", "dense-finetuned")
        assert c.ft_steps == cfg.ft_steps  # the whole budget: no early-stopping target (it starts at the target)
        assert math.isnan(c.target_dev_bpb) and c.size_pct == 100.0 and c.vocab == len(m.tokenizer)
        assert len(out["chunks"][c.key]) == cfg.test_chunks and c.key == f"{proto}/dense-finetuned"
    cur = pd.DataFrame(out["curves"])
    assert len(cur[(cur.setting == "dense") & (cur.protocol == "ours")].dropna(subset=["dev_bpb"])) == cfg.ft_steps + 1


def test_coverage_curve(protocol):
    m, before, out, eps, cfg = protocol
    cov = pd.DataFrame(out["coverage"])
    calib = out["splits"]["calib"][1] - out["splits"]["calib"][0]
    assert cov.calib_tokens.max() == calib and cov[cov.calib_tokens == calib].whole_split.all()  # clipped to the split
    for mc, g in cov.groupby("min_count"):
        g = g.sort_values("calib_tokens")
        assert g.vocab.is_monotonic_increasing and g.test_fallback_rate.is_monotonic_decreasing  # nested prefixes
        assert g.calib_tokens.tolist() == [1024, 2048, 4096, 8192, calib]
    one = cov[cov.min_count == 1].sort_values("calib_tokens")
    assert one.vocab.iloc[-1] > one.vocab.iloc[0] and one.test_fallback_rate.iloc[-1] < one.test_fallback_rate.iloc[0]
    for n, g in cov.groupby("calib_tokens"):
        assert g.sort_values("min_count").vocab.is_monotonic_decreasing
    # the whole-split point is the vocabulary-only setting's vocabulary and byte-spelt share
    vocab_only = _rec(out, "ours", "vocab", "pruned")
    whole = one.iloc[-1]
    assert whole.vocab == vocab_only.vocab and whole.test_fallback_rate == pytest.approx(vocab_only.fallback_rate)
    assert whole.size_pct == pytest.approx(vocab_only.size_pct, abs=1e-6)
    scored = cov[cov.get("scored", False) == True]  # noqa: E712
    assert scored.calib_tokens.tolist() == [1024] and len(out["chunks"][scored.key.iloc[0]]) == cfg.test_chunks
    assert scored.fallback_rate.iloc[0] == pytest.approx(scored.test_fallback_rate.iloc[0])  # counting = scoring


def test_authors_protocol_uses_one_text(protocol):
    m, before, out, eps, cfg = protocol
    rec = pd.DataFrame(out["records"])
    spans = ("calib_span", "train_span", "dev_span", "test_span")
    test_bytes = int(rec.test_bytes.iloc[0])
    for r in rec[rec.protocol == "authors"].to_dict("records"):
        assert all(r[k] == ["test", "bytes", 0, test_bytes] for k in spans)  # the same text for everything
    for r in rec[rec.protocol == "ours"].to_dict("records"):
        assert [r[k][0] for k in spans] == ["calib", "train", "dev", "test"]
        assert r["calib_span"][2:] == out["splits"]["calib"] and r["train_span"][2:] == out["splits"]["train"]
        assert r["test_span"] == ["test", "bytes", 0, test_bytes]
    for stage in ("pruned", "finetuned"):  # token counts from the test text itself: no test token is spelt in bytes
        a, o = _rec(out, "authors", "vocab", stage), _rec(out, "ours", "vocab", stage)
        assert a.fallback_rate == 0 and o.fallback_rate > 0 and a.vocab < o.vocab
    a_ft = _rec(out, "authors", "both", "finetuned", eps)
    assert a_ft.target_dev_bpb == pytest.approx(_rec(out, "ours", "dense", "dense").bpb)  # stops at dense on that text
    assert out["text"]["authors_tokens"] >= 1000


def test_config():
    cfg = study.ContextualConfig(thresholds=[0.0, 0.1], neuron_thresholds=[1e-5, 0.1])
    assert cfg.settings("ours") == [("neurons", 1e-5), ("neurons", 0.1), ("vocab", 0.0), ("both", 0.1)]
    assert cfg.settings("authors") == [("vocab", 0.0), ("both", 0.1)]
    off = study.ContextualConfig(thresholds=[0.0, 0.1, 0.2], neuron_thresholds=[0.1], prune_embeddings=False)
    assert off.settings("ours") == [("neurons", 0.1), ("neurons", 0.2)]  # no vocabulary: ε = 0 is dense, 0.1 once
    assert study.ContextualConfig.from_params({"mcq_n": 0, "ft_steps": 3, "domains": ["x"]}).mcq_n is None
    assert study.ContextualConfig.from_params({"ft_steps": 3}).ft_steps == 3
    assert study.ContextualConfig().neuron_thresholds == study.AUTHORS_THRESHOLDS == (1e-5, 1e-3, 1e-1)
    with pytest.raises(SparsityError, match="number >= 0"):
        study.ContextualConfig(thresholds=[-0.1])
    with pytest.raises(ValueError, match="scale must be one of"):
        study.ContextualConfig(scale="max")
    with pytest.raises(ValueError, match="coverage_tokens"):
        study.ContextualConfig(coverage_tokens=[0])


def _results(out, eps, cfg, tmp_path, name="run", **changes):
    res = {"records": out["records"], "layers": out["layers"], "coverage": out["coverage"],
           "chunks": {"tiny": out["chunks"]},
           "parameters": {"model": "tiny-llama", "thresholds": [0.0, eps], "neuron_thresholds": [1e-5, eps],
                          "test_chunks": cfg.test_chunks, "chunk_bytes": cfg.chunk_bytes, "prune_embeddings": True,
                          "min_count": 1, "ft_steps": cfg.ft_steps, "ft_batch": cfg.ft_batch,
                          "ft_seqlen": cfg.ft_seqlen}}
    res.update(changes)
    (tmp_path / name).mkdir()
    (tmp_path / name / "contextual_pruning.json").write_text(json.dumps(res, default=float))
    return res, tmp_path / name


def test_tables_from_results(protocol, tmp_path):
    m, before, out, eps, cfg = protocol
    from minilib.tables import contextual as ctab
    res, path = _results(out, eps, cfg, tmp_path)
    assert {"contextual_coverage", "contextual_verdict", "contextual_results", "contextual_recovery"} <= set(ctab.TABLES)
    for name, table in ctab.TABLES.items():
        text = table(path)
        assert text.strip() and not text.startswith("_No results"), name
        if text.startswith("|"):
            widths = {line.count("|") for line in text.splitlines() if line.startswith("|")}
            assert len(widths) == 1, f"{name}: rows with different numbers of cells"
    verdict = ctab.TABLES["contextual_verdict"](path)
    for block in ("One multiple-comparison family", "**tiny, our protocol**", "**tiny, the authors' protocol**",
                  "Dense fine-tuned with the same recipe", "Neurons only (vocabulary untouched)", "Vocabulary only",
                  "Neurons and vocabulary", "vs the dense model fine-tuned the same way", "Vocabulary coverage",
                  "removes no FFN neuron", "41.88%", "On the authors' protocol here", "on ours", "Not decomposed"):
        assert block in verdict, block
    gaps = ctab._protocol_gaps(res)  # what this run closes is no longer claimed
    assert not any(g.startswith(("no setting prunes neurons alone", "no dense model", "the authors' small",
                                 "the kept vocabulary comes from one", "the authors' protocol (")) for g in gaps)
    assert any("beyond the calib split" in g for g in gaps)
    # the family: every comparison of every block, one Holm family
    tests = ctab.verdict_tests(res)
    kinds = {(e["protocol"], e["row"]["setting"], e["what"], e["vs"]) for e in tests}
    for k in [("ours", "neurons", "pruned", "dense"), ("ours", "neurons", "finetuned", "dense"),
              ("ours", "neurons", "finetuned", "dense-finetuned"), ("ours", "vocab", "pruned", "dense"),
              ("ours", "vocab", "finetuned", "dense-finetuned"), ("ours", "both", "pruned", "dense"),
              ("ours", "both", "finetuned", "dense"), ("ours", "both", "finetuned", "dense-finetuned"),
              ("ours", "dense", "dense-finetuned", "dense"), ("ours", "vocab", "coverage", "dense"),
              ("authors", "dense", "dense-finetuned", "dense"), ("authors", "vocab", "pruned", "dense"),
              ("authors", "both", "finetuned", "dense"), ("authors", "both", "finetuned", "dense-finetuned")]:
        assert k in kinds, k
    assert len(tests) == 18 and {t["test"].family for t in tests} == {18}  # 1e-5 (identical to dense) is not tested
    assert not any(ctab._same(e["row"]) for e in tests)
    table = ctab.TABLES["contextual_coverage"](path)
    assert "the test text itself (authors' protocol)" in table and "(whole split)" in table


def test_tables_claim_the_gaps_of_a_smaller_run(protocol, tmp_path):
    """A run without the decomposition (the former default: vocabulary-only and both, no control, no
    coverage, no authors' protocol) gets every gap named; fewer chunks than the floor are not tested."""
    m, before, out, eps, cfg = protocol
    from minilib.tables import contextual as ctab
    old = [r for r in out["records"] if r["protocol"] == "ours" and r["setting"] in ("dense", "vocab", "both")
           and r["stage"] != "dense-finetuned"]
    chunks = {k: v[:6] for k, v in out["chunks"].items()}
    res, path = _results(out, eps, cfg, tmp_path, records=old, coverage=[], chunks={"tiny": chunks})
    gaps = " ".join(ctab._protocol_gaps(res))
    for g in ("no setting prunes neurons alone", "no dense model is fine-tuned", "small thresholds",
              "coverage against calibration size is not measured", "the authors' protocol (the same text"):
        assert g in gaps, g
    verdict = ctab.TABLES["contextual_verdict"](path)
    assert "n = 6 text chunks: too few to test (at least 10 needed)" in verdict
    assert ctab.TABLES["contextual_coverage"](path).startswith("_No results")
    (tmp_path / "old").mkdir()  # results of an older notebook, or none: the tables say so
    (tmp_path / "old" / "contextual_pruning.json").write_text(json.dumps({"records": [{"ppl": 1.0}]}))
    for table in ctab.TABLES.values():
        assert table(tmp_path / "old").startswith("_No results in the current format")
        assert table(tmp_path / "none").startswith("_No results in the current format")


def test_verdicts_follow_the_intervals():
    assert study.verdict(0.01, 0.2) == "worse than dense"
    assert study.verdict(-0.2, -0.01) == "better than dense"
    assert study.verdict(-0.1, 0.1) == "not resolved from dense"
    recs = [{"domain": "d", "stage": "dense", "size_pct": 100.0, "d_bpb_low": 0.0},
            {"domain": "d", "stage": "finetuned", "size_pct": 60.0, "d_bpb_low": 0.05},
            {"domain": "d", "stage": "finetuned", "size_pct": 80.0, "d_bpb_low": -0.01},
            {"domain": "d", "stage": "finetuned", "size_pct": 90.0, "d_bpb_low": -0.1}]
    assert study.best_reduction(recs, "d")["size_pct"] == 80.0  # the smallest not detectably worse
    assert study.best_reduction(recs[:2], "d") is None
    assert not math.isnan(recs[2]["size_pct"])


def test_absmean_skips_first_positions_of_flattened_batches():
    from minilib.calib import AbsMean
    a = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    flat, full = AbsMean(3, "input", skip_first=1, seqlen=4), AbsMean(3, "input", skip_first=1)
    flat.add_batch(a.view(8, 3))
    full.add_batch(a)
    torch.testing.assert_close(flat.mean(), a[:, 1:].abs().mean((0, 1)).double())
    torch.testing.assert_close(full.mean(), flat.mean())
    with pytest.raises(ValueError, match="skip_first needs"):  # never silently keep the first positions
        AbsMean(3, "input", skip_first=1).add_batch(a.view(8, 3))
    with pytest.raises(ValueError, match="seqlen must be"):
        AbsMean(3, "input", skip_first=2, seqlen=2)


def test_figures_render(protocol, tmp_path):
    from minilib.plotting import plot_layer_removal, plot_recovery_bpb, plot_size_vs_bpb, save_figure
    m, before, out, eps, cfg = protocol
    rec, cur, lay = (pd.DataFrame(out[k]) for k in ("records", "curves", "layers"))
    rec = rec[(rec.protocol == "ours") & rec.setting.isin(["dense", "vocab", "both"])]  # what the notebook draws
    cur = cur[(cur.protocol == "ours") & cur.setting.isin(["vocab", "both"])]
    for name, fig in (("layers", plot_layer_removal(lay)), ("size", plot_size_vs_bpb(rec)),
                      ("recovery", plot_recovery_bpb(cur, rec))):
        paths = save_figure(fig, name, figures_dir=tmp_path)
        assert all(p.stat().st_size > 1000 for p in paths)
    assert set(lay.rule) == {"absolute", "median"}
