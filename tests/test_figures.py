"""minilib.figures: every figure re-rendered from the results JSON alone, the --paper PDFs,
and each plot function of minilib.plotting on small synthetic frames (intervals named, sizes in the
titles, fixed colour-blind-safe colours, legends outside the data, reference lines labelled)."""

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from minilib import figures as F
from minilib import plotting as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    plt.close("all")


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def _legend_outside(fig, ax) -> bool:
    fig.canvas.draw()
    lb, ab = ax.get_legend().get_window_extent(), ax.get_window_extent()
    return lb.x0 >= ab.x1 - 1 or lb.y1 <= ab.y0 + 1  # right of the axes, or below them


# --- the command, on the committed results ---------------------------------------------------------

def test_every_registered_figure_renders_from_the_committed_results(tmp_path):
    logs = []
    paths = F.render(ROOT / "results", tmp_path, log=logs.append)
    names = {p.stem for p in paths}
    assert {p.suffix for p in paths} == {".pdf", ".png"}
    for stem, entry in F.FIGURES.items():
        drawn = [n for n in names if F.matches(n) and stem in F.matches(n)]
        assert drawn, f"nothing drawn for {stem}"
    for p in paths:
        assert p.stat().st_size > 1000
    # and nothing stale: every committed figure is one the committed results draw
    stale = sorted(f.name for f in (ROOT / "figures").glob("*.pdf") if f.stem not in names)
    assert not stale, f"figures/ holds figures no committed results draw (an older run's): {stale}"
    for msg in logs:  # only figures whose data an older results file lacks are skipped, each saying what to re-run
        assert re.match(r"skipped \S+: \w+\.json has no per-neuron summary \('neurons'\): re-run notebook \w+_anatomy "
                        r"to get figure \S+_anatomy_(heatmap|neuron_hist)_", msg), msg
    assert plt.get_fignums() == []


def test_every_committed_figure_has_one_home():
    """Each figure in figures/ is drawn by one registered function family."""
    for pdf in sorted((ROOT / "figures").glob("*.pdf")):
        homes = F.matches(pdf.stem)
        assert homes, f"{pdf.name} is drawn by no entry of minilib.figures.FIGURES"
        assert len({F.FIGURES[h].draw for h in homes}) <= 2  # BERT_/GPT2_ twins share a function


def test_missing_results_file_is_named_or_skipped(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dense_baselines\.json is missing"):
        F.render(tmp_path, tmp_path / "out", ["dense_baselines"])
    logs = []
    assert F.render(tmp_path, tmp_path / "out", ["dense_baselines"], skip_missing=True, log=logs.append) == []
    assert logs and "dense_baselines.json is missing" in logs[0]


def test_old_anatomy_results_say_which_notebook_to_rerun():
    res = json.loads((ROOT / "results" / "GPT2_anatomy.json").read_text())
    res.pop("neurons", None)
    figs = F.draw("GPT2_anatomy", res)
    missing = [(n, f) for n, f in figs if isinstance(f, F.Missing)]
    assert missing and all("re-run notebook GPT2_anatomy" in f.reason and n in f.reason for n, f in missing)
    assert any(not isinstance(f, F.Missing) for _, f in figs)  # the layer curves still come from the records
    for _, f in figs:
        if not isinstance(f, F.Missing):
            plt.close(f)


def test_anatomy_figures_from_a_neuron_summary():
    res = json.loads((ROOT / "results" / "BERT_anatomy.json").read_text())
    rng = np.random.default_rng(0)
    res["neurons"] = {p: P.neuron_summary(rng.normal(0, 0.05, (6, 1536))) for p in res["parameters"]["protocols"]}
    figs = F.draw("BERT_anatomy", res)
    assert not any(isinstance(f, F.Missing) for _, f in figs)
    names = [n for n, _ in figs]
    assert "minilm-l6_anatomy_heatmap_head-only" in names and "minilm-l6_anatomy_neuron_hist_finetuned" in names


def test_bad_arguments_are_named(tmp_path, capsys):
    assert F.main(["--only", "nope", "--figures", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "nope" in err and "SparseGPT_one_shot" in err  # lists the registered names
    assert F.main(["--results", str(tmp_path / "absent"), "--figures", str(tmp_path)]) == 2
    assert "--results" in capsys.readouterr().err
    assert F.main(["--paper", "--width", "0", "--figures", str(tmp_path)]) == 2
    assert "--width" in capsys.readouterr().err
    with pytest.raises(KeyError, match="registered"):
        F.draw("nope", {})
    assert not list(tmp_path.iterdir())


def test_list_names_every_entry(capsys):
    assert F.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(stem in out for stem in F.FIGURES)


# --- --paper --------------------------------------------------------------------------------------

def _media_width_pt(raw: bytes) -> float:
    m = re.search(rb"/MediaBox \[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", raw)
    return float(m.group(3)) - float(m.group(1))


def test_paper_pdfs_are_vector_at_column_width_with_embedded_truetype(tmp_path):
    paths = F.render(ROOT / "results", tmp_path, paper=True, log=lambda m: None)  # every registered figure
    assert paths and {p.suffix for p in paths} == {".pdf"}
    widths = {}
    for p in paths:
        raw = p.read_bytes()
        assert raw.startswith(b"%PDF-")
        assert b"/Subtype /Type3" not in raw and b"/Subtype/Type3" not in raw, p.name
        assert b"/FontFile2" in raw, p.name                     # embedded TrueType (Type 42)
        if "_heatmap_" not in p.stem:  # a heatmap's cells are an image by nature (its text and axes are vector)
            assert b"/Subtype /Image" not in raw, p.name        # vector: no raster image inside
        widths[p.stem] = _media_width_pt(raw)
        assert min(abs(widths[p.stem] - 72 * w) for w in (F.PAPER_WIDTH_IN, F.PAPER_WIDE_IN)) < 0.5, (p.name, widths[p.stem])
    assert widths["sparsegpt_ppl_vs_sparsity_smollm2-135m"] == pytest.approx(72 * F.PAPER_WIDTH_IN, abs=0.5)
    assert widths["dense_baselines_smollm2-135m"] == pytest.approx(72 * F.PAPER_WIDE_IN, abs=0.5)  # two panels
    narrow = F.render(ROOT / "results", tmp_path / "w", ["SparseGPT_one_shot"], paper=True, width=3.25)
    assert _media_width_pt(narrow[0].read_bytes()) == pytest.approx(72 * 3.25, abs=0.5)
    assert P.LEGEND_PLACE["where"] == "right"  # --paper does not leak its legend placement
    assert plt.get_fignums() == []


# --- colours --------------------------------------------------------------------------------------

FAMILIES = [["random", "neuron-norm", "neuron-maxprod", "anatomy", "anatomy-uniform"],
            ["magnitude", "wanda", "sparsegpt"], ["hidden state", "attention output", "FFN output"],
            ["early layers", "middle layers", "late layers"], ["pruned", "finetuned"]]
ORANGES = [P.sns.color_palette("colorblind", 10)[i] for i in (1, 3)]


def test_method_colours_are_fixed_not_first_use_order(monkeypatch):
    monkeypatch.setattr(P, "METHOD_COLORS", {})
    first = {m: P.method_color(m) for fam in FAMILIES for m in fam}
    monkeypatch.setattr(P, "METHOD_COLORS", {})
    again = {m: P.method_color(m) for fam in reversed(FAMILIES) for m in reversed(fam)}
    assert first == again
    monkeypatch.setattr(P, "METHOD_COLORS", {})
    assert P.method_color("some new method") == P.method_color("some new method")
    assert P.method_color("wanda+owl") == P.method_color("wanda") and P.method_style("wanda+owl")["ls"] == "--"


def test_colours_within_a_figure_are_distinct_and_never_two_oranges():
    for fam in FAMILIES:
        cols = [P.method_color(m) for m in fam]
        assert len(set(cols)) == len(cols), fam
        assert sum(c in ORANGES for c in cols) <= 1, fam
        for i, a in enumerate(cols):  # clearly apart in RGB
            for b in cols[i + 1:]:
                assert np.linalg.norm(np.subtract(a, b)) > 0.25, fam
    ordered = P.ordered_colors(6)
    assert sum(c in ORANGES for c in ordered) == 1  # a series of up to 9 shows one orange only
    assert len(set(P.ordered_colors(10))) == 10


# --- each plot function on synthetic frames ----------------------------------------------------------

def _layer_rows(L=4):
    rows = []
    for l in range(L):
        r = {"layer": l}
        for k in ("hidden_cos", "attn_cos", "ffn_cos"):
            r[k + "_mean"], r[k + "_std"] = 0.1 * l, 0.05
        rows.append(r)
    return rows


def test_plot_layer_curves_names_its_band():
    fig = P.plot_layer_curves(_layer_rows(), "model X: cosines\n300 examples", n_examples=300)
    texts = _legend_texts(fig)
    assert any("± 1 std over 300 examples" in t for t in texts)
    assert {"hidden state", "attention output", "FFN output"} <= set(texts)
    assert "300 examples" in fig.axes[0].get_title()
    assert _legend_outside(fig, fig.axes[0])
    with pytest.raises(ValueError, match="lacks columns"):
        P.plot_layer_curves([{"layer": 0}])


def test_neuron_summary_and_its_figures():
    rng = np.random.default_rng(1)
    arr = rng.normal(0, 0.1, (5, 700))
    s = P.neuron_summary(arr)
    q = np.asarray(s["quantiles"])
    assert q.shape == (5, P.N_QUANTILES) and (np.diff(q, axis=1) <= 1e-9).all()  # sorted, descending
    assert np.allclose(q[:, 0], arr.max(1), atol=1e-5) and np.allclose(q[:, -1], arr.min(1), atol=1e-5)
    assert (np.asarray(s["hist_counts"]).sum(1) == 700).all() and len(s["hist_edges"]) == P.N_BINS + 1
    big = P.neuron_summary(rng.normal(0, 0.1, (30, 1536)))  # SmolLM2: what one protocol adds to a results file
    assert len(json.dumps(big, indent=1)) < 400_000
    for obj in (s, {"neuron_cos": arr}):
        fig = P.plot_neuron_heatmap(obj, "neuron_cos", "heat")
        assert "of 700" in fig.axes[0].get_xlabel()
        fig = P.plot_neuron_distribution(obj, "neuron_cos", "hist")
        assert any("x 700 neurons" in t for t in _legend_texts(fig))
    with pytest.raises(ValueError, match="layers x neurons"):
        P.neuron_summary(np.zeros(3))


def _sweep(runs_random=3):
    rows = []
    for m in ("random", "neuron-norm", "anatomy"):
        for r in (0.0, 0.3, 0.5):
            rows.append({"method": m, "ratio": r, "acc": 0.8 - r / 2, "ci95_low": 0.7 - r / 2, "ci95_high": 0.9 - r / 2,
                         "runs": runs_random if m == "random" and r else 1, "latency_s": 1 - r / 2,
                         "perplexity": 20 + 10 * r})
    return pd.DataFrame(rows)


def test_plot_accuracy_vs_pruned_names_intervals_and_majority():
    fig = P.plot_accuracy_vs_pruned(_sweep(), "title\ntest n=1000", chance=0.55)
    texts = _legend_texts(fig)
    assert "majority class (0.550)" in texts and "random (3 seeds)" in texts
    assert any("95% CI" in t and "Wilson" in t and "3 seeds" in t for t in texts)
    assert _legend_outside(fig, fig.axes[0])
    assert "n=1000" in fig.axes[0].get_title()


def test_plot_cost_labels_the_dense_reference():
    fig = P.plot_cost(_sweep(), "cost")
    assert len(fig.axes) == 2 and "dense" in _legend_texts(fig)
    fig = P.plot_cost(_sweep().drop(columns="perplexity"), "cost")
    assert len(fig.axes) == 1 and "dense" in _legend_texts(fig)


def test_plot_dense_baselines():
    ppl = pd.DataFrame({"corpus": ["wiki", "c4"], "perplexity": [20.0, 30.0], "ppl_low": [18.0, 27.0], "ppl_high": [22.0, 33.0]})
    mcq = pd.DataFrame({"task": ["a", "b"], "acc": [0.6, 0.4], "acc_ci95_low": [0.5, 0.3], "acc_ci95_high": [0.7, 0.5],
                        "chance": [0.25, 0.5]})
    fig = P.plot_dense_baselines(ppl, mcq, "dense\n32 windows")
    texts = _legend_texts(fig)
    assert "chance" in texts and "accuracy (95% Wilson interval)" in texts
    assert "t-interval" in fig.axes[0].get_ylabel()
    fig = P.plot_dense_baselines(ppl.drop(columns=["ppl_low", "ppl_high"]), mcq.drop(columns=["acc_ci95_low", "acc_ci95_high"]))
    assert "accuracy" in _legend_texts(fig) and "t-interval" not in fig.axes[0].get_ylabel()


def test_plot_ppl_vs_sparsity():
    rows = [{"method": m, "sparsity": s, "nm": "", "ppl": p, "low": p * 0.9, "high": p * 1.1, "runs": r}
            for m, r in (("magnitude", 1), ("wanda", 3), ("wanda+owl", 3)) for s, p in ((0.5, 30.0), (0.7, 90.0))]
    rows.append({"method": "wanda", "sparsity": 0.5, "nm": "2:4", "ppl": 50.0, "low": 45.0, "high": 55.0, "runs": 3})
    fig = P.plot_ppl_vs_sparsity(pd.DataFrame(rows), 20.0, "2:4", "wiki", "calibration 3 seeds")
    texts = _legend_texts(fig)
    assert {"dense", "wanda (3 seeds)", "wanda 2:4", "magnitude"} <= set(texts)
    assert "95%" in fig.axes[0].get_ylabel()
    assert _legend_outside(fig, fig.axes[0])
    with pytest.raises(ValueError, match="lacks columns"):
        P.plot_ppl_vs_sparsity(pd.DataFrame({"method": []}), 1.0)


def test_plot_layer_error():
    rows = [{"method": m, "block": b, "layer": f"mlp.{t}", "type": t, "rel_error": 0.01 * (b + 1)}
            for m in ("wanda", "sparsegpt") for b in range(3) for t in ("up_proj", "down_proj")]
    fig = P.plot_layer_error(pd.DataFrame(rows), "sparsegpt", "in-sample")
    assert fig._suptitle.get_text() == "in-sample"
    assert {"wanda", "sparsegpt", "up_proj", "down_proj"} <= set(_legend_texts(fig))
    assert _legend_outside(fig, fig.axes[1])


def test_plot_over_seeds():
    s = pd.DataFrame({"metric": "acc", "n_seeds": 3, "mean": [0.5, 0.6], "ci_lo": [0.4, 0.5], "ci_hi": [0.6, 0.7],
                      "ratio": [0.1, 0.2]})
    fig = P.plot_over_seeds(s, "ratio")
    assert "t-interval over seeds" in fig.axes[0].get_ylabel() and "acc (n=3)" in _legend_texts(fig)


def test_contextual_plots():
    layers = pd.DataFrame([{"domain": d, "rule": r, "eps": e, "block": b, "fraction": 0.1 * b, "total_fraction": 0.2}
                           for d in ("wiki", "tiny") for r in ("absolute", "median") for e in (1e-3, 0.1) for b in range(3)])
    fig = P.plot_layer_removal(layers, "removed")
    assert len(fig.axes) == 4 and any("ε=0.1" in t for t in _legend_texts(fig))
    rec = []
    for d in ("wiki", "tiny"):
        rec.append({"domain": d, "stage": "dense", "dev_bpb": 1.5, "eps": np.nan})
        for st in ("pruned", "finetuned"):
            for e, size in ((0.0, 90.0), (0.1, 70.0)):
                rec.append({"domain": d, "stage": st, "eps": e, "size_pct": size, "d_bpb": 0.1, "d_bpb_low": 0.05,
                            "d_bpb_high": 0.15, "dev_bpb": 1.6})
    rec = pd.DataFrame(rec)
    fig = P.plot_size_vs_bpb(rec[rec.stage != "dense"], "size\n32 chunks")
    assert {"dense", "pruned", "finetuned"} <= set(_legend_texts(fig)) and "bootstrap" in fig.axes[0].get_ylabel()
    curves = pd.DataFrame([{"domain": d, "eps": e, "step": s, "dev_bpb": 1.6 - 0.01 * s}
                           for d in ("wiki", "tiny") for e in (0.0, 0.1) for s in (0, 3, 6)])
    fig = P.plot_recovery_bpb(curves, rec, "recovery")
    assert "dense" in _legend_texts(fig) and _legend_outside(fig, fig.axes[-1])


def test_plot_calibration_budget():
    s = pd.DataFrame([{"tokens": t, "method": m, "seeds": 3, "ppl": 50.0 / t ** 0.1, "low": 40.0, "high": 60.0}
                      for m in ("wanda", "sparsegpt") for t in (512, 1024, 2048)])
    fig = P.plot_calibration_budget(s, "budget")
    assert "wanda (3 seeds)" in _legend_texts(fig) and "t-interval over seeds" in fig.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="lacks columns"):
        P.plot_calibration_budget(s.drop(columns="seeds"))


def test_notebooks_draw_through_the_registry_only():
    """One home per figure: each notebook that makes figures calls minilib.figures.draw on the results it
    wrote, and no plot function of its own."""
    for stem in F.FIGURES:
        nb = ROOT / "notebooks" / f"{stem}.py"
        if not nb.exists():  # a benchmark's figure
            continue
        src = nb.read_text()
        assert f'save_all(draw("{stem}", read_results(results_path)), figures_dir)' in src, stem
        assert not re.search(r"\bplot_\w+\(|save_figure\(", src), stem


def test_re_rendering_gives_the_same_files(tmp_path):
    """No creation date or other run-dependent bytes: re-rendered figures do not show up as changes."""
    a = F.render(ROOT / "results", tmp_path / "a", ["dense_baselines"])
    b = F.render(ROOT / "results", tmp_path / "b", ["dense_baselines"])
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    pa = F.render(ROOT / "results", tmp_path / "pa", ["dense_baselines"], paper=True)
    pb = F.render(ROOT / "results", tmp_path / "pb", ["dense_baselines"], paper=True)
    assert pa[0].read_bytes() == pb[0].read_bytes() and b"CreationDate" not in pa[0].read_bytes()
