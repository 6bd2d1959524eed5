"""Every figure of the suite, drawn from the results JSON alone (no model runs): one home per figure.

    .venv/bin/python -m minilib.figures                      # results/*.json -> figures/*.{pdf,png}
    .venv/bin/python -m minilib.figures --only SparseGPT_one_shot dense_baselines --figures /tmp/f
    .venv/bin/python -m minilib.figures --paper --figures /tmp/paper   # vector PDFs at column width

``FIGURES`` maps each results file (``<results>/<stem>.json``, the notebook that writes it) to the
function that turns its results dict into ``[(figure name, Figure), ...]``; the notebooks call the same
functions on the dict they write (``draw``), so a notebook and this command draw identical figures.
Where a results file was written by an older notebook that did not keep what a figure needs, the
function yields ``Missing(reason)`` for that figure, naming the notebook to re-run; the command reports
it and goes on.  A missing results file is an error naming it (``--skip-missing``: a message, and the
other files are drawn).

``--paper``: PDF only, vector, fonts embedded as TrueType (Type 42, never Type 3), each figure
``PAPER_WIDTH_IN`` = 3.5 in wide (one column of a two-column paper; ``--width`` to change it), or
``PAPER_WIDE_IN`` = 7 in (the text width, ``figure*``) for a figure of panels side by side; text at
6-7.5 pt (``PAPER_RC``), titles and labels wrapped to fit, legends below the axes, constrained layout,
saved without cropping so the page is exactly that wide.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from minilib import plotting as plots

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "results"
PAPER_WIDTH_IN = 3.5  # one column of a two-column paper (ACL, IEEE: 3.3-3.5 in)
PAPER_WIDE_IN = 7.0   # the text width of a two-column paper (figure*), for figures of panels side by side
PAPER_RC = {"font.size": 9, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
            "ytick.labelsize": 6, "legend.fontsize": 6, "figure.titlesize": 7.5, "lines.linewidth": 1.0,
            "lines.markersize": 3, "pdf.fonttype": 42, "ps.fonttype": 42,
            "savefig.bbox": "standard"}  # no cropping: the page is the figure, exactly --width wide


@dataclass(frozen=True)
class Missing:
    """A figure whose data the results file does not hold (``reason`` says what to re-run)."""
    reason: str


@dataclass(frozen=True)
class Entry:
    stem: str                 # results/<stem>.json, written by notebook <stem> (or a benchmark)
    patterns: tuple           # the figure names it draws (fnmatch patterns, for --list and docs)
    draw: Callable            # results dict -> [(name, Figure | Missing), ...]


def _tag(res: dict) -> str:
    return str(res["parameters"]["model"]).replace("/", "_")


def _frame(res: dict, key: str = "records", kind: str | None = None) -> pd.DataFrame:
    df = pd.DataFrame(res.get(key) or [])
    if kind is not None:
        df = df[df["kind"] == kind] if "kind" in df else df.iloc[0:0]
    return df.reset_index(drop=True)


# --- anatomy ----------------------------------------------------------------------------------------

def anatomy_figures(res: dict) -> list:
    """Per protocol: layer curves for each decision vector, the neuron heatmap and histogram (these two
    from ``res["neurons"][protocol]``, a ``plotting.neuron_summary``; results written before the notebooks saved it have none)."""
    p, nb = res["parameters"], res["notebook"]
    tag, chosen = _tag(res), p.get("decision_state", "head")
    layers = _frame(res)
    out = []
    for proto in p["protocols"]:
        pm = res["metrics"]["protocols"].get(proto, {})
        n_ex = p.get("n_train")
        acc = (f"; test acc {pm['acc']:.3f} (n={pm['n']})" if "acc" in pm else "")
        for state in (dict.fromkeys([chosen, *sorted(set(layers.get("decision_state", [])))])):
            rows = layers[(layers["protocol"] == proto) & (layers["decision_state"] == state)] if len(layers) else layers
            if not len(rows):
                continue
            suffix = "" if state == chosen else f"_{state}"
            title = (f"{p['model']} ({proto}) on {p['dataset']}: cosine with the {state} decision vector\n"
                     f"{n_ex} examples, seed {p['seed']}{acc}")
            out.append((f"{tag}_anatomy_layers_{proto}{suffix}", plots.plot_layer_curves(rows, title, n_examples=n_ex)))
        neurons = (res.get("neurons") or {}).get(proto)
        for fig_name in (f"{tag}_anatomy_heatmap_{proto}", f"{tag}_anatomy_neuron_hist_{proto}"):
            if neurons is None:
                out.append((fig_name, Missing(f"{nb}.json has no per-neuron summary ('neurons'): "
                                              f"re-run notebook {nb} to get figure {fig_name}")))
                continue
            sizes = f"{neurons['n_layers']} layers x {neurons['n_neurons']} neurons; {n_ex} examples, seed {p['seed']}"
            if "heatmap" in fig_name:
                fig = plots.plot_neuron_heatmap(neurons, "neuron_cos",
                                                f"{p['model']} ({proto}): neuron contribution cos (sorted)\n{sizes}")
            else:
                fig = plots.plot_neuron_distribution(neurons, "neuron_cos",
                                                     f"{p['model']} ({proto}): distribution of neuron cos\n{sizes}")
            out.append((fig_name, fig))
    return out


# --- structured pruning -------------------------------------------------------------------------------

def pruning_figures(res: dict, kind: str) -> list:
    """Per protocol: accuracy (95% intervals, majority class) and cost against % FFN neurons removed."""
    from minilib.studies.structured import canonical_methods, seed_summary
    p = res["parameters"]
    tag = _tag(res)
    summary = seed_summary(canonical_methods(_frame(res)))
    majority = res["metrics"].get("majority")
    what = "baselines" if kind == "baseline" else "strategy vs baselines"
    n_test = res["metrics"].get("n_test") or p.get("n_test")
    seeds = len(p.get("random_seeds") or [])
    ppl = (f"; perplexity {p['ppl_corpus']} test" + (f", {p['ppl_windows']} x {p['ppl_seqlen']} tokens"
           if p.get("ppl_windows") else "")) if p.get("ppl_corpus") else ""
    out = []
    for proto in p["protocols"]:
        s = summary[summary.protocol == proto]
        if not len(s):
            continue
        sizes = f"test n={n_test}, train n={p.get('n_train')}; random: {seeds} seeds; split seed {p['seed']}"
        out.append((f"{tag}_pruning_{kind}_accuracy_{proto}",
                    plots.plot_accuracy_vs_pruned(s, f"{p['model']} on {p['dataset']} ({proto}): {what}\n{sizes}", majority)))
        out.append((f"{tag}_pruning_{kind}_cost_{proto}",
                    plots.plot_cost(s, f"{p['model']} ({proto}): cost of FFN pruning; means over seeds{ppl}",
                                    ppl_label=f"perplexity ({p.get('ppl_corpus') or 'wiki'} test)")))
    return out


# --- dense baselines ------------------------------------------------------------------------------

def dense_figures(res: dict) -> list:
    p = res["parameters"]
    ppl, mcq = _frame(res, kind="perplexity"), _frame(res, kind="mcq")
    windows = sorted({int(w) for w in ppl.get("windows", [])}) if len(ppl) else []
    n = sorted({int(x) for x in mcq.get("n", [])}) if len(mcq) else []
    sizes = plots.sizes_text(perplexity=f"{'/'.join(map(str, windows)) or '?'} windows x {p['seqlen']} tokens per corpus",
                             MCQ=f"n={'/'.join(map(str, n)) or '?'} items per task ({p['mcq_method']})")
    return [(f"dense_baselines_{_tag(res)}", plots.plot_dense_baselines(ppl, mcq, f"{p['model']}: dense baselines\n{sizes}"))]


# --- SparseGPT -------------------------------------------------------------------------------------

def sparsegpt_figures(res: dict) -> list:
    from minilib.studies import sparsegpt as study
    p = res["parameters"]
    tag = _tag(res)
    runs = _frame(res, kind="run")
    runs["nm"] = runs["nm"].fillna("")
    out = []
    summary = study.setting_summary(runs)
    dense_ppl = float(runs.loc[runs.method == "dense", "perplexity"].iloc[0])
    test = f"test {int(runs.eval_windows.iloc[0])} x {p['eval_seqlen']} tokens of {p['eval_corpus']}"
    calib = (f"calibration {len(p['calib_seeds'])} seeds x {p['nsamples']} x {p['seqlen']} tokens of "
             f"{p['calib_corpus']}")
    out.append((f"sparsegpt_ppl_vs_sparsity_{tag}",
                plots.plot_ppl_vs_sparsity(summary, dense_ppl, p.get("nm") or "", p["eval_corpus"],
                                           f"{p['model']}: one-shot pruning\n{calib}; {test}")))
    layers = _frame(res, kind="layer")
    if len(layers):
        if "type" not in layers:
            layers["type"] = layers["layer"].str.split(".").str[-1]
        one = (f"{p['model']}, {p['sparsity']:.0%} unstructured; calibration seed {p['seed']}, "
               f"{p['nsamples']} x {p['seqlen']} tokens of {p['calib_corpus']}")
        out.append((f"sparsegpt_layer_error_{tag}", plots.plot_layer_error(layers, p["method"], f"{one}: in-sample")))
        if "heldout_rel_error" in layers and layers["heldout_rel_error"].notna().any():
            out.append((f"sparsegpt_layer_error_heldout_{tag}",
                        plots.plot_layer_error(layers.assign(rel_error=layers["heldout_rel_error"]), p["method"],
                                               f"{one}: held-out inputs ({p.get('heldout_windows')} x {p['seqlen']} "
                                               f"tokens of {p['calib_corpus']} dev)")))
    budget = _frame(res, kind="budget")
    if len(budget):
        out.append((f"sparsegpt_calibration_budget_{tag}",
                    plots.plot_calibration_budget(study.budget_summary(budget),
                                                  f"{p['model']}: {p['sparsity']:.0%} unstructured; {test}",
                                                  f"calibration tokens ({p['budget_seqlen']}-token windows of "
                                                  f"{p['budget_corpus']})")))
    return out


# --- contextual pruning ----------------------------------------------------------------------------

def contextual_figures(res: dict) -> list:
    p = res["parameters"]
    tag = _tag(res)
    records, curves, layers = _frame(res), _frame(res, "curves"), _frame(res, "layers")
    sizes = (f"test {p['test_chunks']} chunks x {p['chunk_bytes']} bytes per domain; calibration "
             f"{p['calib_windows']} x {p['seqlen']} tokens")
    out = [(f"contextual_layers_{tag}", plots.plot_layer_removal(layers, f"{p['model']}: FFN neurons removed per block; "
                                                                         f"calibration {p['calib_windows']} x {p['seqlen']} tokens"))]
    shown = records[(records.protocol == "ours") & records.setting.isin(["dense", "vocab", "both"])]
    out.append((f"contextual_size_vs_bpb_{tag}", plots.plot_size_vs_bpb(shown, f"{p['model']}: size against bits per byte\n{sizes}")))
    shown_curves = curves[(curves.protocol == "ours") & curves.setting.isin(["vocab", "both"])] if len(curves) else curves
    if len(shown_curves):
        out.append((f"contextual_recovery_{tag}",
                    plots.plot_recovery_bpb(shown_curves, records,
                                            f"{p['model']}: recovery fine-tuning, {p['ft_steps']} steps x {p['ft_batch']} x "
                                            f"{p['ft_seqlen']} tokens; dev {p['dev_chunks']} chunks x {p['chunk_bytes']} bytes")))
    return out


def bench_inference_figures(res: dict) -> list:
    return [("bench_inference", plots.plot_bench_inference(res))]


FIGURES: dict[str, Entry] = {e.stem: e for e in [
    Entry("BERT_anatomy", ("*_anatomy_layers_*", "*_anatomy_heatmap_*", "*_anatomy_neuron_hist_*"), anatomy_figures),
    Entry("GPT2_anatomy", ("*_anatomy_layers_*", "*_anatomy_heatmap_*", "*_anatomy_neuron_hist_*"), anatomy_figures),
    Entry("BERT_pruning_baseline", ("*_pruning_baseline_accuracy_*", "*_pruning_baseline_cost_*"),
          lambda r: pruning_figures(r, "baseline")),
    Entry("GPT2_pruning_baseline", ("*_pruning_baseline_accuracy_*", "*_pruning_baseline_cost_*"),
          lambda r: pruning_figures(r, "baseline")),
    Entry("BERT_pruning_strategy", ("*_pruning_strategy_accuracy_*", "*_pruning_strategy_cost_*"),
          lambda r: pruning_figures(r, "strategy")),
    Entry("GPT2_pruning_strategy", ("*_pruning_strategy_accuracy_*", "*_pruning_strategy_cost_*"),
          lambda r: pruning_figures(r, "strategy")),
    Entry("dense_baselines", ("dense_baselines_*",), dense_figures),
    Entry("SparseGPT_one_shot", ("sparsegpt_ppl_vs_sparsity_*", "sparsegpt_layer_error_*",
                                 "sparsegpt_layer_error_heldout_*", "sparsegpt_calibration_budget_*"), sparsegpt_figures),
    Entry("contextual_pruning", ("contextual_layers_*", "contextual_size_vs_bpb_*", "contextual_recovery_*"),
          contextual_figures),
    Entry("bench_inference", ("bench_inference",), bench_inference_figures),  # benchmarks/bench_inference.py
]}


def draw(stem: str, res: dict) -> list:
    """The figures of results ``stem`` (a key of ``FIGURES``) from its results dict: ``[(name, Figure |
    Missing)]``.  What the notebooks call on the dict they write."""
    if stem not in FIGURES:
        raise KeyError(f"no figures registered for {stem!r}; registered: {', '.join(FIGURES)}")
    return FIGURES[stem].draw(res)


def save_all(figures: list, figures_dir=None, *, paper: bool = False, width: float = PAPER_WIDTH_IN,
             log=print) -> list[Path]:
    """Save every ``(name, Figure)`` (``plotting.save_figure``: PDF + PNG; ``paper``: PDF only at
    ``width`` inches), report every ``Missing`` through ``log``; the paths written."""
    import matplotlib.pyplot as plt
    paths = []
    for name, fig in figures:
        if isinstance(fig, Missing):
            log(f"skipped {name}: {fig.reason}")
            continue
        if paper:
            paths.append(_save_paper(fig, name, figures_dir, width))
            plt.close(fig)
        else:
            paths += plots.save_figure(fig, name, figures_dir)
    return paths


def _wrap(text, width_pt: float, fontsize_pt: float) -> str:
    import textwrap
    chars = max(12, int(width_pt / (0.52 * fontsize_pt)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def paper_width(fig, width: float = PAPER_WIDTH_IN, wide: float = PAPER_WIDE_IN) -> float:
    """The width a figure gets in ``--paper``: ``width`` (one column) for a single-panel figure,
    ``wide`` (the text width of a two-column paper) for one of several panels side by side."""
    cols = {round(ax.get_position().x0, 2) for ax in fig.axes if ax.get_label() != "<colorbar>"}
    return wide if len(cols) > 1 else width


def _save_paper(fig, name: str, figures_dir, width: float, wide: float = None) -> Path:
    """``fig`` as a vector PDF exactly ``paper_width`` inches wide: titles and labels wrapped to fit,
    constrained layout (legends below the axes were placed at drawing time), no cropping."""
    from minilib.io import atomic_file
    w, h = fig.get_size_inches()
    target = paper_width(fig, width, wide if wide is not None else max(width, PAPER_WIDE_IN))
    height = min(max(h * target / w, 0.7 * min(target, 3.5) + 0.6), 1.4 * min(target, 3.5) + 1.0)
    fig.set_size_inches(target, height)
    if fig._suptitle is not None:
        t = fig._suptitle
        t.set_text(_wrap(t.get_text(), 72 * target, t.get_fontsize()))
    for ax in fig.axes:
        aw = 72 * target * ax.get_position().width
        for t in (ax.title, ax.yaxis.label):
            if t.get_text():
                t.set_text(_wrap(t.get_text(), aw if t is ax.title else 72 * height * 0.8, t.get_fontsize()))
    try:  # constrained layout makes room for titles and the legends below the axes
        fig.set_layout_engine("constrained")
        fig.canvas.draw()
    except (ZeroDivisionError, ValueError, RuntimeError):  # axes it cannot lay out: keep the figure's own layout
        fig.tight_layout()
    d = plots.resolve_figures_dir(figures_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.pdf"
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches=None, metadata={"CreationDate": None})
    return path


def render(results_dir=None, figures_dir=None, only=None, *, paper: bool = False, width: float = PAPER_WIDTH_IN,
           skip_missing: bool = False, log=print) -> list[Path]:
    """Re-render the figures of every registered results file (``only``: those stems) from
    ``results_dir`` (default ``results/``) into ``figures_dir`` (``plotting.resolve_figures_dir``)."""
    import matplotlib.pyplot as plt
    from minilib.results import read_results
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    if not results_dir.is_dir():
        raise NotADirectoryError(f"--results {str(results_dir)!r} is not a folder")
    if not (isinstance(width, (int, float)) and 0.5 <= width <= 20):
        raise ValueError(f"--width must be a figure width in inches between 0.5 and 20, got {width!r}")
    only = list(only or [])
    unknown = [o for o in only if o not in FIGURES]
    if unknown:
        raise ValueError(f"--only: unknown figure set(s) {unknown}; registered: {', '.join(FIGURES)}")
    paths = []
    for stem in only or FIGURES:
        path = results_dir / f"{stem}.json"
        if not path.is_file():
            msg = f"{path} is missing: run the {stem} notebook (or `make reproduce`) to write it"
            if skip_missing:
                log(f"skipped {stem}: {msg}")
                continue
            raise FileNotFoundError(msg)
        res = read_results(path, stem)
        ctx = plt.rc_context(PAPER_RC) if paper else plt.rc_context({})
        before = plots.LEGEND_PLACE["where"]
        plots.LEGEND_PLACE["where"] = "below" if paper else before
        try:
            with ctx:
                figs = draw(stem, res)
                paths += save_all(figs, figures_dir, paper=paper, width=width, log=log)
        finally:
            plots.LEGEND_PLACE["where"] = before
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.figures", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=None, help="folder of the results JSON (default: results/)")
    ap.add_argument("--figures", type=Path, default=None,
                    help="output folder (default: $MINILIB_FIGURES, else figures/)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help=f"only these results files: {', '.join(FIGURES)}")
    ap.add_argument("--paper", action="store_true",
                    help=f"vector PDF only, embedded TrueType fonts, --width inches wide (default {PAPER_WIDTH_IN})")
    ap.add_argument("--width", type=float, default=PAPER_WIDTH_IN, help="--paper figure width in inches")
    ap.add_argument("--skip-missing", action="store_true", help="a missing results file: a message, not an error")
    ap.add_argument("--list", action="store_true", help="list the registered results files and figure names")
    a = ap.parse_args(argv)
    if a.list:
        for e in FIGURES.values():
            print(f"{e.stem}: {' '.join(e.patterns)}")
        return 0
    try:
        paths = render(a.results, a.figures, a.only, paper=a.paper, width=a.width, skip_missing=a.skip_missing)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(paths)} files written" + (f" under {paths[0].parent}" if paths else ""))
    return 0


def matches(name: str) -> list[str]:
    """The registered results files whose figure patterns match figure ``name``."""
    return [e.stem for e in FIGURES.values() if any(fnmatch.fnmatch(name, pat) for pat in e.patterns)]


if __name__ == "__main__":
    sys.exit(main())
