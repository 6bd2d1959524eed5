"""Every notebook's parameter spec and profiles, by notebook name (``minilib.params``).

One module per study (``dense``, ``anatomy``, ``structured``, ``sparsegpt``, ``contextual``) holds the
specs (``SPEC``: what each parameter may hold) and the ``test`` / ``default`` / ``paper`` profile tables
of that study's notebooks; ``NOTEBOOKS`` merges them: ``name -> (SPEC, PROFILES)``.  A notebook's
check cell reads it::

    from minilib.params import resolve
    from minilib.profiles import NOTEBOOKS
    resolved = resolve("SparseGPT_one_shot", globals(), *NOTEBOOKS["SparseGPT_one_shot"])
    globals().update(resolved)     # and write_results(..., parameters=resolved) records them

The profiles import constants from ``minilib.studies`` (method lists, protocols); the studies import
nothing from here.  ``minilib.profiles.plan`` sizes a profile against the embedded data."""

from __future__ import annotations

from minilib.profiles import anatomy, contextual, dense, sparsegpt, structured

NOTEBOOKS: dict[str, tuple[dict, dict]] = {**dense.NOTEBOOKS, **anatomy.NOTEBOOKS, **structured.NOTEBOOKS,
                                           **sparsegpt.NOTEBOOKS, **contextual.NOTEBOOKS}


def notebook_params(name: str) -> tuple[dict, dict]:
    """``(SPEC, PROFILES)`` of notebook ``name``; a ``KeyError`` listing the known notebooks otherwise."""
    try:
        return NOTEBOOKS[name]
    except KeyError:
        raise KeyError(f"no parameter spec for notebook {name!r}; known notebooks: {sorted(NOTEBOOKS)}") from None
