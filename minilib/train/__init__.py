"""Training: fine-tuning of language models (recovery after pruning) and task heads."""

from minilib.train.finetune import FinetuneResult, finetune
from minilib.train.heads import fit_head, head_key, model_fingerprint, trained_head

__all__ = ["FinetuneResult", "finetune", "fit_head", "head_key", "model_fingerprint", "trained_head"]
