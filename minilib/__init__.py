"""minilib: anatomy and pruning of transformer language models.

Base layer: ``assets``, ``models`` (adapters, loading, surgery, saving), ``data``, ``eval``, ``hooks``,
``device``, ``io``, ``determinism`` (the CPU kernel pins, set here before torch is imported, and
``numerics_record()`` for the results).  The toolkit: ``calib`` (accumulators and calibration passes), ``prune``
(scores -> masks -> apply, the SparseGPT solver, reports), ``train`` (fine-tuning, task heads).
The studies (``studies.dense``, ``studies.anatomy``, ``studies.structured``, ``studies.sparsegpt``,
``studies.contextual``) configure and run the toolkit; ``plotting`` makes every figure.
"""

__version__ = "0.2.0"

import sys as _sys

from minilib import determinism as _determinism  # imports no torch

_determinism.set_env_defaults()  # ATEN_CPU_CAPABILITY / MKL_CBWR, unless set (or MINILIB_NUMERICS=native)
if "torch" in _sys.modules:  # imported after torch: the pins count only if torch has run no operation yet
    _determinism.check_pins()
del _sys
