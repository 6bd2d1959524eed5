"""Masks (minilib.prune.masks): selections equal a stable sort's first k, ties included; N:M checks;
preserved neurons; kept widths rounded to a multiple by score."""
import pytest
import torch

from minilib.prune.masks import mask_smallest_rows, mask_unstructured


def _sorted_first_k(scores, k):
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(-1, scores.argsort(dim=-1, stable=True)[..., :k], True)
    return mask


@pytest.mark.parametrize("shape", [(7, 16), (3, 5, 12), (1, 1)])
@pytest.mark.parametrize("ties", [False, True])
def test_per_row_selection_equals_stable_sort(shape, ties):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(shape, generator=g)
    if ties:  # dead inputs: whole columns of equal (zero) scores, and repeated values
        scores[..., : shape[-1] // 2] = 0.0
        scores = scores.round(decimals=0)
    for k in range(shape[-1] + 1):
        got = mask_smallest_rows(scores, k)
        assert torch.equal(got, _sorted_first_k(scores, k)), k
        assert (got.sum(-1) == k).all()


def test_mask_unstructured_per_row_prunes_each_row_exactly():
    scores = torch.zeros(4, 10)  # all tied: the first k of each row by position
    m = mask_unstructured(scores, 0.3, per="row")
    assert torch.equal(m, torch.arange(10).expand(4, 10) < 3)
    with pytest.raises(ValueError, match="per must be"):
        mask_unstructured(scores, 0.3, per="column")


# --- whole-tensor selection, N:M checks, preserved neurons, rounded widths ------------------------------

from minilib.prune.masks import (SparsityError, check_nm, mask_nm, mask_smallest, preserve_top,  # noqa: E402
                                 widths_multiple)


@pytest.mark.parametrize("ties", [False, True])
def test_mask_smallest_is_a_stable_sorts_first_k_over_the_whole_tensor(ties):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 7, generator=g)
    if ties:
        scores = scores.round(decimals=0)
    order = scores.flatten().argsort(stable=True)
    for k in (-1, 0, 1, 5, 21, 41, 42, 50):
        got = mask_smallest(scores, k)
        want = torch.zeros(42, dtype=torch.bool)
        want[order[:max(0, min(k, 42))]] = True
        assert got.shape == scores.shape and torch.equal(got.flatten(), want), k


def test_check_nm_names_what_is_wrong():
    check_nm(2, 4, width=16)
    for n, m, msg in [(0, 4, "1 <= N < M"), (2, 1, "1 <= N < M"), (4, 4, "N < M"), (5, 4, "N < M"),
                      (2.5, 4, "integers"), (True, 4, "integers"), ("2", 4, "integers"), (None, 4, "integers")]:
        with pytest.raises(SparsityError, match=msg):
            check_nm(n, m)
    with pytest.raises(SparsityError, match=r"q_proj: input width 10 is not divisible by M=4"):
        check_nm(2, 4, width=10, name="q_proj")
    with pytest.raises(SparsityError, match="not divisible"):
        mask_nm(torch.zeros(3, 10), 2, 4)


def test_preserve_top_keeps_the_highest_fraction_of_every_layer():
    g = torch.Generator().manual_seed(2)
    rows = [torch.randn(w, generator=g) for w in (10, 37, 100)]
    for frac in (0.0, 0.01, 0.1, 0.5, 0.99):
        masks = preserve_top([r.numpy() for r in rows], frac)
        for r, m in zip(rows, masks):
            k = int(round(frac * len(r)))
            assert m.dtype == torch.bool and int(m.sum()) == k
            if k:  # every preserved neuron scores at least as high as every other one
                assert float(r[m].min()) >= max(r[~m].tolist(), default=-float("inf"))
    with pytest.raises(SparsityError, match="preserved fraction"):
        preserve_top(rows, 1.0)


def test_widths_multiple_rounds_every_kept_width_by_score():
    g = torch.Generator().manual_seed(3)
    widths = (64, 40, 9)
    scores = [torch.rand(w, generator=g) for w in widths]
    masks = [torch.rand(w, generator=g) < p for w, p in zip(widths, (0.3, 0.55, 0.2))]
    out = widths_multiple(masks, 8, scores)
    for m0, m, s in zip(masks, out, scores):
        kept0, kept = int((~m0).sum()), int((~m).sum())
        assert kept == min(len(m), max(8, round(kept0 / 8) * 8)), (kept0, kept)
        if kept > kept0:    # only pruned neurons came back, the best-scoring of them
            assert not (m & ~m0).any() and float(s[m0 & ~m].min()) >= max(s[m].tolist(), default=-1.0)
        elif kept < kept0:  # only kept neurons were dropped, the worst-scoring of them
            assert not (m0 & ~m).any() and float(s[m & ~m0].max()) <= float(s[~m].min())
    assert widths_multiple(masks, 1, scores) is masks


@pytest.mark.parametrize("multiple", [0, -8, 2.5, True, "8"])
def test_widths_multiple_refuses_a_multiple_that_is_not_a_positive_integer(multiple):
    with pytest.raises(SparsityError, match="multiple must be an integer >= 1"):
        widths_multiple([torch.zeros(8, dtype=torch.bool)], multiple, [torch.zeros(8)])


def test_widths_multiple_refuses_scores_that_do_not_match_the_masks():
    masks = [torch.zeros(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)]
    with pytest.raises(ValueError, match="1 score vectors for 2 masks"):
        widths_multiple(masks, 4, [torch.zeros(8)])               # zip would have dropped layer 1
    with pytest.raises(ValueError, match=r"layer 1: scores of shape \(6,\) for a mask of shape \(8,\)"):
        widths_multiple(masks, 4, [torch.zeros(8), torch.zeros(6)])


def test_widths_equal_keeps_the_total_and_each_layers_best():
    from minilib.prune import widths_equal
    g = torch.Generator().manual_seed(0)
    scores = [torch.rand(64, generator=g) for _ in range(3)]
    masks = [torch.arange(64) < k for k in (10, 30, 50)]        # kept 54, 34, 14: mean 34
    out = widths_equal(masks, scores)
    assert [int((~m).sum()) for m in out] == [34, 34, 34]
    for m, s in zip(out, scores):  # the kept ones are the layer's best scores
        assert float(s[~m].min()) >= float(s[m].max())
    assert [int((~m).sum()) for m in widths_equal(masks, scores, multiple=8)] == [32, 32, 32]
    assert widths_equal([], []) == []
    with pytest.raises(SparsityError, match="equal kept width of 40 neurons exceeds layer 1's width 16"):
        widths_equal([torch.zeros(64, dtype=torch.bool), torch.zeros(16, dtype=torch.bool)],
                     [torch.rand(64), torch.rand(16)], multiple=8)
    with pytest.raises(ValueError, match="widths_equal: layer 0: scores of shape \\(3,\\)"):
        widths_equal(masks, [torch.rand(3)] * 3)
    with pytest.raises(ValueError, match="2 score vectors for 3 masks"):
        widths_equal(masks, scores[:2])
    with pytest.raises(SparsityError, match="multiple must be an integer >= 1"):
        widths_equal(masks, scores, multiple=0)


def test_remove_neurons_with_equal_widths_needs_scores():
    from minilib.models import load
    from minilib.prune import remove_neurons
    m = load("tiny-llama").model
    masks = [torch.arange(128) < k for k in (8, 24)]
    with pytest.raises(ValueError, match="equal_widths=True needs scores"):
        remove_neurons(m, masks, equal_widths=True)
    with pytest.raises(ValueError, match="equal_widths must be True or False"):
        remove_neurons(m, masks, equal_widths="yes", scores=[torch.rand(128)] * 2)
    rep = remove_neurons(m, masks, equal_widths=True, scores=[torch.rand(128)] * 2)
    assert rep.target["equal_widths"] is True and rep.after["ffn_widths"] == [112, 112]
