"""Models: loading (embedded, tiny, local, GGUF, hub), family adapters, linear orientation, surgery."""

from minilib.models.adapters import (ADAPTERS, FFN, SUPPORTED_FAMILIES, Adapter, UnsupportedModelError,
                                     adapter_for)
from minilib.models.loading import EMBEDDED, TASKS, LoadedModel, UnknownModelError, load, resolve_device
from minilib.models.surgery import (PlanMismatchError, ffn_widths, load_model, read_plan, remove_ffn_neurons,
                                    save_model)
from minilib.models.tiny import TINY, tiny_model

__all__ = ["ADAPTERS", "FFN", "SUPPORTED_FAMILIES", "Adapter", "UnsupportedModelError", "adapter_for", "EMBEDDED",
           "TASKS", "LoadedModel", "UnknownModelError", "load", "resolve_device", "PlanMismatchError", "ffn_widths",
           "load_model", "read_plan", "remove_ffn_neurons", "save_model", "TINY", "tiny_model"]
