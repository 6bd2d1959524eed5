"""Calibration: accumulators with one ``add_batch(inp, out)`` signature, fed by one hook mechanism,
over the whole model (``calibrate``) or block by block (``sequential_pass``), with shared keys;
the L1 neuron statistics of Mini-GPTs (``collect_l1_stats`` -> ``L1Stats``, read by
``minilib.prune.score_neurons_l1``)."""

from minilib.calib.accumulators import (AbsMean, Accumulator, DecisionNeuronStats, Hessian, HessianMoments,
                                        InputMoments, InputSqNorms, LastBatch)
from minilib.calib.l1 import L1Stats, collect_l1_stats
from minilib.calib.passes import (BlockStep, CalibrationError, Captured, DeviceMemo, calibrate,
                                  capture_block_inputs, check_windows, feeding, ffn_keys, key, linear_keys, resolve,
                                  run_block, sequential_pass, split_key)

__all__ = ["AbsMean", "Accumulator", "DecisionNeuronStats", "Hessian", "HessianMoments", "InputMoments", "InputSqNorms",
           "LastBatch", "BlockStep",
           "CalibrationError", "Captured", "DeviceMemo", "calibrate", "capture_block_inputs", "check_windows",
           "feeding", "ffn_keys", "key", "linear_keys", "resolve", "run_block", "sequential_pass", "split_key",
           "L1Stats", "collect_l1_stats"]
