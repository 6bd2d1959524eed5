"""Evaluation on model objects: perplexity (with bootstrap intervals), MCQ accuracy (lm-eval's
prompts and metrics, Wilson intervals), classification accuracy, model report.  The
lm-evaluation-harness bridge is ``minilib.eval.lmeval`` (imported on demand: it loads lm-eval)."""

from minilib.eval.classify import accuracy, classification_accuracy, classifier_logits, wilson_interval
from minilib.eval.mcq import choice_loglikelihoods, mcq_accuracy, mcq_requests, pick_method
from minilib.eval.perplexity import (check_seqlen, check_token_ids, lm_nll, nll_windows, perplexity, perplexity_ci,
                                     perplexity_ratio_ci, to_windows, window_nll)
from minilib.eval.report import (checkpoint_bytes, count_parameters, forward_throughput, layer_sparsity,
                                 model_report, parameters_by_type)

__all__ = ["accuracy", "classification_accuracy", "classifier_logits", "wilson_interval", "choice_loglikelihoods",
           "mcq_accuracy", "mcq_requests", "pick_method", "check_seqlen", "check_token_ids", "lm_nll", "nll_windows",
           "perplexity", "perplexity_ci", "perplexity_ratio_ci", "to_windows", "window_nll", "checkpoint_bytes",
           "count_parameters", "forward_throughput", "layer_sparsity", "model_report", "parameters_by_type"]
