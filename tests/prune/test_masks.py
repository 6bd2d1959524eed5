"""Weight masks: the per-row selection equals a stable sort's first k, ties included."""
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
