"""Calibration: accumulators with one ``add_batch(inp, out)`` signature, fed by one hook mechanism,
over the whole model (``calibrate``) or block by block (``sequential_pass``), with shared keys."""

from minilib.calib.accumulators import (AbsMean, Accumulator, DecisionNeuronStats, Hessian, InputSqNorms,
                                        LastBatch)
from minilib.calib.passes import (BlockStep, CalibrationError, Captured, DeviceMemo, calibrate,
                                  capture_block_inputs, check_windows, feeding, ffn_keys, key, linear_keys, resolve,
                                  run_block, sequential_pass, split_key)

__all__ = ["AbsMean", "Accumulator", "DecisionNeuronStats", "Hessian", "InputSqNorms", "LastBatch", "BlockStep",
           "CalibrationError", "Captured", "DeviceMemo", "calibrate", "capture_block_inputs", "check_windows",
           "feeding", "ffn_keys", "key", "linear_keys", "resolve", "run_block", "sequential_pass", "split_key"]
