"""Anatomy of the decision: how information reaches the decision token, per layer and FFN neuron."""

from minilib.anatomy.collect import (Anatomy, AnatomyMismatchError, NeuronStats, anatomy_for, anatomy_key,
                                     anatomy_path, collect_anatomy, model_signature)
from minilib.anatomy.decision import (DecisionTask, decision_accuracy, decision_features, decision_logits,
                                      decision_task, fit_head, load_head, save_head, trained_head)

__all__ = ["Anatomy", "AnatomyMismatchError", "NeuronStats", "anatomy_for", "anatomy_key", "anatomy_path",
           "collect_anatomy", "model_signature", "DecisionTask", "decision_accuracy", "decision_features",
           "decision_logits", "decision_task", "fit_head", "load_head", "save_head", "trained_head"]
