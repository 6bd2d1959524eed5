"""The generated tables of README.md and docs/*.md: one module per study (``dense``, ``anatomy``,
``structured``, ``sparsegpt``, ``contextual``) and the benchmarks (``benchmarks``), each exposing
``TABLES``: ``name -> function(results dir) -> markdown``.  ``python -m tools.tables`` fills every
``<!-- table:NAME -->`` block from ``results/*.json``; nothing here computes a model.  The verdict
blocks decide their comparisons with ``minilib.stats.decide`` (one multiple-comparison family per
block)."""
