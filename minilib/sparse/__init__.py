"""One-shot post-training pruning: magnitude, Wanda and SparseGPT (unstructured, N:M, joint k-bit).

* ``masks``      -- ``mask_*``: which weights to prune (bool, True = pruned), N:M checks
* ``scores``     -- ``score_*``: |W|, Wanda |W|·||X||, the OBS saliency
* ``quant``      -- per-channel k-bit quantization
* ``sparsegpt``  -- the solver class (``add_batch`` / ``prune`` / ``free``)
* ``sequential`` -- the layer-by-layer calibration driver ``prune_model``
* ``composition``-- FFN-neuron removal (the anatomy study's structured pruning) before one-shot pruning
* ``semistructured`` -- 2:4 weights to PyTorch's semi-structured sparse format (CUDA)
"""

from minilib.sparse.composition import score_ffn_neurons, shrink_ffns
from minilib.sparse.masks import (SparsityError, check_nm, check_sparsity, is_nm, mask_nm, mask_smallest,
                                  mask_unstructured)
from minilib.sparse.quant import ChannelQuantizer, check_wbits, fit_quantizer, quantize_rtn
from minilib.sparse.scores import score_magnitude, score_obs, score_wanda
from minilib.sparse.semistructured import to_semi_structured
from minilib.sparse.sequential import (METHODS, PruneReport, apply_mask, calibration_set, capture_block_inputs,
                                       prune_model)
from minilib.sparse.sparsegpt import CalibrationError, HessianError, SparseGPT, reconstruction_stats
from minilib.sparse.stats import InputNorms

__all__ = ["score_ffn_neurons", "shrink_ffns", "SparsityError", "check_nm", "check_sparsity", "is_nm", "mask_nm",
           "mask_smallest", "mask_unstructured", "ChannelQuantizer", "check_wbits", "fit_quantizer", "quantize_rtn",
           "score_magnitude", "score_obs", "score_wanda", "to_semi_structured", "METHODS", "PruneReport",
           "apply_mask", "calibration_set", "capture_block_inputs", "prune_model", "CalibrationError",
           "HessianError", "SparseGPT", "reconstruction_stats", "InputNorms"]
