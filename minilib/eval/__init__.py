"""Evaluation on model objects: perplexity, MCQ accuracy, classification accuracy, model report."""

from minilib.eval.classify import accuracy, classification_accuracy, classifier_logits, wilson_interval
from minilib.eval.mcq import choice_loglikelihoods, mcq_accuracy
from minilib.eval.perplexity import check_seqlen, lm_nll, nll_windows, perplexity
from minilib.eval.report import (checkpoint_bytes, count_parameters, forward_throughput, layer_sparsity,
                                 model_report, parameters_by_type)

__all__ = ["accuracy", "classification_accuracy", "classifier_logits", "wilson_interval", "choice_loglikelihoods",
           "mcq_accuracy", "check_seqlen", "lm_nll", "nll_windows", "perplexity", "checkpoint_bytes", "count_parameters",
           "forward_throughput", "layer_sparsity", "model_report", "parameters_by_type"]
