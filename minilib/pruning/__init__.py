"""Structured FFN pruning: ``score_*`` (tensors) -> ``mask_*`` (keep-masks) -> ``apply_*`` (surgery)."""

from minilib.pruning.apply import apply_ffn_masks, load_pruned, save_pruned, zero_ffn_neurons
from minilib.pruning.experiment import measure, method_masks, ratio_sweep
from minilib.pruning.masks import check_ratio, layer_budgets, layer_profile, mask_ffn, preserved_neurons
from minilib.pruning.scores import score_anatomy, score_magnitude, score_random

__all__ = ["apply_ffn_masks", "load_pruned", "save_pruned", "zero_ffn_neurons", "measure", "method_masks",
           "ratio_sweep", "check_ratio", "layer_budgets", "layer_profile", "mask_ffn", "preserved_neurons",
           "score_anatomy", "score_magnitude", "score_random"]
