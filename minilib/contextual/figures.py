"""Figures of the contextual-pruning notebook (through ``minilib.plotting``: one theme, PDF + PNG)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from minilib.plotting import method_color, save_figure


def plot_size_vs_perplexity(records: pd.DataFrame, name: str):
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
    return save_figure(fig, name)


def plot_recovery(curves: pd.DataFrame, records: pd.DataFrame, name: str):
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
    return save_figure(fig, name)
