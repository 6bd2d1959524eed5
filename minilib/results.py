"""Machine-readable results: every notebook writes one JSON file at its ``results_path``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from minilib.io import write_text


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if hasattr(o, "to_dict") and hasattr(o, "columns"):  # DataFrame -> records
        return _plain(o.to_dict(orient="records"))
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 1) == 0:  # 0-d torch tensor
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return o


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Write ``results`` as JSON (numpy/torch/pandas values made plain), atomically."""
    text = json.dumps(_plain(results), indent=1)  # fails before anything is written
    return write_text(path, text)


def read_results(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())
