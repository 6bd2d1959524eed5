"""Training: fine-tuning of language models (recovery after pruning: full or LoRA), task fine-tuning
of a classifier on the decision token (full or LoRA), and head-only task heads.

A pruned model stays pruned through all of them (``masking``: masks captured before training,
masked gradients and masks re-applied after every step, LoRA merges masked, sparsity reported)."""

from minilib.train.classify import DecisionClassifier, finetune_classifier, finetuned_classifier
from minilib.train.config import ClassifierConfig, FinetuneConfig, TrainConfig
from minilib.train.finetune import FinetuneResult, finetune
from minilib.train.heads import fit_head, head_key, model_fingerprint, trained_head
from minilib.train.lora import add_lora, lora_targets, merge_lora
from minilib.train.masking import AUTO_MIN_SPARSITY, SparsityLostError, SparsityMasks, prunable_linears

__all__ = ["AUTO_MIN_SPARSITY", "ClassifierConfig", "DecisionClassifier", "FinetuneConfig", "FinetuneResult",
           "SparsityLostError", "SparsityMasks", "TrainConfig", "add_lora", "finetune", "finetune_classifier",
           "finetuned_classifier", "fit_head", "head_key", "lora_targets", "merge_lora", "model_fingerprint",
           "prunable_linears", "trained_head"]
