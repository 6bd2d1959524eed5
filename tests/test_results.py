"""Machine-readable results (minilib.results): JSON written atomically, numpy/torch/pandas values made
plain, NaN -> null and inf -> "inf"; read_results / read_json errors naming the file."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from minilib.results import ResultsError, read_json, read_results, write_results


def _strict(text):
    """Parse as strict JSON (RFC 8259): no NaN / Infinity tokens."""
    def bad(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=bad)


def _leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


def test_round_trip_of_plain_values(tmp_path):
    res = {"notebook": "dense", "ppl": 12.5, "n": 3, "ok": True, "none": None, "list": [1, 2.5, "a"],
           "nested": {"x": {"y": [None, False]}}, "tuple": (1, 2), 7: "int key"}
    path = write_results(tmp_path / "r.json", res)
    assert path == tmp_path / "r.json"
    want = {k: v for k, v in res.items() if k != 7}
    assert read_results(path) == {**want, "tuple": [1, 2], "7": "int key"}  # keys become strings
    assert _strict(path.read_text(encoding="utf-8"))["nested"] == {"x": {"y": [None, False]}}


def test_nan_and_inf_become_null_and_strings(tmp_path):
    res = {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "list": [1.0, float("nan")],
           "np_nan": np.float64("nan"), "np32_inf": np.float32("inf"), "arr": np.array([np.nan, -np.inf, 2.0])}
    path = write_results(tmp_path / "r.json", res)
    back = _strict(path.read_text(encoding="utf-8"))  # no NaN/Infinity tokens: valid JSON for any reader
    assert back == {"nan": None, "inf": "inf", "ninf": "-inf", "list": [1.0, None], "np_nan": None,
                    "np32_inf": "inf", "arr": [None, "-inf", 2.0]}


def test_numpy_torch_pandas_and_paths_are_made_plain(tmp_path):
    df = pd.DataFrame({"layer": [0, 1], "sparsity": [0.5, float("nan")]})
    res = {"i64": np.int64(7), "f32": np.float32(0.25), "b": np.bool_(True), "arr": np.arange(3),
           "arr2": np.eye(2, dtype=np.float32), "t0": torch.tensor(1.5), "ti": torch.tensor(4), "df": df,
           "path": Path("results") / "x.json", "np0d": np.array(3.0)}
    back = _strict(write_results(tmp_path / "r.json", res).read_text(encoding="utf-8"))
    assert back == {"i64": 7, "f32": 0.25, "b": True, "arr": [0, 1, 2], "arr2": [[1.0, 0.0], [0.0, 1.0]],
                    "t0": 1.5, "ti": 4, "df": [{"layer": 0, "sparsity": 0.5}, {"layer": 1, "sparsity": None}],
                    "path": str(Path("results") / "x.json"), "np0d": 3.0}
    assert type(back["i64"]) is int and type(back["t0"]) is float


def test_nan_and_inf_tensors_are_written_like_floats(tmp_path):
    path = write_results(tmp_path / "r.json", {"nan": torch.tensor(float("nan")), "inf": torch.tensor(float("inf"))})
    assert _strict(path.read_text(encoding="utf-8")) == {"nan": None, "inf": "inf"}


def test_a_1d_tensor_is_written_like_a_numpy_array(tmp_path):
    path = write_results(tmp_path / "r.json", {"t": torch.tensor([0.5, 0.25])})
    assert read_results(path) == {"t": [0.5, 0.25]}


def test_a_value_that_is_not_json_fails_before_anything_is_written(tmp_path):
    path = tmp_path / "r.json"
    write_results(path, {"notebook": "old"})
    before = path.read_bytes()
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_results(path, {"notebook": "new", "bad": object()})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        write_results(tmp_path / "never.json", {"bad": {1, 2}})
    assert not (tmp_path / "never.json").exists()


def test_the_write_is_atomic(tmp_path, monkeypatch):
    """A write cut off half-way leaves the old file whole and no temporary file behind."""
    path = tmp_path / "r.json"
    write_results(path, {"notebook": "old", "x": list(range(100))})
    before = path.read_bytes()
    real = Path.write_text

    def cut_off(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", cut_off)
    with pytest.raises(OSError, match="disk full"):
        write_results(path, {"notebook": "new", "x": list(range(1000))})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_results(path)["notebook"] == "old"
    assert _leftovers(tmp_path) == []


def test_the_replace_is_one_rename_of_a_complete_file(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "dir" / "r.json"  # parents are created
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((Path(src).parent, Path(dst), json.loads(Path(src).read_text(encoding="utf-8"))))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_results(path, {"a": 1})
    assert seen == [(path.parent, path, {"a": 1})]  # written beside the target, complete, then renamed
    assert read_results(path) == {"a": 1}


# --- reading ----------------------------------------------------------------------------------------

def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        read_results(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        read_results(tmp_path)


@pytest.mark.parametrize("text,match", [
    ("", r"is empty \(0 bytes of JSON\)"),
    ("  \n\t", "is empty .*but whitespace"),
    ('{"notebook": "dense", "ppl": [1, 2', "is truncated: its JSON stops at byte 34"),
    ('{"notebook": "den', "is truncated"),
    ('{"notebook": 12', "is truncated"),
    ('{"notebook": "dense"} trailing', r"is not valid JSON \(Extra data at line 1"),
    ("{'notebook': 1}", "is not valid JSON"),
    ('{"a": 1,}', "is not valid JSON"),
])
def test_bad_files_raise_an_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad results.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ResultsError, match=match) as e:
        read_results(path)
    assert str(path) in str(e.value) and "rerun the notebook that wrote it" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ResultsError, match=r"r\.json is not a JSON file: byte 7 \(0xff\) is not UTF-8"):
        read_results(path)


@pytest.mark.parametrize("text,kind", [("[1, 2]", "list"), ('"x"', "str"), ("3", "int"), ("null", "NoneType")])
def test_results_must_be_an_object(tmp_path, text, kind):
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ResultsError, match=rf"r\.json holds a JSON {kind}, not the results object"):
        read_results(path)
    assert read_json(path) == json.loads(text)  # any JSON value is fine for read_json


def test_the_advice_names_the_notebook(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ResultsError, match="rerun the sparsegpt notebook to rewrite it"):
        read_results(path, notebook="sparsegpt")
    with pytest.raises(ResultsError, match="; make it again$"):
        read_json(path, rerun="make it again")


@pytest.mark.parametrize("text", ['{"ok": tr', '{"x": nul', '{"ppl": 12.', '{"ppl": 1e', '{"delta": -'])
def test_a_file_cut_off_inside_a_literal_is_called_truncated(tmp_path, text):
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ResultsError, match="is truncated"):
        read_results(path)


def test_the_resolved_parameters_are_recorded_once_without_output_locations(tmp_path):
    from minilib.params import Parameters, resolve
    from minilib.profiles import NOTEBOOKS
    values = {"profile": "test", "results_path": str(tmp_path / "r.json"), "figures_dir": str(tmp_path / "f"),
              "device": "cpu"}
    resolved = resolve("dense_baselines", values, *NOTEBOOKS["dense_baselines"], verbose=False)
    assert isinstance(resolved, Parameters) and resolved.notebook == "dense_baselines" and isinstance(resolved, dict)
    path = write_results(tmp_path / "r.json", {"notebook": "dense_baselines", "metrics": {"ppl": 1.5}},
                         parameters=resolved)
    out = json.loads(path.read_text())
    assert list(out) == ["notebook", "parameters", "metrics"]
    rec = out["parameters"]
    assert "results_path" not in rec and "figures_dir" not in rec and "allow_fallback" not in rec
    assert rec["profile"] == "test" and rec["device"] == "cpu" and "model" in rec
    assert rec == json.loads(json.dumps({k: v for k, v in resolved.items()
                                         if k not in ("results_path", "figures_dir", "allow_fallback")}))
    plain = write_results(tmp_path / "p.json", {"notebook": "x"}, parameters={"a": 1, "results_path": "kept"})
    assert json.loads(plain.read_text())["parameters"] == {"a": 1, "results_path": "kept"}   # a dict: as given
    with pytest.raises(ValueError, match="given twice"):
        write_results(tmp_path / "t.json", {"parameters": {}}, parameters=resolved)
    assert not (tmp_path / "t.json").exists()
