"""Data: corpora as token tensors with disjoint splits and windows; MCQ and classification sets."""

from minilib.data.corpora import (DEFAULT_FRACTIONS, EMBEDDED_CORPORA, CorpusError, TokenSplits, calibration_set,
                                  calibration_windows, corpus_splits, describe_ids, eval_windows, load_text,
                                  load_tokens, split_tokens, tokenize_text)
from minilib.data.tasks import (CLASSIFICATION_SETS, MCQ_SETS, ClassificationSet, DuplicateChoicesWarning, MCQItem,
                                SchemaError, check_texts, check_training_data, load_classification, load_mcq,
                                validate_mcq)

__all__ = ["DEFAULT_FRACTIONS", "EMBEDDED_CORPORA", "CorpusError", "TokenSplits", "calibration_set", "calibration_windows",
           "corpus_splits", "describe_ids", "eval_windows", "load_text", "load_tokens", "split_tokens", "tokenize_text",
           "CLASSIFICATION_SETS", "MCQ_SETS", "ClassificationSet", "DuplicateChoicesWarning", "MCQItem", "SchemaError",
           "check_texts", "check_training_data", "load_classification", "load_mcq", "validate_mcq"]
