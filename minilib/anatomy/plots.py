"""Figures of the anatomy and of pruning sweeps (saved by the caller with ``minilib.plotting.save_figure``)."""

from __future__ import annotations

import numpy as np

from minilib.plotting import method_color, plt

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
