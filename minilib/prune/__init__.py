"""Pruning: ``score_*`` (tensors) -> ``mask_*`` (bool, True = prune) -> ``zero_*``/``remove_*`` (the model).

* ``scores``  -- weights (magnitude, Wanda, RIA, OBS) and FFN neurons (random, norm, max-product, anatomy, L1);
* ``masks``   -- unstructured, N:M, per-layer neuron budgets, thresholds, vocabulary; ``check_fraction``;
* ``apply``   -- zero weights, zero/remove neurons, zero rows, remove vocabulary rows;
* ``sparsegpt`` -- the OBS solver (a ``calib.Hessian`` accumulator with ``prune``), ``quant``;
* ``allocation`` -- per-block sparsity lists, OWL's outlier-weighted allocation (``owl_sparsities``);
* ``methods`` -- the one-shot methods, one entry each (score, calibration statistic, options): ``METHODS``;
* ``oneshot`` -- ``prune_model``: any registered method over the block-by-block pass;
* ``permute`` -- channel permutations for N:M (RIA's ``permute`` option): ``nm_permutation``;
* ``semistructured`` -- 2:4 weights to PyTorch's semi-structured format (CUDA);
* ``report``  -- ``PruneReport``, what every call achieved.

Pruned models are saved and loaded with ``minilib.models.save_model`` / ``load_model``.
"""

from minilib.prune.allocation import (Allocation, check_layer_sparsities, implied_sparsity, owl_from_ratios,
                                      owl_sparsities)
from minilib.prune.apply import (PartialPruneError, remove_neurons, remove_vocab, zero_neurons, zero_rows,
                                 zero_weights)
from minilib.prune.masks import (DEFAULT_SPARSITY, SparsityError, check_fraction, check_nm, check_ratio,
                                 check_sparsity, check_sparsity_nm, check_threshold, is_nm, layer_budgets,
                                 layer_profile, mask_neuron_weights, mask_neurons, mask_nm, mask_smallest,
                                 mask_threshold, mask_unstructured, mask_vocab, parse_nm, preserve_top, widths_equal,
                                 widths_multiple)
from minilib.prune.methods import METHODS, Method, Option, get_method, register
from minilib.prune.oneshot import prune_model
from minilib.prune.permute import (PERMUTE_MODES, is_nm_permuted, layer_permutation, mask_nm_permuted, nm_permutation,
                                   nm_retained)
from minilib.prune.quant import ChannelQuantizer, check_wbits, fit_quantizer, quantize_rtn
from minilib.prune.report import PruneReport, reconstruction_stats, snapshot
from minilib.prune.scores import (score_magnitude, score_neurons_anatomy, score_neurons_l1, score_neurons_maxprod,
                                  score_neurons_norm, score_neurons_random, score_neurons_shared_random,
                                  score_obs, score_ria, score_wanda)
from minilib.prune.semistructured import PermutedNMError, to_semi_structured
from minilib.prune.sparsegpt import HessianError, SparseGPT, check_percdamp

__all__ = ["Allocation", "check_layer_sparsities", "implied_sparsity", "owl_from_ratios", "owl_sparsities",
           "PartialPruneError", "remove_neurons", "remove_vocab", "zero_neurons", "zero_rows", "zero_weights",
           "DEFAULT_SPARSITY", "SparsityError", "check_fraction", "check_nm", "check_ratio", "check_sparsity",
           "check_sparsity_nm", "check_threshold", "is_nm",
           "layer_budgets", "layer_profile", "mask_neuron_weights", "mask_neurons", "mask_nm", "mask_smallest", "mask_threshold",
           "mask_unstructured", "mask_vocab", "parse_nm", "preserve_top", "widths_equal", "widths_multiple", "METHODS", "Method", "Option",
           "get_method", "register", "prune_model",
           "PERMUTE_MODES", "is_nm_permuted", "layer_permutation", "mask_nm_permuted", "nm_permutation", "nm_retained",
           "PermutedNMError",
           "ChannelQuantizer", "check_wbits", "fit_quantizer", "quantize_rtn", "PruneReport", "reconstruction_stats",
           "snapshot", "score_magnitude", "score_neurons_anatomy", "score_neurons_l1", "score_neurons_maxprod",
           "score_neurons_norm", "score_neurons_random", "score_neurons_shared_random", "score_obs", "score_ria", "score_wanda", "to_semi_structured",
           "HessianError", "SparseGPT", "check_percdamp"]
