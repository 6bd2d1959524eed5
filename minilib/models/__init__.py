"""Models: loading (embedded, tiny, local, GGUF, hub), family adapters, linear orientation, surgery,
vocabulary maps, and saving of reshaped models."""

from minilib.determinism import install_attention_fallback
from minilib.device import resolve_device
from minilib.models.adapters import (ADAPTERS, FFN, SUPPORTED_FAMILIES, Adapter, SplitLinear, UnpreparedModelError,
                                     UnsupportedModelError, adapter_for)
from minilib.models.loading import EMBEDDED, TASKS, LoadedModel, UnknownModelError, load
from minilib.models.saving import (CorruptModelError, is_saved_model, load_head, load_model, read_plan, save_head,
                                   save_model)
from minilib.models.surgery import PlanMismatchError, check_neuron_indices, ffn_widths, remove_ffn_neurons
from minilib.models.tiny import TINY, TINY_DECODERS, tiny_model
from minilib.models.vocab import RemappedTokenizer, VocabMap, keep_vocab_rows, make_vocab_map, token_counts

install_attention_fallback()  # bf16/fp16 SDPA on an AMX CPU under the AVX2 pin (minilib.determinism)

__all__ = ["ADAPTERS", "FFN", "SUPPORTED_FAMILIES", "Adapter", "SplitLinear", "UnpreparedModelError",
           "UnsupportedModelError", "adapter_for", "EMBEDDED",
           "TASKS", "LoadedModel", "UnknownModelError", "load", "resolve_device", "PlanMismatchError",
           "check_neuron_indices", "ffn_widths", "remove_ffn_neurons", "CorruptModelError", "is_saved_model",
           "load_head", "load_model", "read_plan", "save_head", "save_model", "TINY", "TINY_DECODERS", "tiny_model", "RemappedTokenizer",
           "VocabMap", "keep_vocab_rows", "make_vocab_map", "token_counts"]
