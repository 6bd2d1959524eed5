"""One plotting module, one theme, every figure of the suite.  Figures are saved as PDF and PNG by
``save_figure`` (to ``figures/``, or ``$MINILIB_FIGURES``), then closed.

    fig = plot_layer_curves(anatomy, "title")
    save_figure(fig, "gpt2_anatomy_layers")   # figures/gpt2_anatomy_layers.{pdf,png}

Sections: anatomy (layer curves, neuron heatmap and histogram), structured pruning sweeps
(accuracy and cost against % removed), dense baselines, SparseGPT (perplexity against sparsity,
per-layer reconstruction error), contextual pruning (size against perplexity, recovery curves).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and "ipykernel" not in os.environ.get("MPLBACKEND", ""):
    try:  # headless by default; inside Jupyter the inline backend is already active
        import IPython
        if IPython.get_ipython() is None:
            matplotlib.use("Agg")
    except ImportError:
        matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

FIGURES_DIR = Path(os.environ.get("MINILIB_FIGURES", Path(__file__).resolve().parent.parent / "figures"))
PALETTE = "colorblind"
METHOD_COLORS = {}  # filled lazily so that a method keeps its colour across figures


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.2,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                      "axes.spines.top": False, "axes.spines.right": False})


def method_color(name: str):
    if name not in METHOD_COLORS:
        METHOD_COLORS[name] = sns.color_palette(PALETTE, 10)[len(METHOD_COLORS) % 10]
    return METHOD_COLORS[name]


def save_figure(fig, name: str, directory: str | os.PathLike | None = None, close: bool = True) -> list[Path]:
    """Save ``fig`` as ``<directory>/<name>.pdf`` and ``.png`` (default ``figures/``); close it."""
    d = Path(directory) if directory is not None else FIGURES_DIR
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{name}.pdf", d / f"{name}.png"]
    for p in paths:
        fig.savefig(p)
    if close:
        plt.close(fig)
    return paths


set_theme()


# --- anatomy ------------------------------------------------------------------------------------

LAYER_LABELS = {"layer_hidden_cos": "hidden state", "layer_attn_cos": "attention output", "layer_ffn_cos": "FFN output"}


def plot_layer_curves(anatomy, title: str = ""):
    """Mean ± std over examples of the three per-layer cosines with the final decision vector."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    x = np.arange(anatomy.n_layers)
    for k, lab in LAYER_LABELS.items():
        v = anatomy[k]
        m, s = v.mean(0), v.std(0)
        ax.plot(x, m, marker="o", ms=3, label=lab, color=method_color(lab))
        ax.fill_between(x, m - s, m + s, alpha=0.2, color=method_color(lab))
    ax.set_xlabel("layer")
    ax.set_ylabel("cos with final decision vector")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_neuron_heatmap(anatomy, kind: str = "neuron_cos", title: str = ""):
    """Layer x neuron heatmap, neurons sorted within each layer (descending)."""
    arr = np.sort(np.asarray(anatomy[kind]), axis=1)[:, ::-1]
    lim = float(np.percentile(np.abs(arr), 99.5)) or 1.0  # robust: a few outliers would wash the map out
    fig, ax = plt.subplots(figsize=(7, 0.18 * arr.shape[0] + 2))
    im = ax.imshow(arr, aspect="auto", cmap="RdBu_r", vmin=-lim if arr.min() < 0 else 0, vmax=lim,
                   interpolation="nearest")
    ax.grid(False)
    ax.set_xlabel("neuron (sorted within layer)")
    ax.set_ylabel("layer")
    ax.set_title(title or kind)
    fig.colorbar(im, ax=ax, label=kind)
    return fig


def plot_neuron_distribution(anatomy, kind: str = "neuron_cos", title: str = ""):
    """Histogram of per-neuron mean cosines, early / middle / late layers overlaid."""
    arr = np.asarray(anatomy[kind])
    L = arr.shape[0]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    thirds = {"early layers": arr[: max(1, L // 3)], "middle layers": arr[L // 3: max(L // 3 + 1, 2 * L // 3)],
              "late layers": arr[2 * L // 3:]}
    bins = np.linspace(arr.min(), arr.max(), 60)
    for lab, v in thirds.items():
        ax.hist(v.ravel(), bins=bins, alpha=0.5, density=True, label=lab, color=method_color(lab))
    ax.set_xlabel(f"{kind} (mean over examples)")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_accuracy_vs_pruned(df, title: str = "", chance: float | None = None):
    """Accuracy against % of FFN neurons removed, one line (with 95% CI band) per method."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, g in df.groupby("method", sort=False):
        g = g.sort_values("ratio")
        c = method_color(name)
        ax.plot(100 * g["ratio"], g["acc"], marker="o", label=name, color=c)
        if "ci95_low" in g:
            ax.fill_between(100 * g["ratio"], g["ci95_low"], g["ci95_high"], alpha=0.15, color=c)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="majority class")
    ax.set_xlabel("% FFN neurons removed")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_cost(df, title: str = ""):
    """Perplexity (decoders) and latency ratio against % pruned."""
    has_ppl = "perplexity" in df and df["perplexity"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_ppl else 1, figsize=(10 if has_ppl else 5.5, 3.6), squeeze=False)
    axes = axes[0]
    dense_lat = df.loc[df["ratio"] == 0, "latency_s"].median()
    for name, g in df.groupby("method", sort=False):
        g = g.sort_values("ratio")
        c = method_color(name)
        axes[-1].plot(100 * g["ratio"], g["latency_s"] / dense_lat, marker="o", label=name, color=c)
        if has_ppl:
            axes[0].plot(100 * g["ratio"], g["perplexity"], marker="o", label=name, color=c)
    axes[-1].set_xlabel("% FFN neurons removed")
    axes[-1].set_ylabel("CPU latency / dense")
    if has_ppl:
        axes[0].set_yscale("log")
        axes[0].set_xlabel("% FFN neurons removed")
        axes[0].set_ylabel("perplexity (wiki test)")
    axes[-1].legend()
    fig.suptitle(title)
    return fig


# --- dense baselines ----------------------------------------------------------------------------

def plot_dense_baselines(ppl: pd.DataFrame, mcq: pd.DataFrame, title: str = ""):
    """Perplexity per corpus (test split) and MCQ accuracy against chance."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].bar(ppl["corpus"], ppl["perplexity"])
    axes[0].set_ylabel("perplexity (test split)")
    axes[0].set_yscale("log")
    axes[1].bar(mcq["task"], mcq["acc"], label="acc")
    axes[1].scatter(mcq["task"], mcq["chance"], color="k", marker="_", s=400, label="chance")
    axes[1].set_ylabel("accuracy")
    axes[1].legend()
    fig.suptitle(title)
    return fig


# --- SparseGPT ------------------------------------------------------------------------------------

def plot_ppl_vs_sparsity(runs: pd.DataFrame, dense_ppl: float, nm: str = "", corpus: str = "", title: str = ""):
    """Perplexity against unstructured sparsity per method (lines), N:M runs as squares, dense dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    uns = runs[(runs.nm == "") & (runs.method != "dense")]
    for meth, g in uns.groupby("method"):
        g = g.sort_values("sparsity")
        ax.plot(g.sparsity, g.perplexity, marker="o", label=meth, color=method_color(meth))
        nmrow = runs[(runs.method == meth) & (runs.nm != "")]
        if len(nmrow):
            ax.scatter(nmrow.sparsity, nmrow.perplexity, marker="s", s=60, color=method_color(meth),
                       edgecolor="k", label=f"{meth} {nm}")
    ax.axhline(dense_ppl, color="k", ls="--", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(f"perplexity ({corpus} test)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def plot_layer_error(layers: pd.DataFrame, method: str):
    """Relative reconstruction error per block: mean over each block's layers per method (left), and
    per layer type for ``method`` (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for meth, g in layers.groupby("method"):
        per_block = g.groupby("block")["rel_error"].mean()
        axes[0].plot(per_block.index, per_block.values, marker=".", label=meth, color=method_color(meth))
    axes[0].set_xlabel("block")
    axes[0].set_ylabel("relative reconstruction error")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("mean over the block's layers")
    g = layers[layers.method == method]
    for t, gt in g.groupby("type"):
        axes[1].plot(gt.block, gt.rel_error, marker=".", label=t)
    axes[1].set_xlabel("block")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    axes[1].set_title(f"{method}, per layer")
    return fig


# --- contextual pruning ---------------------------------------------------------------------------

def plot_size_vs_perplexity(records: pd.DataFrame):
    """Per domain: test perplexity against % size, after pruning and after fine-tuning; dense line."""
    domains = list(dict.fromkeys(records["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, d in zip(axes[0], domains):
        r = records[records["domain"] == d]
        dense = r[r["stage"] == "dense"]["ppl"].iloc[0]
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        for stage, marker in (("pruned", "o"), ("finetuned", "s")):
            s = r[r["stage"] == stage].sort_values("size_pct")
            ax.plot(s["size_pct"], s["ppl"], marker=marker, color=method_color(stage), label=stage)
            for _, row in s.iterrows():
                ax.annotate(f"ε={row['eps']:g}", (row["size_pct"], row["ppl"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_title(d)
        ax.set_xlabel("% of dense parameters")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("test perplexity")
    axes[0][-1].legend(fontsize=8)
    return fig


def plot_recovery(curves: pd.DataFrame, records: pd.DataFrame):
    """Per domain: dev perplexity during fine-tuning, one line per ε; dense dev perplexity dashed."""
    domains = list(dict.fromkeys(records["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, d in zip(axes[0], domains):
        c = curves[(curves["domain"] == d) & curves["dev_ppl"].notna()]
        for eps, g in c.groupby("eps"):
            ax.plot(g["step"], g["dev_ppl"], marker="o", color=method_color(f"eps={eps:g}"), label=f"ε={eps:g}")
        dense = records[(records["domain"] == d) & (records["stage"] == "dense")]["dev_ppl"].iloc[0]
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        ax.set_title(d)
        ax.set_xlabel("fine-tuning step")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("dev perplexity")
    axes[0][-1].legend(fontsize=8)
    return fig

