"""Sweep specs: strict loading, validation against the notebooks' parameters cells, expansion.

A spec (YAML)::

    name: anatomy-grid                  # optional; default: the file's stem
    description: free text              # optional
    seeds: [0, 1, 2]                    # optional: a seed axis for every entry (parameter ``seed``)
    resources: {GPU: 1}                 # optional: Dask resources every run asks for
    runs:
      - notebook: notebooks/BERT_pruning_baseline.ipynb   # relative to the repository root, or absolute
        name: baseline                  # optional label for ``after`` (default: the notebook's stem)
        parameters: {n_test: 600}       # fixed values
        grid: {ratio: [0.1, 0.3]}       # cartesian product, one run per point
        seeds: [0, 1]                   # overrides the top-level seeds for this entry
        after: [anatomy]                # entries (by name, earlier in the spec) that must finish first
        resources: {GPU: 1}

Everything is checked before anything runs: unknown keys (with the closest allowed key), empty
grids, notebooks that do not exist, parameters that the notebook's ``parameters`` cell does not
define (the cell papermill injects after, read with ``ast``), values that the notebook's parameter
spec rejects (``minilib.profiles.NOTEBOOKS``, found by the notebook's stem: kind, range, choices,
whatever the cell's default, often ``None``) -- or, for a notebook without a spec, values whose
type does not match the default in that cell --, parameters the runner sets itself
(``results_path``, ``figures_dir``), duplicate runs.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TOP_KEYS = ("name", "description", "seeds", "resources", "runs")
RUN_KEYS = ("notebook", "name", "parameters", "grid", "seeds", "after", "resources")
RESERVED = ("results_path", "figures_dir")  # the runner points these into the run folder
SEED = "seed"


class SpecError(ValueError):
    """A sweep spec that cannot be run as written."""


class _Any:
    """The default of a parameter whose literal could not be read (any value is accepted)."""

    def __repr__(self):
        return "<expression>"


ANY = _Any()


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a notebook and the parameters that the spec sets (no output paths)."""

    index: int
    entry: int                      # index of the spec entry it comes from
    name: str                       # the entry's name (for ``after``)
    notebook: Path
    parameters: dict
    after: tuple[int, ...] = ()     # indices of the runs that must finish first
    resources: dict = field(default_factory=dict)
    axes: tuple[str, ...] = ()      # the parameters that vary in its entry (grid axes, seed)

    @property
    def run_id(self) -> str:
        return run_id(self.notebook, self.parameters)


def run_id(notebook: str | os.PathLike, parameters: dict) -> str:
    """``<notebook stem>__<10 hex digits>``: a hash of the notebook's path and the parameters."""
    nb = Path(notebook)
    key = json.dumps({"notebook": display_path(nb), "parameters": parameters}, sort_keys=True, default=str)
    return f"{nb.stem}__{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def display_path(p: str | os.PathLike) -> str:
    """A path relative to the repository root when it lies inside it, else absolute."""
    p = Path(p).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(where: str, d: dict, allowed) -> None:
    for k in d:
        if k not in allowed:
            raise SpecError(f"{where}: unknown key {k!r}{_suggest(k, allowed)} (allowed: {', '.join(allowed)})")


def resolve_notebook(path, where: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise SpecError(f"{where}: 'notebook' must be a path to an .ipynb file, got {path!r}")
    p = Path(path).expanduser()
    p = p if p.is_absolute() else ROOT / p
    if p.suffix != ".ipynb":
        raise SpecError(f"{where}: notebook {str(path)!r} is not an .ipynb file")
    if not p.is_file():
        raise SpecError(f"{where}: notebook {str(path)!r} does not exist ({p})")
    return p.resolve()


_PARAM_CACHE: dict[tuple[str, int], dict] = {}


def _cell_assignments(source: str) -> dict | None:
    """``{name: default}`` of the top-level assignments in a cell (``None`` if it is not plain Python)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for t in targets:
            if isinstance(t, ast.Name):
                try:
                    out[t.id] = ast.literal_eval(node.value)
                except (ValueError, SyntaxError, TypeError):
                    out[t.id] = ANY
    return out


def notebook_parameters(nb: str | os.PathLike) -> dict:
    """``{name: default}`` of the notebook's ``parameters`` cell; a default that is not a plain literal
    is ``ANY``.  Raises ``SpecError`` when the notebook has no such cell.

    The cell is found as papermill finds it (the first cell tagged ``parameters``) and read with
    ``ast``; papermill's own ``inspect_notebook`` is used only for cells that are not plain Python,
    because it skips every line with two ``=`` (e.g. ``results_path = ""  # "" = a run folder``)."""
    nb = Path(nb)
    key = (str(nb), nb.stat().st_mtime_ns)
    if key not in _PARAM_CACHE:
        import papermill
        from papermill.iorw import load_notebook_node
        from papermill.utils import find_first_tagged_cell_index
        try:
            node = load_notebook_node(str(nb))
        except Exception as e:  # noqa: BLE001  (nbformat raises several kinds)
            raise SpecError(f"cannot read notebook {nb}: {e}") from None
        i = find_first_tagged_cell_index(node, "parameters")
        if i < 0:
            raise SpecError(f"notebook {nb} has no cell tagged 'parameters' (papermill needs one)")
        out = _cell_assignments(node.cells[i].source)
        if out is None:
            out = {}
            for name, info in papermill.inspect_notebook(str(nb)).items():
                try:
                    out[name] = ast.literal_eval(info["default"])
                except (ValueError, SyntaxError, TypeError):
                    out[name] = ANY
        _PARAM_CACHE[key] = out
    return _PARAM_CACHE[key]


def _type_name(v) -> str:
    """The type of ``v`` with its article: 'an int', 'a list', ..."""
    name = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list",
            dict: "dict"}.get(type(v), type(v).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


_KIND_OK = {
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}
_KIND_NAME = {"bool": "a bool", "int": "an int", "float": "an int or a float", "str": "a str", "list": "a list",
              "dict": "a dict"}
_DEFAULT_KIND = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list", dict: "dict"}


def parameter_spec(nb: str | os.PathLike) -> dict | None:
    """``{name: minilib.params.Param}`` of the notebook (its ``minilib.profiles.NOTEBOOKS`` entry, found
    by the notebook's stem, with the common parameters), or ``None`` for a notebook that has none."""
    from minilib.profiles import NOTEBOOKS
    entry = NOTEBOOKS.get(Path(nb).stem)
    if entry is None:
        return None
    from minilib.params import COMMON
    return {**COMMON, **entry[0]}


def check_value(where: str, name: str, value, default, param=None) -> None:
    """``value`` must be what the notebook accepts.  With the notebook's parameter spec (``param``, a
    ``minilib.params.Param``: the notebook's ``minilib.profiles`` entry), its kind, range, choices and
    items decide, whatever the default in the parameters cell (often ``None``: filled from the
    profile).  Without one, ``value`` must have the type of the default (an int is accepted for a
    float; a ``None`` or unreadable default accepts anything).  ``None`` is accepted everywhere: the
    notebook fills it from its profile."""
    if value is None:
        return
    if param is not None:
        kind = param.kind
        if kind in _KIND_OK and not _KIND_OK[kind](value):
            raise SpecError(f"{where}: parameter {name!r} = {value!r} is {_type_name(value)}; the notebook's "
                            f"parameter spec (minilib.profiles) says it must be {_KIND_NAME[kind]}"
                            + (f" ({param.help})" if param.help else ""))
        from minilib.params import ParameterError
        try:
            param.validate(name, value)
        except ParameterError as e:
            raise SpecError(f"{where}: {e}") from None
        return
    if default is None or default is ANY:
        return
    kind = _DEFAULT_KIND.get(type(default))
    if kind is not None and not _KIND_OK[kind](value):
        raise SpecError(f"{where}: parameter {name!r} = {value!r} is {_type_name(value)}; the notebook's "
                        f"default is {default!r}, so it must be {_KIND_NAME[kind]}")


def check_parameters(where: str, nb: Path, params: dict, allow_reserved: bool = False) -> None:
    defined = notebook_parameters(nb)
    spec = parameter_spec(nb)
    for name, value in params.items():
        if not isinstance(name, str):
            raise SpecError(f"{where}: parameter names must be strings, got {name!r}")
        if name in RESERVED and not allow_reserved:
            raise SpecError(f"{where}: parameter {name!r} is set by the runner (every run writes into its "
                            "own run folder); remove it from the spec")
        if name not in defined:
            raise SpecError(f"{where}: notebook {nb.name} has no parameter {name!r}{_suggest(name, defined)} "
                            f"(its parameters cell defines: {', '.join(defined)})")
        check_value(where, name, value, defined[name], (spec or {}).get(name))
        if name == "profile" and value is not None:
            from minilib.params import PROFILES
            if value not in PROFILES:
                raise SpecError(f"{where}: parameter 'profile' = {value!r}: must be one of {list(PROFILES)}")


def _seeds(where: str, seeds) -> list[int]:
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise SpecError(f"{where}: 'seeds' must hold integers, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}: 'seeds' has duplicates: {seeds}")
    return seeds


def _resources(where: str, res) -> dict:
    if res is None:
        return {}
    if not isinstance(res, dict):
        raise SpecError(f"{where}: 'resources' must be a mapping such as {{GPU: 1}}, got {res!r}")
    for k, v in res.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise SpecError(f"{where}: resource {k!r} = {v!r}: must be a positive number")
    return dict(res)


def load_spec(path: str | os.PathLike) -> dict:
    """Read a spec file (YAML) and check its shape; returns the mapping."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a sweep spec is a mapping with a 'runs' list")
    _check_keys(str(path), spec, TOP_KEYS)
    if not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise SpecError(f"{path}: 'runs' must be a non-empty list of entries (each with a 'notebook')")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SpecError(f"{path}: 'name' must be a plain folder name, got {name!r}")
    return spec


def expand(spec: dict, where: str = "spec") -> list[RunSpec]:
    """The runs of a (loaded) spec, validated against the notebooks, in spec order (grid points in
    order, seeds innermost)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise SpecError(f"{where}: a sweep spec needs a non-empty 'runs' list")
    _check_keys(where, spec, TOP_KEYS)
    top_seeds = _seeds(f"{where}: seeds", spec["seeds"]) if spec.get("seeds") is not None else None
    top_res = _resources(where, spec.get("resources"))
    runs: list[RunSpec] = []
    names: dict[str, list[int]] = {}
    seen: dict[str, int] = {}
    for e, entry in enumerate(spec["runs"]):
        w = f"{where}: run entry {e + 1}"
        if not isinstance(entry, dict):
            raise SpecError(f"{w}: each entry is a mapping with a 'notebook', got {entry!r}")
        _check_keys(w, entry, RUN_KEYS)
        if "notebook" not in entry:
            raise SpecError(f"{w}: missing 'notebook'")
        nb = resolve_notebook(entry["notebook"], w)
        w = f"{w} ({nb.name})"
        fixed = entry.get("parameters") or {}
        if not isinstance(fixed, dict):
            raise SpecError(f"{w}: 'parameters' must be a mapping, got {fixed!r}")
        grid = entry.get("grid", None)
        if grid is not None:
            if not isinstance(grid, dict) or not grid:
                raise SpecError(f"{w}: 'grid' is empty; give at least one parameter with a list of values "
                                "(or remove 'grid')")
            for k, vals in grid.items():
                if not isinstance(vals, list):
                    raise SpecError(f"{w}: grid values must be lists, got {k}: {vals!r}")
                if not vals:
                    raise SpecError(f"{w}: grid axis {k!r} is an empty list: the grid would have no runs")
                if k in fixed:
                    raise SpecError(f"{w}: {k!r} is both a fixed parameter and a grid axis")
        grid = dict(grid or {})
        seeds = entry.get("seeds", None)
        seeds = _seeds(f"{w}: seeds", seeds) if seeds is not None else top_seeds
        if seeds is not None:
            if SEED in grid or SEED in fixed:
                raise SpecError(f"{w}: 'seeds' and a {SEED!r} parameter/grid axis are both given; keep one")
            grid[SEED] = seeds
        check_parameters(w, nb, {**fixed, **{k: v[0] for k, v in grid.items()}})
        pspec = parameter_spec(nb) or {}
        for k, vals in grid.items():
            for v in vals[1:]:
                check_value(w, k, v, notebook_parameters(nb)[k], pspec.get(k))
        name = entry.get("name", nb.stem)
        if not isinstance(name, str) or not name:
            raise SpecError(f"{w}: 'name' must be a non-empty string")
        after = entry.get("after", [])
        after = [after] if isinstance(after, str) else after
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise SpecError(f"{w}: 'after' must be a name or a list of names of earlier entries")
        deps: list[int] = []
        for a in after:
            if a not in names:
                raise SpecError(f"{w}: 'after' names {a!r}, which is not an earlier entry"
                                f"{_suggest(a, names)} (earlier entries: {', '.join(names) or 'none'})")
            deps += names[a]
        res = {**top_res, **_resources(w, entry.get("resources"))}
        keys = list(grid)
        this: list[int] = []
        for values in itertools.product(*(grid[k] for k in keys)):
            params = {**fixed, **dict(zip(keys, values))}
            r = RunSpec(len(runs), e, name, nb, params, tuple(deps), res, tuple(keys))
            if r.run_id in seen:
                raise SpecError(f"{w}: run {params} of {nb.name} is already run {seen[r.run_id] + 1} of this "
                                "sweep (duplicate runs would share a folder)")
            seen[r.run_id] = r.index
            runs.append(r)
            this.append(r.index)
        names.setdefault(name, []).extend(this)
    return runs
