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
METHOD_COLORS = {}  # filled lazily so that a method keeps its colour across figures


def set_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.2,
                  rc={"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                      "axes.spines.top": False, "axes.spines.right": False,
                      # PDF text as embedded TrueType (Type 42), not Type 3 outlines: what journals and
                      # arXiv ask for, and text stays selectable and editable
                      "pdf.fonttype": 42, "ps.fonttype": 42})


def method_color(name: str):
    if name not in METHOD_COLORS:
        METHOD_COLORS[name] = sns.color_palette(PALETTE, 10)[len(METHOD_COLORS) % 10]
    return METHOD_COLORS[name]


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
            fig.savefig(tmp, format=p.suffix[1:])
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
    # 95% intervals as error bars where the tables carry them (minilib.studies.dense)
    yerr = ([ppl["perplexity"] - ppl["ppl_low"], ppl["ppl_high"] - ppl["perplexity"]]
            if {"ppl_low", "ppl_high"} <= set(ppl.columns) else None)
    axes[0].bar(ppl["corpus"], ppl["perplexity"], yerr=yerr, capsize=3)
    axes[0].set_ylabel("perplexity (test split)")
    axes[0].set_yscale("log")
    aerr = ([mcq["acc"] - mcq["acc_ci95_low"], mcq["acc_ci95_high"] - mcq["acc"]]
            if {"acc_ci95_low", "acc_ci95_high"} <= set(mcq.columns) else None)
    axes[1].bar(mcq["task"], mcq["acc"], yerr=aerr, capsize=3, label="acc (95% CI)" if aerr is not None else "acc")
    axes[1].scatter(mcq["task"], mcq["chance"], color="k", marker="_", s=400, label="chance")
    axes[1].set_ylabel("accuracy")
    axes[1].legend()
    fig.suptitle(title)
    return fig


# --- SparseGPT ------------------------------------------------------------------------------------

def plot_ppl_vs_sparsity(summary: pd.DataFrame, dense_ppl: float, nm: str = "", corpus: str = "", title: str = ""):
    """Perplexity against unstructured sparsity per method (lines, 95% interval as error bars), N:M runs
    as squares, dense dashed.  ``summary``: ``minilib.studies.sparsegpt.setting_summary`` (columns
    ``method, sparsity, nm, ppl, low, high, runs``: over calibration seeds where a method ran several)."""
    need = {"method", "sparsity", "nm", "ppl", "low", "high", "runs"}
    missing = sorted(need - set(summary.columns))
    if missing:
        raise ValueError(f"plot_ppl_vs_sparsity: summary lacks columns {missing} (use setting_summary)")
    fig, ax = plt.subplots(figsize=(6, 4))
    uns = summary[(summary.nm == "") & (summary.method != "dense")]
    for meth, g in uns.groupby("method"):
        g = g.sort_values("sparsity")
        color = method_color(meth)
        err = [g.ppl - g.low, g.high - g.ppl]
        runs = int(g.runs.max())
        ax.errorbar(g.sparsity, g.ppl, yerr=err, marker="o", capsize=3, color=color,
                    label=f"{meth} ({runs} seeds)" if runs > 1 else meth)
        nmrow = summary[(summary.method == meth) & (summary.nm != "")]
        if len(nmrow):
            ax.errorbar(nmrow.sparsity, nmrow.ppl, yerr=[nmrow.ppl - nmrow.low, nmrow.high - nmrow.ppl], fmt="s",
                        ms=7, capsize=3, color=color, mec="k", label=f"{meth} {nm}")
    ax.axhline(dense_ppl, color="k", ls="--", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel(f"perplexity ({corpus} test), 95% CI")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
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
    ax.set_ylabel(ylabel or f"{metric} (mean, 95% CI over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


# --- contextual pruning: per-layer removal, bits per byte ---------------------------------------

def plot_layer_removal(layers: pd.DataFrame, title: str = ""):
    """Share of FFN neurons a threshold removes in each block: one row of panels per domain, one panel
    per scoring rule, one line per ε (``minilib.studies.contextual.layer_removal`` rows)."""
    domains = list(dict.fromkeys(layers["domain"])) if "domain" in layers else [None]
    rules = list(dict.fromkeys(layers["rule"]))
    fig, axes = plt.subplots(len(domains), len(rules), figsize=(4.6 * len(rules), 2.9 * len(domains)),
                             squeeze=False, sharey=True)
    for i, d in enumerate(domains):
        rows = layers if d is None else layers[layers["domain"] == d]
        for j, rule in enumerate(rules):
            ax = axes[i][j]
            for eps, g in rows[rows["rule"] == rule].groupby("eps", sort=False):
                g = g.sort_values("block")
                ax.plot(g["block"], 100 * g["fraction"], marker="o", ms=3, color=method_color(f"eps={eps:g}"),
                        label=f"ε={eps:g} ({100 * g['total_fraction'].iloc[0]:.1f}% in all)")
            ax.set_title(f"{d} — {rule}" if d is not None else rule, fontsize=10)
            ax.set_xlabel("block")
            ax.legend(fontsize=7)
        axes[i][0].set_ylabel("% of FFN neurons removed")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_size_vs_bpb(records: pd.DataFrame):
    """Per domain: bits per byte minus the dense model's, on the same test text (paired 95% interval),
    against % of dense parameters, after pruning and after fine-tuning; zero = dense."""
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
                ax.annotate(f"ε={row['eps']:g}", (row["size_pct"], row["d_bpb"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_title(d)
        ax.set_xlabel("% of dense parameters")
    axes[0][0].set_ylabel("Δ bits per byte vs dense")
    axes[0][-1].legend(fontsize=8)
    return fig


def plot_recovery_bpb(curves: pd.DataFrame, records: pd.DataFrame):
    """Per domain: dev bits per byte during fine-tuning, one line per ε; the dense model's dashed."""
    domains = list(dict.fromkeys(records["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, d in zip(axes[0], domains):
        c = curves[(curves["domain"] == d) & curves["dev_bpb"].notna()]
        for eps, g in c.groupby("eps"):
            ax.plot(g["step"], g["dev_bpb"], marker="o", color=method_color(f"eps={eps:g}"), label=f"ε={eps:g}")
        dense = records[(records["domain"] == d) & (records["stage"] == "dense")]["dev_bpb"].iloc[0]
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        ax.set_title(d)
        ax.set_xlabel("fine-tuning step")
    axes[0][0].set_ylabel("dev bits per byte")
    axes[0][-1].legend(fontsize=8)
    return fig


# --- SparseGPT: calibration budget ----------------------------------------------------------------

def plot_calibration_budget(summary: pd.DataFrame, title: str = "", xlabel: str = "calibration tokens"):
    """Perplexity against the calibration budget, one line per method with its 95% interval over
    seeds as a band (``minilib.studies.sparsegpt.budget_summary``: columns ``tokens, method, seeds,
    ppl, low, high``); log-log axes."""
    need = {"tokens", "method", "seeds", "ppl", "low", "high"}
    missing = sorted(need - set(summary.columns))
    if missing:
        raise ValueError(f"plot_calibration_budget: summary lacks columns {missing} (use budget_summary)")
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for meth, g in summary.groupby("method", sort=True):
        g = g.sort_values("tokens")
        color = method_color(meth)
        ax.plot(g["tokens"], g["ppl"], marker="o", ms=4, color=color, label=f"{meth} ({int(g['seeds'].min())} seeds)")
        ax.fill_between(g["tokens"], g["low"], g["high"], color=color, alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("perplexity (geometric mean over seeds, 95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
