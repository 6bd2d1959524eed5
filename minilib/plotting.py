"""One plotting module, one theme, every figure of the suite.  Figures are saved as PDF and PNG by
``save_figure``, shown inline when it runs in a notebook kernel (JupyterLab, papermill, nbval), and
closed, so that no figure stays open outside notebooks.

    fig = plot_layer_curves(anatomy, "title")
    save_figure(fig, "gpt2_anatomy_layers")   # figures/gpt2_anatomy_layers.{pdf,png}

The folder: ``figures_dir`` argument > ``$MINILIB_FIGURES`` > ``figures/`` at the repository root
(``resolve_figures_dir``).

Sections: anatomy (layer curves, neuron heatmap and histogram), structured pruning sweeps
(accuracy and cost against % removed), dense baselines, SparseGPT (perplexity against sparsity,
per-layer reconstruction error), contextual pruning (size against perplexity, recovery curves).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill, nbval), which can display figures; False
    in scripts, pytest and terminal IPython."""
    try:
        import IPython
    except ImportError:
        return False
    ip = IPython.get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


if not os.environ.get("DISPLAY") and not in_notebook():
    matplotlib.use("Agg")  # headless by default; a kernel keeps its inline backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

FIGURES_DIR = Path(__file__).resolve().parent.parent / "figures"  # the default: figures/ of the repository
FIGURES_ENV = "MINILIB_FIGURES"
PALETTE = "colorblind"
# The colour-blind-safe palette (seaborn "colorblind", Okabe-Ito based) in an order whose neighbours stay
# distinguishable: its two orange hues (#de8f05, index 1, and vermillion #d55e00, index 3) are far
# apart, vermillion last, and brown (ochre, close to orange) late.
CB_ORDER = (0, 1, 2, 4, 9, 7, 6, 8, 5, 3)
# A fixed colour per method (and per series that recurs across figures), so that a method has the same
# colour in every figure whatever the order it is drawn in.  A name not listed gets a colour from a
# hash of its name (stable across runs and figures).  "<method>+owl" keeps its method's colour and is
# dashed (``method_style``).
METHOD_INDEX = {
    # structured FFN pruning
    "anatomy": 1, "anatomy-uniform": 4, "neuron-norm": 0, "neuron-maxprod": 2, "random": 7,
    # one-shot unstructured pruning
    "magnitude": 0, "wanda": 1, "sparsegpt": 2,
    # anatomy layer curves and neuron thirds
    "hidden state": 0, "attention output": 1, "FFN output": 2,
    "early layers": 0, "middle layers": 1, "late layers": 2,
    # contextual pruning stages
    "pruned": 0, "finetuned": 1,
}
METHOD_COLORS = {}  # the colours given so far (a cache of method_color)


def palette() -> list:
    """The colour-blind-safe colours in ``CB_ORDER``."""
    base = sns.color_palette(PALETTE, 10)
    return [base[i] for i in CB_ORDER]


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.2,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                      "axes.spines.top": False, "axes.spines.right": False,
                      # PDF text as embedded TrueType (Type 42), not Type 3 outlines: what journals and
                      # arXiv ask for, and text stays selectable and editable
                      "pdf.fonttype": 42, "ps.fonttype": 42})


def method_color(name: str):
    """The colour of ``name``: fixed per method (``METHOD_INDEX``; ``"<method>+owl"`` takes its method's),
    else from a hash of the name -- never from the order of first use, so it is the same in every figure."""
    if name not in METHOD_COLORS:
        import zlib
        base = name[:-4] if name.endswith("+owl") else name
        i = METHOD_INDEX.get(base)
        if i is None:
            i = zlib.crc32(base.encode()) % len(CB_ORDER)
        METHOD_COLORS[name] = sns.color_palette(PALETTE, 10)[i]
    return METHOD_COLORS[name]


def method_style(name: str) -> dict:
    """Line keywords for ``name``: its colour, dashed for an OWL allocation (``"<method>+owl"``)."""
    return {"color": method_color(name), "ls": "--" if name.endswith("+owl") else "-"}


def ordered_colors(n: int) -> list:
    """``n`` colours for an ordered series (ε values, steps): the palette in ``CB_ORDER``, cycled."""
    p = palette()
    return [p[i % len(p)] for i in range(n)]


LEGEND_PLACE = {"where": "right"}  # "right" of the axes, or "below" them (narrow paper figures: figures --paper)


def legend_outside(ax, **kw):
    """A legend outside the data area (never covers data): to the right of ``ax``, or below it while
    ``LEGEND_PLACE["where"] == "below"`` (``minilib.figures --paper``, where a column is narrow)."""
    if LEGEND_PLACE["where"] == "below":
        n = len(ax.get_legend_handles_labels()[1])
        where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.22), "ncol": 2 if n > 2 else max(n, 1)}
        kw = {k: v for k, v in kw.items() if k != "ncol"}  # below the axes, two columns fit a column's width
    else:
        where = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)}
    return ax.legend(**where, borderaxespad=0.0, frameon=False, **{"fontsize": "x-small", **kw})


def sizes_text(**sizes) -> str:
    """``"calibration 3 seeds x 32 x 64 tokens; test 32 x 128 tokens"``-style captions: ``key=value``
    pairs joined, ``None`` values left out."""
    return "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in sizes.items() if v is not None and v != "")


def resolve_figures_dir(figures_dir: str | os.PathLike | None = None) -> Path:
    """Where figures go: ``figures_dir`` if given, else ``$MINILIB_FIGURES`` (read at each call),
    else ``figures/`` at the repository root."""
    if figures_dir is not None and not isinstance(figures_dir, (str, os.PathLike)):
        raise TypeError(f"figures_dir must be a path (str or os.PathLike) or None, got {type(figures_dir).__name__}")
    if figures_dir is not None and str(figures_dir) == "":
        raise ValueError("figures_dir must be a non-empty path or None")
    d = figures_dir if figures_dir is not None else (os.environ.get(FIGURES_ENV) or FIGURES_DIR)
    d = Path(d).expanduser()
    if d.exists() and not d.is_dir():
        source = "figures_dir" if figures_dir is not None else (
            f"${FIGURES_ENV}" if os.environ.get(FIGURES_ENV) else "the default figures folder")
        raise NotADirectoryError(f"{source} = {str(d)!r} exists and is not a folder")
    return d


def _display_inline(fig) -> None:
    """Show ``fig`` as an output of the running cell: through the kernel's figure formatter (the
    inline backend's PNG/SVG), else as a PNG at the figure's own dpi."""
    import IPython
    from IPython.display import Image, display
    from matplotlib.figure import Figure
    ip = IPython.get_ipython()
    formatters = ip.display_formatter.formatters if ip is not None else {}
    for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf"):
        try:
            formatters[mime].lookup_by_type(Figure)
        except KeyError:
            continue
        display(fig)
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    display(Image(data=buf.getvalue(), format="png"))


def save_figure(fig, name: str, figures_dir: str | os.PathLike | None = None, close: bool = True, *,
                show: bool | None = None, directory: str | os.PathLike | None = None) -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.pdf`` and ``.png`` (each written atomically) and return
    the two paths.

    ``figures_dir``: see ``resolve_figures_dir`` (argument > ``$MINILIB_FIGURES`` > ``figures/``);
    ``directory`` is its former name.  ``show`` (default: only in a notebook kernel) displays the
    figure as an output of the cell.  ``close=True`` then closes it, so no figure stays open;
    ``close=False`` leaves it open (in a kernel the inline backend shows it at the end of the cell
    instead, so it is not displayed twice).
    """
    from minilib.io import atomic_file
    if directory is not None:
        if figures_dir is not None:
            raise TypeError("pass figures_dir or its former name directory, not both")
        figures_dir = directory
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string (the file name without extension), got {name!r}")
    d = resolve_figures_dir(figures_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.pdf", d / f"{name}.png"]
    for p in paths:
        with atomic_file(p) as tmp:
            # no creation date in the PDF: the same figure re-rendered is the same file (no spurious diffs)
            fig.savefig(tmp, format=p.suffix[1:], **({"metadata": {"CreationDate": None}} if p.suffix == ".pdf" else {}))
    if show is None:
        show = in_notebook()
    if show and close:
        _display_inline(fig)
    if close:
        plt.close(fig)
    return paths


set_theme()


# --- anatomy ------------------------------------------------------------------------------------

LAYER_LABELS = {"layer_hidden_cos": "hidden state", "layer_attn_cos": "attention output", "layer_ffn_cos": "FFN output"}
N_QUANTILES, N_BINS = 256, 60  # what a results file keeps of each layer's neuron values (neuron_summary)


def _layer_summary(anatomy) -> pd.DataFrame:
    """Per layer mean and std of the three layer cosines: an ``Anatomy`` (its ``layer_summary``) or its
    rows (``hidden_cos_mean, hidden_cos_std, ...``, one per layer, as the anatomy results hold them)."""
    if hasattr(anatomy, "layer_summary"):
        return anatomy.layer_summary()
    df = pd.DataFrame(anatomy)
    need = {"layer"} | {k.replace("layer_", "") + s for k in LAYER_LABELS for s in ("_mean", "_std")}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ValueError(f"plot_layer_curves: anatomy lacks columns {missing} (an Anatomy or its layer_summary rows)")
    return df.sort_values("layer")


def plot_layer_curves(anatomy, title: str = "", n_examples: int | None = None):
    """Mean over examples of the three per-layer cosines with the final decision vector, ± 1 standard
    deviation over examples as a band (a spread, not an interval; the legend says so and gives n).
    ``anatomy``: an ``Anatomy`` or its ``layer_summary`` rows."""
    s = _layer_summary(anatomy)
    if n_examples is None and hasattr(anatomy, "arrays"):
        n_examples = int(np.asarray(anatomy["layer_hidden_cos"]).shape[0])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = s["layer"].to_numpy()
    for k, lab in LAYER_LABELS.items():
        col = k.replace("layer_", "")
        m, sd = s[col + "_mean"].to_numpy(), s[col + "_std"].to_numpy()
        ax.plot(x, m, marker="o", ms=3, label=lab, color=method_color(lab))
        ax.fill_between(x, m - sd, m + sd, alpha=0.2, color=method_color(lab), lw=0)
    ax.plot([], [], color="0.6", lw=6, alpha=0.4,
            label="band: ± 1 std over " + (f"{n_examples} examples" if n_examples else "examples"))
    ax.set_xlabel("layer")
    ax.set_ylabel("cos with final decision vector")
    ax.set_title(title, fontsize="small")
    legend_outside(ax)
    return fig


def neuron_summary(values, n_quantiles: int = N_QUANTILES, n_bins: int = N_BINS) -> dict:
    """What the neuron heatmap and histogram need of a layers x neurons array, small enough for a
    results file: each layer's values sorted (descending) and resampled to ``n_quantiles`` quantiles,
    and each layer's counts on ``n_bins`` bins shared by all layers (from the overall min to max)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"neuron_summary: values must be a non-empty layers x neurons array, got shape {arr.shape}")
    q = np.linspace(1.0, 0.0, n_quantiles)
    quantiles = np.quantile(arr, q, axis=1).T  # layers x n_quantiles, descending
    lo, hi = float(arr.min()), float(arr.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, n_bins + 1)
    counts = np.stack([np.histogram(row, bins=edges)[0] for row in arr])
    return {"n_layers": int(arr.shape[0]), "n_neurons": int(arr.shape[1]),
            "quantiles": np.round(quantiles, 6).tolist(), "hist_edges": np.round(edges, 7).tolist(),
            "hist_counts": counts.astype(int).tolist()}


def _neurons(anatomy, kind: str):
    """(quantile matrix layers x quantiles, edges, counts layers x bins, neurons per layer) of an
    ``Anatomy`` (its ``kind`` array) or of a ``neuron_summary`` dict."""
    if isinstance(anatomy, dict) and "quantiles" in anatomy:
        s = anatomy
    else:
        s = neuron_summary(np.asarray(anatomy[kind]))
    return (np.asarray(s["quantiles"], dtype=float), np.asarray(s["hist_edges"], dtype=float),
            np.asarray(s["hist_counts"], dtype=float), int(s["n_neurons"]))


def plot_neuron_heatmap(anatomy, kind: str = "neuron_cos", title: str = ""):
    """Layer x neuron heatmap, neurons sorted within each layer (descending; shown as ``N_QUANTILES``
    quantiles of each layer).  ``anatomy``: an ``Anatomy`` or a ``neuron_summary`` dict."""
    arr, _, _, width = _neurons(anatomy, kind)
    lim = float(np.percentile(np.abs(arr), 99.5)) or 1.0  # robust: a few outliers would wash the map out
    # constrained from the start: its colorbar then lays out under any later engine (figures --paper)
    fig, ax = plt.subplots(figsize=(7, 0.18 * arr.shape[0] + 2), layout="constrained")
    im = ax.imshow(arr, aspect="auto", cmap="RdBu_r", vmin=-lim if arr.min() < 0 else 0, vmax=lim,
                   interpolation="nearest", extent=(0, 100, arr.shape[0] - 0.5, -0.5))
    ax.grid(False)
    ax.set_xlabel(f"neuron rank within layer (%, of {width}; descending)")
    ax.set_ylabel("layer")
    ax.set_title(title or kind, fontsize="small")
    fig.colorbar(im, ax=ax, label=kind)
    return fig


def plot_neuron_distribution(anatomy, kind: str = "neuron_cos", title: str = ""):
    """Histogram of per-neuron mean cosines, early / middle / late layers overlaid (density, log
    scale).  ``anatomy``: an ``Anatomy`` or a ``neuron_summary`` dict."""
    _, edges, counts, width = _neurons(anatomy, kind)
    L = counts.shape[0]
    thirds = {"early layers": slice(0, max(1, L // 3)), "middle layers": slice(L // 3, max(L // 3 + 1, 2 * L // 3)),
              "late layers": slice(2 * L // 3, L)}
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    widths = np.diff(edges)
    for lab, sl in thirds.items():
        c = counts[sl].sum(0)
        n_layers = counts[sl].shape[0]
        if not c.sum():
            continue
        dens = c / (c.sum() * widths)
        ax.stairs(dens, edges, fill=True, alpha=0.12, color=method_color(lab))  # outlines stay visible where they overlap
        ax.stairs(dens, edges, lw=1.3, color=method_color(lab), label=f"{lab} ({n_layers} x {width} neurons)")
    ax.set_xlabel(f"{kind} (mean over examples)")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_title(title, fontsize="small")
    legend_outside(ax)
    return fig


# --- structured pruning -------------------------------------------------------------------------

def _interval_note(df) -> str:
    runs = pd.to_numeric(df.get("runs", pd.Series([1])), errors="coerce").fillna(1)
    if (runs > 1).any():
        return f"band: 95% CI (1 run: Wilson;\n{int(runs.max())} seeds: t over seeds)"
    return "band: 95% Wilson interval"


def plot_accuracy_vs_pruned(df, title: str = "", chance: float | None = None):
    """Accuracy against % of FFN neurons removed, one line per method with its 95% interval as a band
    (``seed_summary``: Wilson for a single run, t over seeds where a method ran several; the legend
    says which); the majority-class rate as a labelled dotted line."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    has_ci = {"ci95_low", "ci95_high"} <= set(df.columns)
    for name, g in df.groupby("method", sort=False):
        g = g.sort_values("ratio")
        st = method_style(name)
        runs = int(pd.to_numeric(g["runs"], errors="coerce").max()) if "runs" in g else 1
        ax.plot(100 * g["ratio"], g["acc"], marker="o", label=f"{name} ({runs} seeds)" if runs > 1 else name, **st)
        if has_ci:
            ax.fill_between(100 * g["ratio"], g["ci95_low"], g["ci95_high"], alpha=0.15, color=st["color"], lw=0)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label=f"majority class ({chance:.3f})")
    if has_ci:
        ax.plot([], [], color="0.6", lw=6, alpha=0.4, label=_interval_note(df))
    ax.set_xlabel("% FFN neurons removed")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize="small")
    legend_outside(ax)
    return fig


def plot_cost(df, title: str = "", ppl_label: str = "perplexity (wiki test)"):
    """Perplexity (decoders) and latency ratio against % pruned (means over seeds; no intervals: one
    timing and one perplexity per run); dense = 1 is a labelled reference line."""
    has_ppl = "perplexity" in df and df["perplexity"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_ppl else 1, figsize=(10 if has_ppl else 5.5, 3.6), squeeze=False)
    axes = axes[0]
    dense_lat = df.loc[df["ratio"] == 0, "latency_s"].median()
    for name, g in df.groupby("method", sort=False):
        g = g.sort_values("ratio")
        st = method_style(name)
        axes[-1].plot(100 * g["ratio"], g["latency_s"] / dense_lat, marker="o", label=name, **st)
        if has_ppl:
            axes[0].plot(100 * g["ratio"], g["perplexity"], marker="o", label=name, **st)
    axes[-1].axhline(1.0, color="k", ls="--", lw=1, label="dense")
    axes[-1].set_xlabel("% FFN neurons removed")
    axes[-1].set_ylabel("CPU latency / dense")
    if has_ppl:
        dense_ppl = df.loc[df["ratio"] == 0, "perplexity"].median()
        if dense_ppl == dense_ppl:
            axes[0].axhline(dense_ppl, color="k", ls="--", lw=1)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("% FFN neurons removed")
        axes[0].set_ylabel(ppl_label)
    legend_outside(axes[-1])
    fig.suptitle(title, fontsize="small")
    return fig


# --- dense baselines ----------------------------------------------------------------------------

def plot_dense_baselines(ppl: pd.DataFrame, mcq: pd.DataFrame, title: str = ""):
    """Perplexity per corpus (test split) and MCQ accuracy against chance (a labelled marker), with
    their 95% intervals as error bars where the tables carry them (``minilib.studies.dense``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    has_p = {"ppl_low", "ppl_high"} <= set(ppl.columns)
    yerr = [ppl["perplexity"] - ppl["ppl_low"], ppl["ppl_high"] - ppl["perplexity"]] if has_p else None
    axes[0].bar(ppl["corpus"], ppl["perplexity"], yerr=yerr, capsize=3, color=palette()[0])
    axes[0].set_ylabel("perplexity (test split)" + (", 95% t-interval over windows" if has_p else ""), fontsize="small")
    axes[0].set_yscale("log")
    has_a = {"acc_ci95_low", "acc_ci95_high"} <= set(mcq.columns)
    aerr = [mcq["acc"] - mcq["acc_ci95_low"], mcq["acc_ci95_high"] - mcq["acc"]] if has_a else None
    axes[1].bar(mcq["task"], mcq["acc"], yerr=aerr, capsize=3, color=palette()[1],
                label="accuracy (95% Wilson interval)" if has_a else "accuracy")
    axes[1].scatter(mcq["task"], mcq["chance"], color="k", marker="_", s=400, label="chance")
    axes[1].set_ylabel("accuracy")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    legend_outside(axes[1])
    fig.suptitle(title, fontsize="small")
    return fig


# --- SparseGPT ------------------------------------------------------------------------------------

def plot_ppl_vs_sparsity(summary: pd.DataFrame, dense_ppl: float, nm: str = "", corpus: str = "", title: str = ""):
    """Perplexity against unstructured sparsity per method (lines, 95% interval as error bars: t over
    calibration seeds where a method ran several, else over evaluation windows), N:M runs as squares,
    OWL allocations dashed, dense a labelled dashed line.  ``summary``:
    ``minilib.studies.sparsegpt.setting_summary`` (columns ``method, sparsity, nm, ppl, low, high, runs``)."""
    need = {"method", "sparsity", "nm", "ppl", "low", "high", "runs"}
    missing = sorted(need - set(summary.columns))
    if missing:
        raise ValueError(f"plot_ppl_vs_sparsity: summary lacks columns {missing} (use setting_summary)")
    fig, ax = plt.subplots(figsize=(6, 4))
    uns = summary[(summary.nm == "") & (summary.method != "dense")]
    for meth, g in uns.groupby("method"):
        g = g.sort_values("sparsity")
        st = method_style(meth)
        err = [g.ppl - g.low, g.high - g.ppl]
        runs = int(g.runs.max())
        ax.errorbar(g.sparsity, g.ppl, yerr=err, marker="o", capsize=3, **st,
                    label=f"{meth} ({runs} seeds)" if runs > 1 else meth)
        nmrow = summary[(summary.method == meth) & (summary.nm != "")]
        if len(nmrow):
            ax.errorbar(nmrow.sparsity, nmrow.ppl, yerr=[nmrow.ppl - nmrow.low, nmrow.high - nmrow.ppl], fmt="s",
                        ms=7, capsize=3, color=st["color"], mec="k", label=f"{meth} {nm}")
    ax.axhline(dense_ppl, color="k", ls="--", lw=1, label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(f"perplexity ({corpus} test)\n95% t-interval over seeds (one run: over windows)", fontsize="small")
    ax.set_title(title, fontsize="small")
    legend_outside(ax)
    return fig


def plot_layer_error(layers: pd.DataFrame, method: str, title: str = ""):
    """Relative reconstruction error per block: mean over each block's layers per method (left), and
    per layer type for ``method`` (right).  One calibration draw: no interval."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for meth, g in layers.groupby("method"):
        per_block = g.groupby("block")["rel_error"].mean()
        axes[0].plot(per_block.index, per_block.values, marker=".", label=meth, **method_style(meth))
    axes[0].set_xlabel("block")
    axes[0].set_ylabel("relative reconstruction error")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize="x-small", loc="best")
    axes[0].set_title("mean over the block's layers", fontsize="small")
    g = layers[layers.method == method]
    types = list(dict.fromkeys(g["type"]))
    markers = "osv^DPX*"  # a marker per type as well: seven types need more than colour to stay apart
    for i, (t, c) in enumerate(zip(types, ordered_colors(len(types)))):
        gt = g[g["type"] == t]
        axes[1].plot(gt.block, gt.rel_error, marker=markers[i % len(markers)], ms=3, lw=1, label=t, color=c)
    axes[1].set_xlabel("block")
    axes[1].set_yscale("log")
    legend_outside(axes[1], fontsize="xx-small")
    axes[1].set_title(f"{method}, per layer", fontsize="small")
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


# --- mean and interval over seeds (sweeps) ------------------------------------------------------

def plot_over_seeds(summary: pd.DataFrame, x: str, metric: str | None = None, hue: str | None = None,
                    title: str = "", ylabel: str | None = None):
    """Mean over seeds against ``x`` with its 95% t-interval as a band, one line per ``hue`` value.

    ``summary`` is what ``minilib.runner.aggregate_over_seeds`` returns (columns ``metric, n_seeds,
    mean, ci_lo, ci_hi`` and the setting columns); ``metric`` picks one when it holds several.  Points with
    a single seed have no band; the legend gives the number of seeds per line."""
    need = {"metric", "n_seeds", "mean", "ci_lo", "ci_hi", x} | ({hue} if hue else set())
    missing = sorted(need - set(summary.columns))
    if missing:
        raise ValueError(f"plot_over_seeds: summary lacks columns {missing} (use aggregate_over_seeds)")
    metrics = list(dict.fromkeys(summary["metric"]))
    if metric is None:
        if len(metrics) != 1:
            raise ValueError(f"plot_over_seeds: the summary holds metrics {metrics}; pass metric=")
        metric = metrics[0]
    elif metric not in metrics:
        raise ValueError(f"plot_over_seeds: metric {metric!r} not in the summary ({metrics})")
    d = summary[summary["metric"] == metric]
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    groups = d.groupby(hue, sort=False) if hue else [(None, d)]
    for key, g in groups:
        g = g.sort_values(x)
        n = sorted(set(g["n_seeds"]))
        name = metric if key is None else f"{hue}={key}"
        label = f"{name} (n={n[0]})" if len(n) == 1 else f"{name} (n={n[0]}-{n[-1]})"
        color = method_color(name)
        ax.plot(g[x], g["mean"], marker="o", ms=4, color=color, label=label)
        ax.fill_between(g[x], g["ci_lo"], g["ci_hi"], color=color, alpha=0.2, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or f"{metric} (mean, 95% t-interval over seeds)")
    ax.set_title(title)
    legend_outside(ax)
    return fig


# --- contextual pruning: per-layer removal, bits per byte ---------------------------------------

def _eps_colors(values) -> dict:
    vals = sorted({float(v) for v in values if v == v})
    return dict(zip(vals, ordered_colors(len(vals))))


def plot_layer_removal(layers: pd.DataFrame, title: str = ""):
    """Share of FFN neurons a threshold removes in each block: one row of panels per domain, one panel
    per scoring rule, one line per ε (``minilib.studies.contextual.layer_removal`` rows)."""
    domains = list(dict.fromkeys(layers["domain"])) if "domain" in layers else [None]
    rules = list(dict.fromkeys(layers["rule"]))
    colors = _eps_colors(layers["eps"])
    fig, axes = plt.subplots(len(domains), len(rules), figsize=(4.6 * len(rules), 2.9 * len(domains)),
                             squeeze=False, sharey=True)
    for i, d in enumerate(domains):
        rows = layers if d is None else layers[layers["domain"] == d]
        for j, rule in enumerate(rules):
            ax = axes[i][j]
            for eps, g in rows[rows["rule"] == rule].groupby("eps", sort=True):
                g = g.sort_values("block")
                ax.plot(g["block"], 100 * g["fraction"], marker="o", ms=3, color=colors[float(eps)],
                        label=f"ε={eps:g} ({100 * g['total_fraction'].iloc[0]:.1f}% in all)")
            ax.set_title(f"{d} — {rule}" if d is not None else rule, fontsize="small")
            ax.set_xlabel("block")
            ax.legend(fontsize="xx-small", loc="best")
        axes[i][0].set_ylabel("% of FFN neurons removed")
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return fig


def plot_size_vs_bpb(records: pd.DataFrame, title: str = ""):
    """Per domain: bits per byte minus the dense model's, on the same test text (paired 95% bootstrap
    interval over text chunks), against % of dense parameters, after pruning and after fine-tuning;
    zero = dense, a labelled line."""
    domains = list(dict.fromkeys(records["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, d in zip(axes[0], domains):
        r = records[records["domain"] == d]
        ax.axhline(0, color="k", ls="--", lw=1, label="dense")
        for stage, marker in (("pruned", "o"), ("finetuned", "s")):
            s = r[r["stage"] == stage].sort_values("size_pct")
            err = np.vstack([s["d_bpb"] - s["d_bpb_low"], s["d_bpb_high"] - s["d_bpb"]])
            ax.errorbar(s["size_pct"], s["d_bpb"], yerr=err, marker=marker, capsize=3, color=method_color(stage),
                        label=stage)
            for _, row in s.iterrows():
                ax.annotate(f"ε={row['eps']:g}", (row["size_pct"], row["d_bpb"]), fontsize="xx-small",
                            textcoords="offset points", xytext=(3, 3))
        ax.set_title(d, fontsize="small")
        ax.set_xlabel("% of dense parameters")
    axes[0][0].set_ylabel("Δ bits per byte vs dense\n(paired 95% bootstrap interval)", fontsize="small")
    legend_outside(axes[0][-1])
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


def plot_recovery_bpb(curves: pd.DataFrame, records: pd.DataFrame, title: str = ""):
    """Per domain: dev bits per byte during fine-tuning, one line per ε; the dense model's a labelled
    dashed line.  One fine-tuning run per ε: no interval."""
    domains = list(dict.fromkeys(records["domain"]))
    colors = _eps_colors(curves["eps"])
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, d in zip(axes[0], domains):
        c = curves[(curves["domain"] == d) & curves["dev_bpb"].notna()]
        for eps, g in c.groupby("eps"):
            ax.plot(g["step"], g["dev_bpb"], marker="o", color=colors[float(eps)], label=f"ε={eps:g}")
        dense = records[(records["domain"] == d) & (records["stage"] == "dense")]["dev_bpb"].iloc[0]
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        ax.set_title(d, fontsize="small")
        ax.set_xlabel("fine-tuning step")
    axes[0][0].set_ylabel("dev bits per byte")
    legend_outside(axes[0][-1])
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


# --- SparseGPT: calibration budget ----------------------------------------------------------------

def plot_calibration_budget(summary: pd.DataFrame, title: str = "", xlabel: str = "calibration tokens"):
    """Perplexity against the calibration budget, one line per method with its 95% t-interval over
    seeds as a band (``minilib.studies.sparsegpt.budget_summary``: columns ``tokens, method, seeds,
    ppl, low, high``); log-log axes."""
    need = {"tokens", "method", "seeds", "ppl", "low", "high"}
    missing = sorted(need - set(summary.columns))
    if missing:
        raise ValueError(f"plot_calibration_budget: summary lacks columns {missing} (use budget_summary)")
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for meth, g in summary.groupby("method", sort=True):
        g = g.sort_values("tokens")
        st = method_style(meth)
        ax.plot(g["tokens"], g["ppl"], marker="o", ms=4, **st, label=f"{meth} ({int(g['seeds'].min())} seeds)")
        ax.fill_between(g["tokens"], g["low"], g["high"], color=st["color"], alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("perplexity (geometric mean over seeds)\nband: 95% t-interval over seeds", fontsize="small")
    ax.set_title(title, fontsize="small")
    legend_outside(ax)
    return fig


# --- benchmarks -----------------------------------------------------------------------------------

def plot_bench_inference(res: dict):
    """Latency of each output format relative to dense per phase (``benchmarks/bench_inference.py``
    results): medians over interleaved rounds (no interval: the spread is in the table); dense = 1 a
    labelled line."""
    rows = res["rows"]
    cases = list(dict.fromkeys((r["phase"], r["tokens"], r["batch"]) for r in rows))
    formats = list(dict.fromkeys(r["format"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(formats)
    colors = ordered_colors(len(formats))
    for i, f in enumerate(formats):
        vals = [next((r["ratio_to_dense"] for r in rows if r["format"] == f and (r["phase"], r["tokens"], r["batch"]) == c),
                     np.nan) for c in cases]
        ax.bar(np.arange(len(cases)) + i * width, vals, width, label=f, color=colors[i],
               hatch="//" if "exported" in f else None, edgecolor="white", lw=0.3)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="dense (1.0)")
    ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2,
                  [f"prefill {t}" if p == "prefill" else f"decode b{b}" for p, t, b in cases], fontsize="x-small")
    ax.set_ylabel("latency / dense (median of rounds)")
    d = res["env"]
    where = d["device_name"] + (f", {d['threads']} threads" if d["device"] == "cpu" else "")
    ax.set_title(f"{res['model']} on {where}; {res['repeats']} interleaved rounds, decode {res['new_tokens']} "
                 f"tokens after {res['prompt']}", fontsize="x-small")
    legend_outside(ax, ncol=1)
    return fig
