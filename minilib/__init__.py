"""minilib: anatomy and pruning of transformer language models.

Base layer: ``assets``, ``models`` (adapters, loading, surgery, saving), ``data``, ``eval``, ``hooks``,
``device``, ``io``.  The toolkit: ``calib`` (accumulators and calibration passes), ``prune``
(scores -> masks -> apply, the SparseGPT solver, reports), ``train`` (fine-tuning, task heads).
The studies (``studies.dense``, ``studies.anatomy``, ``studies.structured``, ``studies.sparsegpt``,
``studies.contextual``) configure and run the toolkit; ``plotting`` makes every figure.
"""

__version__ = "0.2.0"
