"""LoRA adapters (through ``peft``) on the block linears, and their merge back into plain weights.

``add_lora`` injects the adapters into the model in place (the rest frozen); ``merge_lora`` merges
them into the base weights and removes them, so the result is the same object and architecture as
before.  With sparsity masks (``minilib.train.masking``) the merge keeps the zeros: the merged
update ``B A`` is masked, i.e. ``W <- W + (~mask) * scale * B A``, so a pruned weight stays exactly
zero.  The masked model then differs from the adapter-augmented model the training saw by the
adapter's contribution at the pruned positions; ``finetune`` measures the merged model once more
(``FinetuneResult.final_dev_ppl``).
"""

from __future__ import annotations

from torch import nn

from minilib.models.adapters import adapter_for


def lora_targets(model: nn.Module) -> list[str]:
    """The linear layers of every block that get a LoRA adapter: attention and FFN projections
    (paths from the family adapter)."""
    a = adapter_for(model)
    return sorted({p for p in list(a.attn_paths.values()) + [a.ffn_paths[k] for k in ("up", "gate", "down")] if p})


def add_lora(model: nn.Module, r: int, alpha: float, dropout: float):
    """Inject LoRA adapters of rank ``r`` into every ``lora_targets`` layer of ``model``, in place;
    every other parameter is frozen.  Returns the ``peft`` model wrapping ``model``."""
    from peft import LoraConfig, get_peft_model
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=lora_targets(model))
    return get_peft_model(model, cfg)


def merge_lora(peft_model, masks=None) -> nn.Module:
    """Merge the adapters into the base weights and remove them; returns the plain model (the object
    ``add_lora`` was given).  ``masks`` (a ``SparsityMasks`` that is enforced): the merged update is
    masked, so every pruned weight stays exactly zero."""
    model = peft_model.merge_and_unload()
    if masks is not None and masks.enforced:
        masks.apply(model)
    return model


def unload_lora(peft_model) -> nn.Module:
    """Remove the adapters without merging them (the base weights as they were)."""
    return peft_model.unload()
