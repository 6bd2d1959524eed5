"""Task heads: head-only logistic regression learns, and is cached."""


import torch

from minilib.eval.decision import decision_task
from minilib.train.heads import fit_head, trained_head


def test_fit_head_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=g) * 5 + 3
    y = (x[:, 0] - x[:, 3] > 0).long().numpy()
    head = fit_head(x, y)
    assert (head(x).argmax(-1).numpy() == y).mean() > 0.97


def test_trained_head_is_cached(tmp_path, monkeypatch):
    from minilib.models import load
    monkeypatch.setenv("MINILIB_CACHE_HEADS_TEST", "1")
    m = load("tiny-bert")
    task = decision_task("sst2", n_train=40, n_test=10, seed=3)
    h1, i1 = trained_head(m, task, batch_size=20)
    h2, i2 = trained_head(m, task, batch_size=20)
    assert i2["cached"] and i1["key"] == i2["key"]
    torch.testing.assert_close(h1.weight, h2.weight)

