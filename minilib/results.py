"""Machine-readable results: every notebook writes one JSON file at its ``results_path``."""

from __future__ import annotations

import json
import math
import os
import re
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
    if type(o).__module__.startswith("torch") and hasattr(o, "tolist") and hasattr(o, "ndim"):  # torch tensor
        return _plain(o.detach().cpu().tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, Path):
        return str(o)
    return o


def write_results(path: str | os.PathLike, results: dict, parameters=None) -> Path:
    """Write ``results`` as JSON (numpy/torch/pandas values made plain), atomically.

    ``parameters``: the notebook's resolved parameters (``minilib.params.resolve``'s ``Parameters``,
    or a plain dict), recorded as ``results["parameters"]`` after ``"notebook"`` (a ``Parameters``
    leaves out where outputs go: ``Parameters.recorded``); ``results`` must not hold them as well."""
    if parameters is not None:
        if "parameters" in results:
            raise ValueError("write_results: the parameters are given twice (results['parameters'] and parameters=)")
        rec = parameters.recorded() if hasattr(parameters, "recorded") else dict(parameters)
        head = {k: results[k] for k in ("notebook",) if k in results}
        results = {**head, "parameters": rec, **{k: v for k, v in results.items() if k not in head}}
    text = json.dumps(_plain(results), indent=1)  # fails before anything is written
    return write_text(path, text)


class ResultsError(ValueError):
    """A results (or other JSON) file that cannot be read: truncated, not JSON, not UTF-8."""


_PARTIAL_NUMBER = re.compile(r"-?(\d+(\.\d*)?([eE][+-]?\d*)?)?")


def _cut_in_a_literal(text: str, pos: int) -> bool:
    """Whether the JSON error at ``pos`` is the file ending inside its last literal or number
    (``tr``, ``nul``, ``12.``, ``1e``, ``-``): a cut-off write, not malformed JSON."""
    body = text.rstrip()
    last = re.search(r'[^\s,:\[\]{}"]*$', body)
    token = last.group()
    if not token or pos < last.start():
        return False
    if any(word.startswith(token) and word != token for word in ("true", "false", "null")):
        return True
    if _PARTIAL_NUMBER.fullmatch(token):
        try:
            json.loads(token)  # a whole number here is not where it was cut
            return False
        except json.JSONDecodeError:
            return True
    return False


def read_json(path: str | os.PathLike, rerun: str = "rerun the notebook that wrote it"):
    """The JSON value in ``path``.  A file that is empty, truncated (it ends inside a value, as a write
    that was cut off does), not valid JSON or not UTF-8 raises ``ResultsError`` naming the file,
    what is wrong, and what to do (``rerun``); a missing file raises ``FileNotFoundError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ResultsError(f"{path} is not a JSON file: byte {e.start} (0x{data[e.start]:02x}) is not UTF-8 text; "
                           f"{rerun}") from None
    if not text.strip():
        raise ResultsError(f"{path} is empty (0 bytes of JSON{'' if not data else ' but whitespace'}): the write "
                           f"was cut off or never happened; {rerun}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string") or _cut_in_a_literal(text, e.pos):
            raise ResultsError(f"{path} is truncated: its JSON stops at byte {len(data)} in the middle of a value "
                               f"(line {e.lineno}, column {e.colno}: {e.msg}), as a write that was cut off leaves "
                               f"it; {rerun}") from None
        raise ResultsError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                           f"{rerun}") from None


def read_results(path: str | os.PathLike, notebook: str | None = None) -> dict:
    """A notebook's results JSON (``ResultsError`` naming the file when it is truncated or not JSON;
    ``notebook``: named in the advice to rerun it)."""
    rerun = f"rerun the {notebook} notebook to rewrite it" if notebook else "rerun the notebook that wrote it"
    res = read_json(path, rerun)
    if not isinstance(res, dict):
        raise ResultsError(f"{path} holds a JSON {type(res).__name__}, not the results object (a JSON object: "
                           f"{{\"notebook\": ..., ...}}) a notebook writes; {rerun}")
    return res
