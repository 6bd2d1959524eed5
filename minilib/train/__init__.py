"""Training: fine-tuning of language models (recovery after pruning), task fine-tuning of a
classifier on the decision token (full or LoRA), and head-only task heads."""

from minilib.train.classify import DecisionClassifier, finetune_classifier, finetuned_classifier, lora_targets
from minilib.train.finetune import FinetuneResult, finetune
from minilib.train.heads import fit_head, head_key, model_fingerprint, trained_head

__all__ = ["DecisionClassifier", "FinetuneResult", "finetune", "finetune_classifier", "finetuned_classifier",
           "fit_head", "head_key", "lora_targets", "model_fingerprint", "trained_head"]
