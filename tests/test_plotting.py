"""minilib.plotting.save_figure: where figures go, PDF + PNG written whole, shown inline in a notebook
kernel, and never left open outside notebooks."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from minilib import plotting
from minilib.plotting import FIGURES_DIR, resolve_figures_dir, save_figure

ROOT = Path(__file__).resolve().parents[1]
PDF_MAGIC, PNG_MAGIC = b"%PDF-", b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    plt.close("all")


def _fig():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [2, 0, 1])
    return fig


# --- where ----------------------------------------------------------------------------------------

def test_figures_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MINILIB_FIGURES", raising=False)
    assert FIGURES_DIR == ROOT / "figures"
    assert resolve_figures_dir() == ROOT / "figures"
    monkeypatch.setenv("MINILIB_FIGURES", str(tmp_path / "env"))          # read at call time
    assert resolve_figures_dir() == tmp_path / "env"
    assert resolve_figures_dir(tmp_path / "arg") == tmp_path / "arg"       # the argument wins
    assert resolve_figures_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("MINILIB_FIGURES", "")                              # empty = unset
    assert resolve_figures_dir() == ROOT / "figures"


def test_save_figure_goes_where_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILIB_FIGURES", str(tmp_path / "env"))
    assert save_figure(_fig(), "a") == [tmp_path / "env" / "a.pdf", tmp_path / "env" / "a.png"]
    assert save_figure(_fig(), "b", tmp_path / "arg")[0] == tmp_path / "arg" / "b.pdf"
    assert save_figure(_fig(), "c", directory=tmp_path / "old")[1] == tmp_path / "old" / "c.png"  # former name
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["a.pdf", "a.png"]


# --- what is written, and what stays open ------------------------------------------------------------

def test_writes_real_pdf_and_png_and_closes_outside_notebooks(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(plotting, "_display_inline", shown.append)
    assert not plotting.in_notebook()
    fig = _fig()
    pdf, png = save_figure(fig, "curve", tmp_path)
    assert pdf.read_bytes().startswith(PDF_MAGIC) and pdf.stat().st_size > 1000
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.pdf", "curve.png"]  # no temporary files left
    assert plt.get_fignums() == [], "save_figure left a figure open outside a notebook"
    assert shown == []


def test_pdf_embeds_its_fonts_as_truetype_not_type3(tmp_path):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.set_title("perplexity vs sparsity")
    pdf, _ = save_figure(fig, "fonts", tmp_path)
    raw = pdf.read_bytes()
    assert b"/Subtype /Type3" not in raw and b"/Subtype/Type3" not in raw
    assert b"/FontFile2" in raw  # an embedded TrueType font program


def test_close_false_leaves_the_figure_open(tmp_path):
    fig = _fig()
    save_figure(fig, "kept", tmp_path, close=False)
    assert plt.get_fignums() == [fig.number]


def test_many_figures_do_not_accumulate(tmp_path):
    for i in range(21):  # matplotlib warns at more than 20 open figures; a notebook loop must not get there
        save_figure(_fig(), f"f{i}", tmp_path)
    assert plt.get_fignums() == []


def test_in_a_kernel_the_figure_is_displayed_before_it_is_closed(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(plotting, "in_notebook", lambda: True)
    monkeypatch.setattr(plotting, "_display_inline", lambda f: seen.append((f, plt.fignum_exists(f.number))))
    fig = _fig()
    save_figure(fig, "shown", tmp_path)
    assert seen == [(fig, True)]                 # displayed once, while still open
    assert plt.get_fignums() == []               # then closed
    save_figure(_fig(), "quiet", tmp_path, show=False)
    assert len(seen) == 1 and plt.get_fignums() == []
    save_figure(_fig(), "open", tmp_path, close=False)  # the inline backend shows it at the end of the cell
    assert len(seen) == 1 and len(plt.get_fignums()) == 1


def test_display_fallback_is_a_png(monkeypatch):
    """Without a figure formatter (no inline backend), the figure is displayed as a PNG."""
    import IPython.display
    out = []
    monkeypatch.setattr(IPython.display, "display", out.append)
    plotting._display_inline(_fig())
    assert len(out) == 1 and isinstance(out[0], IPython.display.Image)
    assert out[0].data.startswith(PNG_MAGIC)


# --- errors --------------------------------------------------------------------------------------

def test_bad_arguments_are_named(tmp_path):
    fig = _fig()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="figures_dir"):
        save_figure(fig, "x", tmp_path / "a_file")
    with pytest.raises(ValueError, match="name"):
        save_figure(fig, "", tmp_path)
    with pytest.raises(ValueError, match="figures_dir"):
        save_figure(fig, "x", "")
    with pytest.raises(TypeError, match="figures_dir"):
        save_figure(fig, "x", 3)
    with pytest.raises(TypeError, match="not both"):
        save_figure(fig, "x", tmp_path, directory=tmp_path)
    with pytest.raises(TypeError, match="Figure"):
        save_figure("not a figure", "x", tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "a_file"]  # nothing written


def test_env_pointing_at_a_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("MINILIB_FIGURES", str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError, match="MINILIB_FIGURES"):
        save_figure(_fig(), "x")


# --- the backend ---------------------------------------------------------------------------------

def test_headless_backend_outside_notebooks():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    r = subprocess.run([sys.executable, "-c", "import minilib.plotting, matplotlib; print(matplotlib.get_backend())"],
                       check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().lower() == "agg"


def test_real_kernel_shows_each_figure_once_and_closes_it(tmp_path):
    """In a real ``minilib`` kernel (what JupyterLab, papermill and nbval run): the inline backend stays
    active, save_figure's figure is an image output of its cell, exactly once, and is closed."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient
    assert "minilib" in KernelSpecManager().find_kernel_specs(), \
        "the Jupyter kernel 'minilib' is not registered; run `make setup`"
    code = [f"""
        import matplotlib, matplotlib.pyplot as plt
        from minilib.plotting import save_figure, in_notebook
        fig, ax = plt.subplots(); ax.plot([1, 2, 3])
        paths = save_figure(fig, "closed", {str(tmp_path)!r})
        print(in_notebook(), "inline" in matplotlib.get_backend(), plt.get_fignums())""", f"""
        fig, ax = plt.subplots(); ax.plot([3, 2, 1])
        save_figure(fig, "open", {str(tmp_path)!r}, close=False);""", """
        print(plt.get_fignums())"""]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in code])
    NotebookClient(nb, kernel_name="minilib", timeout=120).execute()
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in nb.cells]
    text = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]
    assert images == [1, 1, 0]
    assert text[0].strip() == "True True []"
    assert text[2].strip() == "[]"  # the inline backend closed the close=False figure after showing it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["closed.pdf", "closed.png", "open.pdf", "open.png"]
