"""One adapter per model family: where the blocks, FFN, attention, embeddings, norm, head and
decision token are.  Nothing outside this module branches on the architecture.

All paths are dotted attribute paths: ``blocks`` is relative to ``model.base_model`` (the bare
transformer inside any task head), FFN and attention paths are relative to one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from minilib.models.linear import is_linear


class UnsupportedModelError(ValueError):
    """The model's family has no adapter."""


def get_path(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_path(root: nn.Module, path: str, value: nn.Module) -> None:
    *parents, last = path.split(".")
    owner = get_path(root, ".".join(parents)) if parents else root
    setattr(owner, last, value)


@dataclass
class FFN:
    """The FFN of one block: ``down(act(up(x)) * gate(x))`` (gate only in gated families).

    The neurons are the ``intermediate`` features: outputs of ``up``/``gate``, inputs of ``down``.
    """

    block: nn.Module
    paths: dict[str, str]

    def __getattr__(self, name: str):
        paths = self.__dict__.get("paths", {})
        if name in ("up", "gate", "act", "down"):
            p = paths.get(name)
            return None if p is None else get_path(self.block, p)
        raise AttributeError(name)

    def replace(self, name: str, module: nn.Module) -> None:
        set_path(self.block, self.paths[name], module)

    @property
    def width(self) -> int:
        from minilib.models.linear import out_features
        return out_features(self.up)


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    is_decoder: bool
    blocks_path: str
    ffn_paths: dict[str, str | None]
    attn_paths: dict[str, str]
    final_norm_path: str | None
    ffn_config_key: str  # config attribute holding the intermediate size (uniform FFN width)
    norm_paths: tuple[str, ...] = ()  # the normalisation layers of one block (paths inside the block)
    ffn_flat_tokens: bool = False  # the FFN sees tokens flattened to (B*T, features) (OPT)
    max_pos_keys: tuple[str, ...] = ("max_position_embeddings",)
    head_paths: tuple[str, ...] = field(default=("score", "classifier"))

    # --- structure -------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_path(self.base(model), self.blocks_path)

    def n_blocks(self, model: nn.Module) -> int:
        return len(self.blocks(model))

    def ffn(self, block: nn.Module) -> FFN:
        return FFN(block, {k: v for k, v in self.ffn_paths.items() if v is not None})

    def ffns(self, model: nn.Module) -> list[FFN]:
        return [self.ffn(b) for b in self.blocks(model)]

    def attention(self, block: nn.Module) -> dict[str, nn.Module]:
        return {k: get_path(block, p) for k, p in self.attn_paths.items()}

    def attention_output_module(self, block: nn.Module) -> nn.Module:
        """The module whose output is the attention branch's contribution (its output projection)."""
        return get_path(block, self.attn_paths["o"])

    def input_embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def final_norm(self, model: nn.Module) -> nn.Module | None:
        return None if self.final_norm_path is None else get_path(self.base(model), self.final_norm_path)

    def final_norm_parts(self, model: nn.Module, residual: torch.Tensor):
        """The final norm at ``residual`` ``(B, H)`` as ``norm(x) = gain(x) * scale[:, None] + bias``:
        returns ``(gain, scale, bias)`` with ``gain`` the linear part (centring for LayerNorm, then the
        per-feature weight), ``scale`` ``(B,)`` the per-example ``1/sigma(x)`` and ``bias`` ``(H,)``
        (zeros for RMS norms).  With the scale frozen at ``residual`` (as in direct logit attribution),
        a contribution ``c`` to the residual reaches the head as ``gain(c) * scale``.  None for
        families without a final norm (encoders)."""
        norm = self.final_norm(model)
        if norm is None:
            return None
        x = residual.float()
        weight = getattr(norm, "weight", None)
        w = torch.ones(x.shape[-1], device=x.device) if weight is None else weight.detach().float().to(x.device)
        if isinstance(norm, nn.LayerNorm):
            xc = x - x.mean(-1, keepdim=True)
            scale = torch.rsqrt(xc.pow(2).mean(-1) + norm.eps)
            bias = norm.bias.detach().float().to(x.device) if getattr(norm, "bias", None) is not None \
                else torch.zeros_like(w)
            return (lambda c: (c - c.mean(-1, keepdim=True)) * w), scale, bias
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if eps is None:
            raise UnsupportedModelError(f"final norm {type(norm).__name__} of family {self.family!r} is neither a "
                                        "LayerNorm nor an RMS norm with an eps")
        g = 1.0 + w if self.family == "gemma3" else w  # Gemma scales by (1 + weight)
        scale = torch.rsqrt(x.pow(2).mean(-1) + eps)
        return (lambda c: c * g), scale, torch.zeros_like(w)

    def head(self, model: nn.Module) -> nn.Module | None:
        """The LM head (output embeddings) or classifier head, or None for a bare encoder."""
        out = self.lm_head(model)
        if out is not None:
            return out
        for p in self.head_paths:
            if hasattr(model, p):
                return getattr(model, p)
        return None

    def lm_logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from final hidden states (output of ``base(model)``): the LM head, plus the
        logit soft-capping some families configure.  Lets callers compute logits only where needed."""
        logits = self.lm_head(model)(hidden)
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def lm_head(self, model: nn.Module) -> nn.Module | None:
        """The LM head (output embeddings), or None for models without one."""
        return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def norms(self, block: nn.Module) -> dict[str, nn.Module]:
        """The normalisation layers of a block, by path."""
        return {p: get_path(block, p) for p in self.norm_paths}

    def ffn_width(self, config) -> int:
        """The FFN width the config declares (``ffn_config_key``)."""
        v = getattr(config, self.ffn_config_key, None)
        if v is None and self.family == "gpt2":  # GPT-2 leaves n_inner unset: 4 * hidden
            v = 4 * config.n_embd
        return int(v)

    def tokens_3d(self, x: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
        """An FFN-internal tensor as ``(B, T, features)`` (undoes ``ffn_flat_tokens``)."""
        if self.ffn_flat_tokens and x.dim() == 2:
            return x.view(batch, seq, -1)
        return x

    def linear_layers(self, block: nn.Module) -> dict[str, nn.Module]:
        """Every linear layer of a block, by dotted name, in registration order."""
        return {n: m for n, m in block.named_modules() if n and is_linear(m)}

    def max_positions(self, config) -> int | None:
        for k in self.max_pos_keys:
            v = getattr(config, k, None)
            if v:
                return int(v)
        return None

    # --- the decision token ----------------------------------------------------------------
    def decision_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index of the token the model decides with, per row: ``[CLS]`` (0) for encoders, the last
        non-padding token for decoders (works for left and right padding)."""
        B, T = attention_mask.shape
        if not self.is_decoder:
            return torch.zeros(B, dtype=torch.long, device=attention_mask.device)
        pos = torch.arange(T, device=attention_mask.device).expand(B, T)
        return torch.where(attention_mask.bool(), pos, torch.full_like(pos, -1)).amax(1)


_LLAMA_LIKE_ATTN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                    "o": "self_attn.o_proj"}
_GATED_FFN = {"up": "mlp.up_proj", "gate": "mlp.gate_proj", "act": "mlp.act_fn", "down": "mlp.down_proj"}

ADAPTERS: dict[str, Adapter] = {a.family: a for a in [
    Adapter("gpt2", ("gpt2",), True, "h",
            {"up": "mlp.c_fc", "gate": None, "act": "mlp.act", "down": "mlp.c_proj"},
            {"qkv": "attn.c_attn", "o": "attn.c_proj"}, "ln_f", "n_inner", ("ln_1", "ln_2"),
            max_pos_keys=("n_positions",)),
    Adapter("bert", ("bert",), False, "encoder.layer",
            {"up": "intermediate.dense", "gate": None, "act": "intermediate.intermediate_act_fn",
             "down": "output.dense"},
            {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense"}, None, "intermediate_size",
            ("attention.output.LayerNorm", "output.LayerNorm")),
    Adapter("opt", ("opt",), True, "decoder.layers",
            {"up": "fc1", "gate": None, "act": "activation_fn", "down": "fc2"},
            {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.out_proj"}, "decoder.final_layer_norm", "ffn_dim",
            ("self_attn_layer_norm", "final_layer_norm"), ffn_flat_tokens=True),
    Adapter("llama", ("llama",), True, "layers", _GATED_FFN, _LLAMA_LIKE_ATTN, "norm", "intermediate_size",
            ("input_layernorm", "post_attention_layernorm")),
    Adapter("phi", ("phi",), True, "layers",
            {"up": "mlp.fc1", "gate": None, "act": "mlp.activation_fn", "down": "mlp.fc2"},
            {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.dense"}, "final_layernorm", "intermediate_size", ("input_layernorm",)),
    Adapter("gemma3", ("gemma3_text", "gemma3"), True, "layers", _GATED_FFN, _LLAMA_LIKE_ATTN, "norm",
            "intermediate_size", ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                                  "post_feedforward_layernorm", "self_attn.q_norm", "self_attn.k_norm")),
]}

SUPPORTED_FAMILIES = tuple(ADAPTERS)


def adapter_for_type(model_type: str) -> Adapter:
    for a in ADAPTERS.values():
        if model_type in a.model_types:
            return a
    raise UnsupportedModelError(
        f"model type {model_type!r} has no adapter; supported families: {', '.join(SUPPORTED_FAMILIES)}")


def adapter_for(model_or_config) -> Adapter:
    """The adapter for a model (or its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedModelError(
            f"{type(model_or_config).__name__} is not a transformers model; "
            f"supported families: {', '.join(SUPPORTED_FAMILIES)}")
    return adapter_for_type(model_type)
