"""The method registry (``minilib.prune.methods``): every entry drives ``prune_model`` as its fields
say, a new method is one ``register`` call, and RIA scores as the paper defines it."""

import pytest
import torch

from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.params import ParameterError
from minilib.profiles.sparsegpt import SPEC
from minilib.prune import METHODS, Method, Option, get_method, prune_model, register, score_ria, score_wanda
from minilib.prune.methods import STATISTICS
from minilib.prune.oneshot import score_mask
from minilib.tables.sparsegpt import table_methods


def _calib(n=4, seqlen=32, seed=0):
    return torch.randint(0, 1000, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_every_entry_is_consistent_and_listed_in_the_docs_table():
    table = table_methods()
    for name, m in METHODS.items():
        assert m.name == name and m.statistic in STATISTICS
        assert m.solver == (m.score is None) and (not m.solver or m.statistic == "hessian")
        assert m.calibrated == (m.statistic != "none")
        assert f"| `{name}` ({m.label}) | `{m.statistic}`" in table
        assert m.resolve_options({}) == {k: o.default for k, o in m.options.items()}
    assert [m for m in METHODS] == ["magnitude", "wanda", "ria", "dsnot", "sparsegpt"]
    assert all(e.supports_nm for e in METHODS.values())  # DSnoT's refinement keeps N:M patterns
    # a refining method without an N:M variant refuses N:M patterns
    from minilib.prune.methods import Method
    from minilib.prune.scores import score_magnitude
    plain = Method("x", "x", "none", "-", "-", score=lambda w, s: score_magnitude(w), refine=lambda w, m, sc, st: m)
    assert not plain.supports_nm
    assert all(set(e.stage_options(e.resolve_options({}), st)) <= set(e.options) for e in METHODS.values()
               for st in ("score", "mask", "refine"))


def test_ria_score_is_the_papers_formula_element_by_element():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, generator=g)
    w[2] = 0.0                       # an all-zero row and column must not give NaN
    w[:, 4] = 0.0
    sq = torch.rand(7, generator=g) * 10
    got = score_ria(w, sq, a=0.5)
    for i in range(5):
        for j in range(7):
            col = sum(abs(float(w[k, j])) for k in range(5))
            row = sum(abs(float(w[i, k])) for k in range(7))
            rel = (abs(float(w[i, j])) / col if col else 0.0) + (abs(float(w[i, j])) / row if row else 0.0)
            assert float(got[i, j]) == pytest.approx(rel * float(sq[j]) ** 0.25, rel=1e-5)
    # a = 0: the activations drop out; RIA then differs from Wanda's ranking
    assert torch.allclose(score_ria(w, sq, a=0.0), score_ria(w, torch.ones(7), a=1.0))
    with pytest.raises(ValueError, match="input norms have shape"):
        score_ria(w, torch.ones(6))


def test_ria_compares_per_layer_by_default_and_per_row_on_request():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 16, generator=g) * torch.linspace(0.1, 3, 8)[:, None]  # rows of very different scales
    sq = torch.rand(16, generator=g)
    layer = score_mask("ria", w, sq, 0.5, None, "l")
    row = score_mask("ria", w, sq, 0.5, None, "l", {"compare": "row"})
    assert int(layer.sum()) == int(row.sum()) == 64
    assert (row.sum(1) == 8).all()              # exactly half of every row
    assert not (layer.sum(1) == 8).all()         # per layer: rows lose different counts
    s = score_ria(w, sq)
    assert s[layer].max() <= s[~layer].min()     # the lowest scores of the layer


def test_each_method_prunes_with_its_statistic_and_reports_its_options():
    calib = _calib()
    for name, m in METHODS.items():
        model = load("tiny-llama").model
        rep = prune_model(model, name, 0.5, calib=calib if m.calibrated else None)
        assert rep.method == name and rep.overall["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert rep.notes.get("options", {}) == m.resolve_options({})
    with pytest.raises(Exception, match="method 'ria' needs calibration windows"):
        prune_model(load("tiny-llama").model, "ria", 0.5)


def test_a_new_method_is_one_registered_entry(monkeypatch):
    """A criterion registered at run time prunes through the driver, with its own checked option,
    and the notebook's parameter check accepts it."""
    calls = []

    def score(w, sq, power):
        calls.append(power)
        return w.abs() ** power * sq.sqrt()[None, :]

    def check(k, v):
        if not v > 0:
            raise ValueError(f"{k} must be > 0, got {v!r}")
        return float(v)

    monkeypatch.setitem(METHODS, "powanda", None)  # removed again after the test
    register(Method("powanda", "PoWanda", "input_sq_norms", "a test", "|W|^p * ||X||", score=score, compare="row",
                    options={"power": Option(1.0, check, "the power")}), replace=True)
    model = load("tiny-llama").model
    w0 = {k: weight_oi(m).clone() for k, m in model.named_modules() if k.endswith("mlp.down_proj")}
    rep = prune_model(model, "powanda", 0.5, calib=_calib(), options={"power": 1.0})
    assert rep.notes["options"] == {"power": 1.0} and calls and set(calls) == {1.0}
    # power 1 is Wanda: the same masks
    wanda = load("tiny-llama").model
    prune_model(wanda, "wanda", 0.5, calib=_calib())
    for k in w0:
        assert torch.equal(weight_oi(dict(model.named_modules())[k]) == 0, weight_oi(dict(wanda.named_modules())[k]) == 0)
    with pytest.raises(ValueError, match="method 'powanda': power must be > 0"):
        prune_model(load("tiny-llama").model, "powanda", 0.5, calib=_calib(), options={"power": 0})
    SPEC["methods"].validate("methods", ["powanda", "wanda"])
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("wanda"))


def test_notebook_spec_refuses_a_method_the_registry_does_not_know():
    with pytest.raises(ParameterError, match=r"parameter 'methods' = 'owl': must be one of \['magnitude', 'wanda', 'ria'"):
        SPEC["methods"].validate("methods", ["wanda", "owl"])
    with pytest.raises(ParameterError, match="parameter 'method' = 'obs'"):
        SPEC["method"].validate("method", "obs")
    assert SPEC["method"].validate("method", "ria") == "ria"


def test_wanda_entry_is_score_wanda():
    w, sq = torch.randn(4, 8), torch.rand(8)
    assert torch.equal(METHODS["wanda"].score(w, sq), score_wanda(w, sq))
