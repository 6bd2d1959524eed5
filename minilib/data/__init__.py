"""Data: corpora as token tensors with disjoint splits and windows; MCQ and classification sets."""

from minilib.data.corpora import (DEFAULT_FRACTIONS, EMBEDDED_CORPORA, CorpusError, TokenSplits, calibration_set,
                                  calibration_windows,
                                  corpus_splits, eval_windows, load_text, load_tokens, split_tokens, tokenize_text)
from minilib.data.tasks import (CLASSIFICATION_SETS, MCQ_SETS, ClassificationSet, MCQItem, SchemaError,
                                load_classification, load_mcq, validate_mcq)

__all__ = ["DEFAULT_FRACTIONS", "EMBEDDED_CORPORA", "CorpusError", "TokenSplits", "calibration_set", "calibration_windows",
           "corpus_splits", "eval_windows", "load_text", "load_tokens", "split_tokens", "tokenize_text",
           "CLASSIFICATION_SETS", "MCQ_SETS", "ClassificationSet", "MCQItem", "SchemaError", "load_classification",
           "load_mcq", "validate_mcq"]
