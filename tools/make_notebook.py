"""Build a notebook from a list of cells (helper for writing the suite's notebooks from scripts).

    from tools.make_notebook import write_notebook
    write_notebook("notebooks/X.ipynb", [("md", "# Title"), ("params", "model = 'smollm2-135m'"), ("code", "...")])

The ``params`` cell is tagged ``parameters`` for papermill; the kernel is ``minilib``.
"""

from __future__ import annotations

import nbformat


def write_notebook(path: str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "minilib", "display_name": "Python (minilib)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        elif kind == "params":
            c = nbformat.v4.new_code_cell(src)
            c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, path)
