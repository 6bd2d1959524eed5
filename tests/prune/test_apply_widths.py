"""remove_neurons on GPU dtypes: kept FFN widths rounded to a multiple (tensor-core-friendly), or a
warning when an fp16/bf16 model is left with widths that are not multiples of 8 (tested on the CPU
with a bf16 tiny model: the warning depends on the dtype, not on the device)."""

import warnings

import pytest
import torch

from minilib.models import ffn_widths, load
from minilib.prune import mask_neurons, score_neurons_norm
from minilib.prune.apply import WidthWarning, remove_neurons


def _odd_masks(m):  # 30% of 128 = 38.4 -> 38 removed, 90 kept: not a multiple of 8
    return mask_neurons(score_neurons_norm(m), 0.3)


def test_bf16_model_with_odd_widths_warns():
    m = load("tiny-llama", dtype=torch.bfloat16).model
    with pytest.warns(WidthWarning, match="not multiples of 8.*multiple_of=8"):
        remove_neurons(m, _odd_masks(m))
    assert ffn_widths(m) == [90, 90]


def test_fp32_model_and_round_widths_do_not_warn():
    m = load("tiny-llama").model
    with warnings.catch_warnings():
        warnings.simplefilter("error", WidthWarning)
        remove_neurons(m, _odd_masks(m))                      # fp32: CPU-style, no warning
        b = load("tiny-llama", dtype=torch.bfloat16).model
        remove_neurons(b, mask_neurons(score_neurons_norm(b), 0.25))  # 96 kept: a multiple of 8


def test_multiple_of_rounds_by_the_scores():
    m = load("tiny-llama", dtype=torch.float16).model
    scores = score_neurons_norm(m)
    masks = _odd_masks(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WidthWarning)
        rep = remove_neurons(m, masks, multiple_of=8, scores=scores)
    assert ffn_widths(m) == [88, 88] and rep.target["multiple_of"] == 8  # 90 -> nearest multiple of 8
    assert rep.after["ffn_widths"] == [88, 88]


@pytest.mark.parametrize("kw,match", [(dict(multiple_of=8), "needs scores"), (dict(multiple_of=0), "multiple_of"),
                                      (dict(multiple_of=8, scores=[torch.ones(5), torch.ones(5)]), "scores of shape")])
def test_bad_rounding_arguments(kw, match):
    m = load("tiny-llama").model
    with pytest.raises(ValueError, match=match):
        remove_neurons(m, _odd_masks(m), **kw)
    assert ffn_widths(m) == [128, 128]  # nothing changed
