"""``python -m minilib.runner prepare-tests DIR``: copies of the notebooks with the small test
parameters of ``tests/notebooks/<name>.yaml`` injected (papermill's parameterisation, not executed),
for ``pytest DIR --nbval-lax``.

Each copy gets ``results_path = DIR/results/<name>.json`` and, if its parameters cell defines it,
``figures_dir = DIR/figures`` (unless the YAML sets them), so nbval never writes into ``results/``
or ``figures/``.  A YAML key that the notebook does not define is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from .spec import ROOT, SpecError, check_parameters, notebook_parameters

KERNEL = "minilib"


def prepare_tests(out_dir: str | os.PathLike, params_dir: str | os.PathLike = ROOT / "tests" / "notebooks",
                  notebooks_dir: str | os.PathLike = ROOT / "notebooks", kernel: str = KERNEL) -> list[Path]:
    import nbformat
    import yaml
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in sorted(Path(params_dir).glob("*.yaml")):
        nb_path = Path(notebooks_dir) / f"{spec.stem}.ipynb"
        if not nb_path.is_file():
            raise FileNotFoundError(f"{spec} names notebook {nb_path.name}, which does not exist")
        params = yaml.safe_load(spec.read_text()) or {}
        if not isinstance(params, dict):
            raise SpecError(f"{spec}: expected a mapping of parameters, got {params!r}")
        check_parameters(str(spec), nb_path, params, allow_reserved=True)
        params.setdefault("results_path", str((out_dir / "results" / f"{spec.stem}.json").resolve()))
        if "figures_dir" in notebook_parameters(nb_path):
            params.setdefault("figures_dir", str((out_dir / "figures").resolve()))
        nb = load_notebook_node(str(nb_path))
        nb = parameterize_notebook(nb, params, kernel_name=kernel)
        target = out_dir / nb_path.name
        nbformat.write(nb, target)
        written.append(target)
    return written
