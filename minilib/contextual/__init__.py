"""Contextual pruning (Mini-GPTs): a general model made smaller for one domain.

* ``stats``: calibration pass, normalized L1 norm of every linear output row and FFN neuron.
* ``prune``: threshold masks (ε) and physical removal of FFN neurons; size per layer type.
* ``vocab``: embedding / LM-head pruning by token frequency, remapped tokenizer, save/load.
* ``finetune``: recovery fine-tuning (AdamW, cosine, early stopping on dev, best checkpoint).
* ``pipeline``: the protocol for one domain, evaluated before pruning, after, and after fine-tuning.
"""

from minilib.contextual.finetune import FinetuneResult, finetune, lm_loss
from minilib.contextual.pipeline import best_reduction, evaluate, run_domain
from minilib.contextual.prune import (PruneReport, apply_ffn_pruning, apply_row_masks, check_eps, mask_ffn_neurons,
                                      mask_linear_rows, nonzeros, prune_neurons, size_by_type)
from minilib.contextual.stats import L1Accumulator, NeuronStats, collect_neuron_stats, domain_stats, normalize
from minilib.contextual.vocab import (RemappedTokenizer, VocabMap, apply_vocab_pruning, load_pruned,
                                      load_remapped_tokenizer, make_vocab_map, mask_vocab, prune_vocabulary,
                                      save_pruned, token_counts)

__all__ = ["FinetuneResult", "finetune", "lm_loss", "best_reduction", "evaluate", "run_domain", "PruneReport",
           "apply_ffn_pruning", "apply_row_masks", "check_eps", "mask_ffn_neurons", "mask_linear_rows", "nonzeros",
           "prune_neurons", "size_by_type", "L1Accumulator", "NeuronStats", "collect_neuron_stats", "domain_stats",
           "normalize", "RemappedTokenizer", "VocabMap", "apply_vocab_pruning", "load_pruned",
           "load_remapped_tokenizer", "make_vocab_map", "mask_vocab", "prune_vocabulary", "save_pruned",
           "token_counts"]
