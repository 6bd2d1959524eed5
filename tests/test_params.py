"""Notebook parameters: profiles fill what is None, explicit values win, bad values fail at once
with the parameter's name, structured values from `papermill -p` are parsed, outputs default to a
fresh run folder (never results/ or figures/)."""

import warnings

import pytest

from minilib.params import (PROFILES, Float, Fraction, HubFallbackWarning, HubOr, HubUnreachableError, Int, List,
                            ParameterError, Str, resolve)
from minilib.profiles import NOTEBOOKS as ALL
SPEC = {"n": Int(1), "frac": Fraction(), "xs": List(Float(0.0), min_len=1), "name": Str(("a", "b"))}
PROF = {"test": {"n": 2, "xs": [0.1]}, "default": {"n": 8, "xs": [0.5, 0.7]}, "paper": {"n": 128, "xs": [0.5]}}


def _parameters_cell(notebook: str) -> dict:
    """The values of a notebook's own parameters cell (its jupytext twin, executed)."""
    from pathlib import Path
    src = (Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.py").read_text()
    ns: dict = {}
    exec(src.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0], ns)
    return ns


def test_every_notebook_has_three_profiles_that_resolve(tmp_path, monkeypatch):
    import minilib.params as P
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: False)  # offline: hub models fall back
    monkeypatch.setenv("MINILIB_ALLOW_FALLBACK", "1")  # ... because the fallback is allowed
    for name, (spec, profiles) in ALL.items():
        assert set(profiles) == set(PROFILES), name
        ns = _parameters_cell(name)
        assert set(k for k in ns if not k.startswith("__")) <= set(spec) | {"profile", "device", "results_path",
                                                                           "figures_dir"}, name
        for prof in PROFILES:
            ns2 = {**ns, "profile": prof, "results_path": str(tmp_path / name / "r.json")}
            hub = any(isinstance(v, HubOr) for v in profiles[prof].values())
            assert hub == (prof == "paper"), (name, prof)  # test and default run embedded models only
            with warnings.catch_warnings():
                warnings.simplefilter("error" if not hub else "ignore", HubFallbackWarning)
                out = resolve(name, ns2, spec, profiles, verbose=False)
            missing = [k for k, v in ns.items() if v is None and out.get(k) is None and not k.startswith("__")]
            assert not missing, (name, prof, missing)  # every None gets a value from the profile


def test_profile_fills_none_and_explicit_values_win(tmp_path):
    out = resolve("nb", {"profile": "test", "n": None, "frac": 0.2, "xs": None, "name": "a",
                         "results_path": str(tmp_path / "r.json")}, SPEC, PROF, verbose=False)
    assert out["n"] == 2 and out["xs"] == [0.1] and out["frac"] == 0.2
    out = resolve("nb", {"profile": "paper", "n": 5, "frac": 0.2, "xs": None, "name": "a",
                         "results_path": str(tmp_path / "r.json")}, SPEC, PROF, verbose=False)
    assert out["n"] == 5 and out["xs"] == [0.5]


@pytest.mark.parametrize("bad,match", [
    ({"n": 0}, r"'n' = 0: must be >= 1"),
    ({"n": "abc"}, "'n' must be an integer"),
    ({"n": 2.5}, "'n' must be an integer"),
    ({"frac": 1.0}, r"'frac' = 1.0: must be < 1.0"),
    ({"frac": "abc"}, "'frac' must be a number"),
    ({"xs": []}, "at least 1 entry"),
    ({"xs": [0.5, -1]}, r"'xs\[1\]' = -1.0: must be >= 0.0"),
    ({"xs": "[0.5,"}, "could not parse"),
    ({"name": "c"}, "one of"),
    ({"profile": "fast"}, "one of"),
])
def test_bad_values_name_the_parameter(bad, match, tmp_path):
    vals = {"profile": "default", "n": None, "frac": 0.1, "xs": None, "name": "a",
            "results_path": str(tmp_path / "r.json"), **bad}
    with pytest.raises(ParameterError, match=match):
        resolve("nb", vals, SPEC, PROF, verbose=False)


def test_papermill_strings_are_parsed(tmp_path):
    out = resolve("nb", {"profile": "default", "n": "3", "frac": "0.25", "xs": "[0.1, 0.2]", "name": "b",
                         "results_path": str(tmp_path / "r.json")}, SPEC, PROF, verbose=False)
    assert out["n"] == 3 and out["frac"] == 0.25 and out["xs"] == [0.1, 0.2]


def test_outputs_default_to_a_fresh_run_folder(monkeypatch, tmp_path):
    import minilib.params as P
    monkeypatch.setattr(P, "ROOT", tmp_path)
    (tmp_path / "notebooks").mkdir()
    a = resolve("nb", {"profile": "test", "n": None, "frac": 0.1, "xs": None, "name": "a", "results_path": "",
                       "figures_dir": ""}, SPEC, PROF, verbose=False)
    b = resolve("nb", {"profile": "test", "n": None, "frac": 0.1, "xs": None, "name": "a", "results_path": "",
                       "figures_dir": ""}, SPEC, PROF, verbose=False)
    assert a["results_path"] != b["results_path"]
    for out in (a, b):
        assert out["results_path"].startswith(str(tmp_path / "runs" / "nb"))
        assert out["figures_dir"].startswith(str(tmp_path / "runs" / "nb"))


def test_unwritable_results_path_and_bad_device(tmp_path):
    vals = {"profile": "test", "n": None, "frac": 0.1, "xs": None, "name": "a"}
    with pytest.raises(ParameterError, match="is a folder"):
        resolve("nb", {**vals, "results_path": str(tmp_path)}, SPEC, PROF, verbose=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        resolve("nb", {**vals, "results_path": str(tmp_path / "r.json"), "figures_dir": str(tmp_path / "file")},
                SPEC, PROF, verbose=False)
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="device.*no CUDA GPU"):
            resolve("nb", {**vals, "results_path": str(tmp_path / "r.json"), "device": "cuda"}, SPEC, PROF,
                    verbose=False)


def test_hub_models_need_the_hub_or_an_explicit_fallback(monkeypatch, tmp_path, capsys):
    import minilib.params as P
    monkeypatch.delenv("MINILIB_ALLOW_FALLBACK", raising=False)
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: False)
    spec = {"model": Str()}
    prof = {"paper": {"model": HubOr("gpt2", "smollm2-135m")}}
    vals = {"profile": "paper", "model": None, "results_path": str(tmp_path / "r.json")}
    # unreachable, no opt-in: an error naming the parameter, both models and the two ways to opt in
    with pytest.raises(HubUnreachableError, match=r"parameter 'model': the 'paper' profile runs the hub model 'gpt2'.*"
                       r"not reachable.*'smollm2-135m'.*MINILIB_ALLOW_FALLBACK=1.*allow_fallback True") as e:
        resolve("nb", vals, spec, prof, verbose=False)
    assert (e.value.name, e.value.hub, e.value.offline) == ("model", "gpt2", "smollm2-135m")
    assert isinstance(e.value, ParameterError)
    # opt in by environment, by the notebook parameter or by the argument: one loud line, the embedded model
    for env, extra, kw in (("1", {}, {}), ("", {"allow_fallback": True}, {}), ("", {}, {"allow_fallback": True})):
        monkeypatch.setenv("MINILIB_ALLOW_FALLBACK", env)
        with pytest.warns(HubFallbackWarning) as rec:
            out = resolve("nb", {**vals, **extra}, spec, prof, verbose=False, **kw)
        assert out["model"] == "smollm2-135m"
        msg = str(rec[0].message)
        assert "\n" not in msg and "'smollm2-135m' INSTEAD OF 'gpt2'" in msg and "paper-sized" in msg
    # an explicit False wins over the environment
    monkeypatch.setenv("MINILIB_ALLOW_FALLBACK", "1")
    with pytest.raises(HubUnreachableError):
        resolve("nb", {**vals, "allow_fallback": "false"}, spec, prof, verbose=False)
    # reachable: the hub model, no warning, no probe when told (the planner)
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("nb", vals, spec, prof, verbose=False)["model"] == "gpt2"
        monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: pytest.fail("probed"))
        assert resolve("nb", vals, spec, prof, verbose=False, hub=True)["model"] == "gpt2"
    with pytest.raises(HubUnreachableError):
        resolve("nb", vals, spec, prof, verbose=False, hub=False, allow_fallback=False)
    # an explicit model is never replaced, and profiles without hub models never probe
    assert resolve("nb", {**vals, "model": "tiny-gpt2"}, spec, prof, verbose=False)["model"] == "tiny-gpt2"


def test_paper_profiles_fail_offline_without_the_opt_in(monkeypatch, tmp_path):
    import minilib.params as P
    monkeypatch.delenv("MINILIB_ALLOW_FALLBACK", raising=False)
    monkeypatch.setattr(P, "hub_reachable", lambda timeout=3.0: False)
    for name, (spec, profiles) in ALL.items():
        with pytest.raises(HubUnreachableError, match=f"'{profiles['paper']['model'].hub}'"):
            resolve(name, {"profile": "paper", "model": None, "results_path": str(tmp_path / "r.json")}, spec,
                    profiles, verbose=False)


def test_hub_probe_is_bounded_and_respects_hf_hub_offline(monkeypatch):
    import socket
    import time

    import minilib.params as P
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert P.hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(P, "_HUB_PROBE", {})
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))  # a hanging name lookup
    t = time.perf_counter()
    assert P.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - t < 2
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed twice"))
    assert P.hub_reachable(timeout=0.2) is False  # the answer is kept: said at once, no retries


def test_notebook_params_names_the_known_notebooks():
    from minilib.profiles import NOTEBOOKS, notebook_params
    assert notebook_params("SparseGPT_one_shot") is NOTEBOOKS["SparseGPT_one_shot"]
    assert len(NOTEBOOKS) == 9
    with pytest.raises(KeyError, match="no parameter spec for notebook 'SparseGPT'.*dense_baselines"):
        notebook_params("SparseGPT")


def test_studies_do_not_import_the_profiles():
    import ast
    from pathlib import Path
    for f in (Path(__file__).resolve().parents[1] / "minilib" / "studies").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("minilib.profiles") for n in names), f.name


def test_a_classification_file_is_checked_with_the_parameters(tmp_path, monkeypatch):
    """A dataset path that does not exist (or is not .jsonl) fails the parameter check, naming the
    parameter, in every notebook that takes a task; an existing .jsonl and the embedded sets pass."""
    from minilib.profiles import NOTEBOOKS
    monkeypatch.chdir(tmp_path)
    ok = tmp_path / "mine.jsonl"
    ok.write_text('{"text": "a", "label": 0}\n')
    (tmp_path / "mine.csv").write_text("text,label\na,0\n")
    with_task = [nb for nb, (spec, _) in NOTEBOOKS.items() if "dataset" in spec]
    assert len(with_task) == 6  # the two anatomy and four pruning notebooks
    for nb in with_task:
        spec, profiles = NOTEBOOKS[nb]
        base = {k: v for k, v in _parameters_cell(nb).items() if not k.startswith("__")}
        base.update(profile="test", results_path=str(tmp_path / f"{nb}.json"))
        for good in ("sarcasm", "sst2", str(ok), "mine.jsonl"):
            assert resolve(nb, {**base, "dataset": good}, spec, profiles, verbose=False)["dataset"] == good
        for bad, match in (("missing.jsonl", r"'dataset' = 'missing.jsonl': the file .*missing.jsonl does not exist"),
                           ("mine.csv", "must be JSON lines with the suffix .jsonl"),
                           ("imdb", "not an embedded set nor a file")):
            with pytest.raises(ParameterError, match=match):
                resolve(nb, {**base, "dataset": bad}, spec, profiles, verbose=False)


@pytest.mark.parametrize("writes", [False, True])
def test_a_run_that_wrote_nothing_leaves_no_run_folder(writes, tmp_path):
    """The fresh run folder of a notebook that fails before writing anything is gone when its kernel
    exits; a folder with anything in it stays."""
    import subprocess
    import sys
    code = (f"import pathlib, minilib.params as P\nP.ROOT = pathlib.Path({str(tmp_path)!r})\n"
            "(P.ROOT / 'notebooks').mkdir()\nd = P.run_dir('nb', 'test')\nprint(d)\n"
            + ("(d / 'results.json').write_text('{}')\n" if writes else "")
            + "raise SystemExit('the next cell failed')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "the next cell failed" in r.stderr
    folder = tmp_path / r.stdout.strip().split("\n")[-1]
    assert folder.parent == tmp_path / "runs" / "nb"
    assert folder.is_dir() == writes
    assert (tmp_path / "runs").is_dir() == writes  # and the parents it created, when empty


def test_parameters_that_contradict_each_other_stop_resolve(tmp_path):
    """The spec's relation checks (``Spec.checks``): the SparseGPT notebook's detailed seed and method
    must be among those compared, each OWL sparsity among the uniform ones and each OWL method among
    ``methods``; the error names the parameter, and no run folder is made."""
    from minilib.params import ROOT, Spec, check_relations
    from minilib.profiles import NOTEBOOKS
    nb = "SparseGPT_one_shot"
    spec, profiles = NOTEBOOKS[nb]
    assert isinstance(spec, Spec) and spec.checks
    base = {k: v for k, v in _parameters_cell(nb).items() if not k.startswith("__")}
    base.update(profile="default", results_path="")
    before = set((ROOT / "runs").glob(f"{nb}/*"))
    for bad, match in (({"owl_sparsities": [0.8]}, r"'owl_sparsities': 0.8 is not one of the unstructured sparsities "
                                                  r"compared \(\[0.5, 0.6, 0.7\]"),
                       ({"seed": 7}, r"'seed' = 7 must be one of calib_seeds = \[0, 1, 2\]"),
                       ({"method": "ria"}, r"'method' = 'ria' must be one of methods"),
                       ({"methods": ["magnitude", "wanda"], "method": "wanda"},
                        r"'owl_methods': \['sparsegpt'\] not in methods")):
        with pytest.raises(ParameterError, match=match):
            resolve(nb, {**base, **bad}, spec, profiles, verbose=False)
    assert set((ROOT / "runs").glob(f"{nb}/*")) == before
    # consistent values pass, an OWL sparsity equal to the detailed one too; a plain dict has no relations
    ok = resolve(nb, {**base, "results_path": str(tmp_path / "r.json"), "owl_sparsities": [0.5, 0.7],
                      "methods": ["magnitude", "wanda"], "method": "wanda", "owl_methods": ["wanda"]},
                 spec, profiles, verbose=False)
    assert ok["owl_sparsities"] == [0.5, 0.7]
    check_relations(dict(spec), {})
