"""One plotting module, one theme.  Every figure is saved to ``figures/`` as PDF and PNG, then closed.

    fig, ax = plt.subplots()
    ...
    save_figure(fig, "gpt2_anatomy_layers")   # figures/gpt2_anatomy_layers.{pdf,png}
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
