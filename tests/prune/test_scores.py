"""Importance scores (minilib.prune.scores) against independent computations written here.

* weights: magnitude, Wanda (|W_ij| * ||X_j|| by a hand loop), OBS (the SparseGPT saliency, checked
  against the OBS definition: the least loss increase of removing one weight while the later columns
  compensate, solved here as a least-squares problem);
* FFN neurons: L2 norm and max-product against a hand loop over each family's own HF modules (the
  Conv1D orientation of GPT-2 written out by hand), random / shared random, anatomy and L1 scores.
"""
import copy

import numpy as np
import pytest
import torch

from minilib.models import TINY, remove_ffn_neurons, tiny_model
from minilib.prune.scores import (ANATOMY_KINDS, L1_CRITERIA, score_magnitude, score_neurons_anatomy,
                                  score_neurons_l1, score_neurons_maxprod, score_neurons_norm, score_neurons_random,
                                  score_neurons_shared_random, score_obs, score_wanda)

_MODELS: dict = {}


def _model(name):
    """The tiny random model, loaded once per file (the scores must not change it: see the test)."""
    if name not in _MODELS:
        _MODELS[name] = tiny_model(name)[0]
    return _MODELS[name]


def _hand_ffns(name, model):
    """Per block ``(width, neuron)``, ``neuron(i) -> [up row, (gate row,) down column]`` of neuron ``i``,
    read straight from the HF modules (not through the family adapter)."""
    def w(m):
        return m.weight.detach()
    if name == "tiny-gpt2":  # Conv1D stores [in, out]: neuron i is column i of c_fc, row i of c_proj
        return [(w(b.mlp.c_fc).shape[1], lambda i, b=b: [w(b.mlp.c_fc)[:, i], w(b.mlp.c_proj)[i, :]])
                for b in model.transformer.h]
    if name == "tiny-bert":
        return [(w(b.intermediate.dense).shape[0],
                 lambda i, b=b: [w(b.intermediate.dense)[i, :], w(b.output.dense)[:, i]]) for b in model.encoder.layer]
    if name == "tiny-opt":
        return [(w(b.fc1).shape[0], lambda i, b=b: [w(b.fc1)[i, :], w(b.fc2)[:, i]])
                for b in model.model.decoder.layers]
    if name == "tiny-phi":
        return [(w(b.mlp.fc1).shape[0], lambda i, b=b: [w(b.mlp.fc1)[i, :], w(b.mlp.fc2)[:, i]])
                for b in model.model.layers]
    if name == "tiny-phi3":  # the fused gate_up_proj in its stock layout (the state dict): gate rows, then up rows
        sd = model.state_dict()
        out = []
        for l in range(len(model.model.layers)):
            gu, down = sd[f"model.layers.{l}.mlp.gate_up_proj.weight"], sd[f"model.layers.{l}.mlp.down_proj.weight"]
            f = gu.shape[0] // 2
            out.append((f, lambda i, gu=gu, down=down, f=f: [gu[f + i, :], gu[i, :], down[:, i]]))
        return out
    assert name in ("tiny-llama", "tiny-gemma3", "tiny-qwen2", "tiny-qwen3", "tiny-mistral", "tiny-gemma2")
    return [(w(b.mlp.up_proj).shape[0],
             lambda i, b=b: [w(b.mlp.up_proj)[i, :], w(b.mlp.gate_proj)[i, :], w(b.mlp.down_proj)[:, i]])
            for b in model.model.layers]


# --- magnitude and Wanda ------------------------------------------------------------------------

def test_magnitude_is_abs_in_fp32_and_leaves_the_weight():
    w = torch.tensor([[-2.0, 0.5, 0.0], [3.0, -0.25, 1.0]], dtype=torch.bfloat16)
    before = w.clone()
    s = score_magnitude(w)
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([[2.0, 0.5, 0.0], [3.0, 0.25, 1.0]]))
    assert torch.equal(w, before)


def test_wanda_equals_abs_weight_times_input_column_norm_by_hand():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, generator=g)
    x = torch.randn(7, 4, generator=g) * torch.tensor([0.1, 1.0, 5.0, 0.0])  # column 3: a dead input
    sq = (x * x).sum(0)
    s = score_wanda(w, sq)
    want = torch.empty(3, 4)
    for i in range(3):
        for j in range(4):
            want[i, j] = abs(float(w[i, j])) * sum(float(x[t, j]) ** 2 for t in range(7)) ** 0.5
    torch.testing.assert_close(s, want, rtol=1e-5, atol=1e-7)
    assert (s[:, 3] == 0).all()  # a dead input column scores 0: pruned first


def test_wanda_reorders_magnitude_by_the_input_norms():
    w = torch.tensor([[1.0, 2.0]])
    assert score_magnitude(w).argmin() == 0
    assert score_wanda(w, torch.tensor([100.0, 1.0])).argmin() == 1  # 1*10 > 2*1


@pytest.mark.parametrize("shape", [(3,), (5, 1), (1, 4), ()])
def test_wanda_refuses_norms_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"input norms have shape .*expected \(4,\)"):
        score_wanda(torch.ones(2, 4), torch.ones(shape))


# --- OBS (SparseGPT) ----------------------------------------------------------------------------

def _hessian(cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(50, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g,
                                                                              dtype=torch.float64)
    return 2 * x.T @ x / 50 + 0.01 * torch.eye(cols, dtype=torch.float64)


def test_obs_is_w_squared_over_the_squared_cholesky_diagonal():
    g = torch.Generator().manual_seed(2)
    w, d = torch.randn(4, 6, generator=g), torch.rand(6, generator=g) + 0.5
    s = score_obs(w, d)
    assert s.shape == w.shape and s.dtype == torch.float32
    for i in range(4):
        for j in range(6):
            assert float(s[i, j]) == pytest.approx(float(w[i, j]) ** 2 / float(d[j]) ** 2, rel=1e-6)


def test_obs_is_the_optimal_brain_surgeon_saliency_of_the_sequential_solver():
    """With ``d = diag(chol(H^-1))`` (upper), as the solver passes it, ``w_j**2 / d_j**2`` is the OBS
    loss increase ``w_j**2 / [H_F^-1]_jj`` of removing ``w_j`` while the columns not yet processed
    (F = j..n) compensate: here the least loss ``dw^T H dw`` with ``dw_j = -w_j``, solved directly."""
    cols = 8
    H = _hessian(cols)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, cols, generator=g, dtype=torch.float64)
    s = score_obs(w.float(), torch.diag(U).float())
    for j in range(cols):
        A = H[j:, j:]  # columns j.. are still free; the earlier ones are already fixed
        for r in range(3):
            wj = w[r, j]
            if j + 1 < cols:  # the best update of the later columns: A11 z = -A10 * dw_j
                z = torch.linalg.solve(A[1:, 1:], -A[1:, 0] * (-wj))
                dw = torch.cat([(-wj).reshape(1), z])
            else:
                dw = (-wj).reshape(1)
            loss = float(dw @ A @ dw)
            assert float(s[r, j]) == pytest.approx(loss, rel=1e-4), (r, j)
    # the first column sees the whole inverse Hessian: the textbook OBS saliency w^2 / [H^-1]_00
    torch.testing.assert_close(s[:, 0].double(), w[:, 0] ** 2 / torch.linalg.inv(H)[0, 0], rtol=1e-5, atol=0)


def test_obs_agrees_with_the_reference_sparsegpt_score():
    """The reference code (``tmp = W1 ** 2 / torch.diag(Hinv1).reshape(1, -1) ** 2``) on the same factor."""
    H = _hessian(6, seed=4)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    w = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(score_obs(w, torch.diag(Hinv)), w ** 2 / torch.diag(Hinv).reshape(1, -1) ** 2)


@pytest.mark.parametrize("hinv_shape", [(1,), (4, 4)])
def test_obs_refuses_a_diagonal_of_the_wrong_shape(hinv_shape):
    with pytest.raises(ValueError, match="hinv_diag"):
        score_obs(torch.ones(4, 4), torch.ones(hinv_shape))


# --- FFN neurons: norm and max-product against hand loops -------------------------------------

@pytest.mark.parametrize("name", TINY)
def test_neuron_norm_by_hand(name):
    model = _model(name)
    scores = score_neurons_norm(model)
    hand = _hand_ffns(name, model)
    assert len(scores) == len(hand) == 2
    for s, (width, neuron) in zip(scores, hand):
        assert s.shape == (width,) == (128,) and s.device.type == "cpu"
        want = torch.tensor([sum(float(v.double().pow(2).sum()) for v in neuron(i)) ** 0.5 for i in range(width)])
        torch.testing.assert_close(s, want.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", TINY)
def test_neuron_maxprod_by_hand(name):
    model = _model(name)
    scores = score_neurons_maxprod(model)
    hand = _hand_ffns(name, model)
    assert len(scores) == len(hand)
    for s, (width, neuron) in zip(scores, hand):
        assert s.shape == (width,)
        want = torch.tensor([float(np.prod([float(v.abs().max()) for v in neuron(i)])) for i in range(width)])
        torch.testing.assert_close(s, want.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_maxprod_keeps_a_super_weight_neuron_the_norm_does_not_single_out(name):
    """Neuron 7 owns one outsized weight (0.4, eight times every other weight) and little else: it tops the
    max-product score while its L2 norm stays under that of the neurons with many moderate weights."""
    model = copy.deepcopy(_model(name))
    width, neuron = _hand_ffns(name, model)[0]
    with torch.no_grad():
        for i in range(width):
            for v in neuron(i):
                v.copy_(torch.full_like(v, 0.05))         # every neuron: many moderate weights
        vecs = neuron(7)
        for v in vecs:
            v.zero_()
        for v in vecs[:-1]:
            v[0] = 0.05                                  # the up (and gate) rows: one ordinary weight
        vecs[-1][3] = 0.4                                # the down column: one super weight
    maxprod, norm = score_neurons_maxprod(model)[0], score_neurons_norm(model)[0]
    assert int(maxprod.argmax()) == 7
    assert float(norm[7]) < float(norm.median())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-phi3"])
def test_gated_neuron_scores_include_the_gate(name):
    model = copy.deepcopy(_model(name))
    mlp = model.model.layers[1].mlp
    with torch.no_grad():  # Phi-3: row 5 of the fused gate_up_proj is neuron 5's gate (its up is row 128 + 5)
        (mlp.gate_up_proj.gate if name == "tiny-phi3" else mlp.gate_proj).weight[5].zero_()
    assert float(score_neurons_maxprod(model)[1][5]) == 0.0
    gu = model.state_dict()["model.layers.1.mlp.gate_up_proj.weight"] if name == "tiny-phi3" else None
    up = gu[128 + 5] if gu is not None else mlp.up_proj.weight.detach()[5]
    down = mlp.down_proj.weight.detach()[:, 5]
    want = float((up.double().pow(2).sum() + down.double().pow(2).sum()).sqrt())
    assert float(score_neurons_norm(model)[1][5]) == pytest.approx(want, rel=1e-5)


def test_neuron_scores_follow_a_pruned_width():
    model = copy.deepcopy(_model("tiny-llama"))
    keep = torch.arange(0, 128, 2)
    full = score_neurons_norm(model)[0]
    remove_ffn_neurons(model, 0, keep)
    for score in (score_neurons_norm, score_neurons_maxprod, score_neurons_random):
        assert [s.numel() for s in score(model)] == [64, 128]
    torch.testing.assert_close(score_neurons_norm(model)[0], full[keep])  # the kept neurons keep their scores
    with pytest.raises(ValueError, match="one FFN width in every block, got \\[64, 128\\]"):
        score_neurons_shared_random(model)


# --- random scores ------------------------------------------------------------------------------

def test_random_scores_are_seeded_and_independent_per_layer():
    model = _model("tiny-gpt2")
    a, b, c = score_neurons_random(model, 0), score_neurons_random(model, 0), score_neurons_random(model, 1)
    assert len(a) == 2 and all(s.shape == (128,) for s in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], a[1])  # each layer its own draw
    assert all(((s >= 0) & (s < 1)).all() for s in a)
    # different layers select different neurons (the point of the per-layer draw)
    assert set(a[0].argsort()[:20].tolist()) != set(a[1].argsort()[:20].tolist())


def test_shared_random_scores_are_one_vector_in_every_layer():
    model = _model("tiny-opt")
    s = score_neurons_shared_random(model, 7)
    assert len(s) == 2 and torch.equal(s[0], s[1]) and s[0].shape == (128,)
    assert all(torch.equal(x, y) for x, y in zip(s, score_neurons_shared_random(model, 7)))
    assert not torch.equal(s[0], score_neurons_shared_random(model, 8)[0])
    s[0][0] = 99.0  # copies, not one tensor shared by reference
    assert float(s[1][0]) != 99.0


# --- anatomy ------------------------------------------------------------------------------------

def _anatomy(model, layers=2, width=128, seed=0):
    from minilib.studies.anatomy import NEURON_ARRAYS, Anatomy, model_signature
    rng = np.random.default_rng(seed)
    arrays = {k: rng.standard_normal((layers, width)) for k in NEURON_ARRAYS}
    return Anatomy(arrays, {"model": "tiny", "signature": model_signature(model)})


@pytest.mark.parametrize("kind", ANATOMY_KINDS)
def test_anatomy_scores_are_the_anatomy_arrays(kind):
    model = _model("tiny-llama")
    an = _anatomy(model)
    s = score_neurons_anatomy(model, an, kind)
    assert len(s) == 2
    for l in range(2):
        assert s[l].dtype == torch.float32
        assert np.allclose(s[l].numpy(), an[f"neuron_{kind}"][l].astype(np.float32))
    if kind == "abs_proj":  # the default
        assert all(torch.equal(x, y) for x, y in zip(s, score_neurons_anatomy(model, an)))


def test_anatomy_scores_refuse_an_unknown_kind_and_another_model():
    from minilib.studies.anatomy import AnatomyMismatchError
    model = _model("tiny-llama")
    an = _anatomy(model)
    with pytest.raises(ValueError, match=r"unknown anatomy score 'abs'.*abs_proj"):
        score_neurons_anatomy(model, an, "abs")
    with pytest.raises(AnatomyMismatchError, match="family"):
        score_neurons_anatomy(_model("tiny-gpt2"), an)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(2)  # same architecture, other weights
    with pytest.raises(AnatomyMismatchError, match="ffn_hash"):
        score_neurons_anatomy(other, an)


def test_anatomy_scores_refuse_arrays_of_another_width():
    model = _model("tiny-llama")
    an = _anatomy(model, width=100)  # the signature says 128 neurons, the arrays hold 100
    with pytest.raises(ValueError):
        score_neurons_anatomy(model, an)


# --- L1 (Mini-GPTs) -----------------------------------------------------------------------------

def _l1_stats(name, seed=0, width=128, layers=2):
    from minilib.calib.l1 import L1Stats
    g = torch.Generator().manual_seed(seed)
    parts = {"tiny-llama": ["mlp.up_proj", "mlp.gate_proj"], "tiny-gpt2": ["mlp.c_fc"]}[name]
    linear = {f"{i}.{p}": torch.rand(width, generator=g) for i in range(layers) for p in parts}
    linear["0.self_attn.q_proj" if name == "tiny-llama" else "0.attn.c_attn"] = torch.zeros(64)  # not read
    ffn = [torch.rand(width, generator=g) for _ in range(layers)]
    return L1Stats(linear=linear, ffn=ffn, mean_abs_linear={}, mean_abs_ffn=[]), parts


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_l1_scores_take_the_smallest_statistic_of_the_neuron(name):
    model = _model(name)
    stats, parts = _l1_stats(name)
    post = score_neurons_l1(model, stats, "post_act")
    anyc = score_neurons_l1(model, stats)  # "any" is the default
    for i in range(2):
        assert torch.equal(post[i], stats.ffn[i])
        for j in range(128):
            want = min([float(stats.ffn[i][j])] + [float(stats.linear[f"{i}.{p}"][j]) for p in parts])
            assert float(anyc[i][j]) == want
    post[0][0] = anyc[0][1] = -1.0  # the scores are copies: the statistics are left as they were
    assert float(stats.ffn[0][0]) >= 0 and float(stats.ffn[0][1]) >= 0


def test_l1_scores_refuse_stats_that_do_not_fit():
    model = _model("tiny-llama")
    stats, _ = _l1_stats("tiny-llama")
    with pytest.raises(ValueError, match=r"criterion must be one of \('any', 'post_act'\), got 'min'"):
        score_neurons_l1(model, stats, "min")
    with pytest.raises(ValueError, match="stats cover 3 blocks, the model has 2"):
        score_neurons_l1(model, _l1_stats("tiny-llama", layers=3)[0])
    with pytest.raises(ValueError, match="block 0: stats have 100 FFN neurons, the model 128"):
        score_neurons_l1(model, _l1_stats("tiny-llama", width=100)[0])
    del stats.linear["1.mlp.gate_proj"]
    with pytest.raises(ValueError, match="stats have no '1.mlp.gate_proj' of width 128"):
        score_neurons_l1(model, stats)
    assert len(score_neurons_l1(model, stats, "post_act")) == 2  # post_act needs no linear rows
    with pytest.raises(ValueError, match="stats have no '0.mlp.c_fc'"):  # GPT-2 keys for a Llama model
        score_neurons_l1(_model("tiny-gpt2"), _l1_stats("tiny-llama")[0])
    assert L1_CRITERIA == ("any", "post_act")


@pytest.mark.parametrize("name, up, gate", [("tiny-llama", "mlp.up_proj", "mlp.gate_proj"),
                                            ("tiny-phi3", "mlp.gate_up_proj.up", "mlp.gate_up_proj.gate")])
def test_l1_scores_read_the_keys_that_collect_l1_stats_writes(name, up, gate):
    """Phi-3's fused gate_up_proj is held as two modules: its statistics come per part, one per neuron."""
    from minilib.calib.l1 import collect_l1_stats
    model = _model(name)
    windows = torch.randint(0, 50257, (4, 64), generator=torch.Generator().manual_seed(0))
    stats = collect_l1_stats(model, windows, batch_size=4)
    s = score_neurons_l1(model, stats)
    for i in range(2):
        assert stats.linear[f"{i}.{up}"].shape == stats.linear[f"{i}.{gate}"].shape == (128,)
        want = torch.minimum(torch.minimum(stats.ffn[i], stats.linear[f"{i}.{up}"]), stats.linear[f"{i}.{gate}"])
        assert torch.equal(s[i], want) and (s[i] <= stats.ffn[i]).all()


# --- none of them changes the model -------------------------------------------------------------

def test_no_score_changes_the_model():
    model = _model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score_neurons_norm(model), score_neurons_maxprod(model), score_neurons_random(model, 3)
    score_neurons_shared_random(model, 3), score_neurons_anatomy(model, _anatomy(model))
    score_neurons_l1(model, _l1_stats("tiny-llama")[0])
    w = model.model.layers[0].mlp.up_proj.weight
    score_magnitude(w), score_wanda(w, torch.ones(64)), score_obs(w, torch.ones(64))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
