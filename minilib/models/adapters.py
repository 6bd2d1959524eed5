"""One adapter per model family: where the blocks, FFN, attention, embeddings, norm, head and
decision token are.  Nothing outside this module branches on the architecture.

All paths are dotted attribute paths: ``blocks`` is relative to ``model.base_model`` (the bare
transformer inside any task head), FFN and attention paths are relative to one block.

Fused FFN layers.  Phi-3 computes gate and up with one ``gate_up_proj`` (``[2F, H]``: gate rows, then
up rows).  Its adapter names that layer in ``fused_ffn``; ``Adapter.prepare`` (which every loader calls)
replaces it by a ``SplitLinear`` holding ``gate`` and ``up`` as two ``nn.Linear`` children, so that the
FFN paths name real modules (hooked, scored, pruned and resized like any gated FFN's) while the forward
and the state dict stay the fused layer's.  ``Adapter.to_stock`` fuses them back (the exports do).
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


class SplitLinear(nn.Module):
    """A fused linear layer whose output is its parts' outputs concatenated in order (Phi-3's
    ``gate_up_proj``: gate, then up), held as one ``nn.Linear`` child per part.

    The forward is the fused layer's.  So is the state dict while every part is a plain
    ``nn.Linear``: one ``weight`` (and ``bias``) under the fused layer's name, the parts stacked on
    the output axis, so ``save_pretrained``, ``safetensors`` and ``load_state_dict`` see the stock
    layout (a loaded fused tensor is split into equal parts).  A part replaced by something else
    (e.g. a LoRA wrapper) saves under its own keys.  ``fused()`` is the plain ``nn.Linear``."""

    def __init__(self, parts: dict[str, nn.Linear]):
        super().__init__()
        self.part_names = tuple(parts)
        for name, m in parts.items():
            self.add_module(name, m)

    @classmethod
    def split(cls, fused: nn.Linear, names: tuple[str, ...]) -> "SplitLinear":
        """``fused``'s output rows cut into ``len(names)`` equal parts, in order (copies)."""
        if fused.out_features % len(names):
            raise UnsupportedModelError(f"a fused layer of {fused.out_features} outputs does not split into "
                                        f"{len(names)} equal parts {names}")
        w, b = fused.weight, fused.bias
        parts = {}
        for i, (name, wi) in enumerate(zip(names, w.detach().chunk(len(names), 0))):
            lin = nn.Linear(fused.in_features, wi.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
            lin.weight = nn.Parameter(wi.clone(), requires_grad=w.requires_grad)
            if b is not None:
                lin.bias = nn.Parameter(b.detach().chunk(len(names), 0)[i].clone(), requires_grad=b.requires_grad)
            parts[name] = lin
        return cls(parts).train(fused.training)

    def parts(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.part_names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts()], dim=-1)

    def _plain(self) -> bool:
        return all(type(p) is nn.Linear for p in self.parts())

    def fused(self) -> nn.Linear:
        """The plain ``nn.Linear`` this layer computes (new parameters)."""
        ps = self.parts()
        w = torch.cat([p.weight.detach() for p in ps], 0)
        has_bias = ps[0].bias is not None
        out = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
        out.weight = nn.Parameter(w.clone(), requires_grad=ps[0].weight.requires_grad)
        if has_bias:
            out.bias = nn.Parameter(torch.cat([p.bias.detach() for p in ps], 0),
                                    requires_grad=ps[0].bias.requires_grad)
        return out.train(self.training)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        if not self._plain():
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if destination is None:
            from collections import OrderedDict
            destination = OrderedDict()
        ps = self.parts()
        take = (lambda t: t) if keep_vars else (lambda t: t.detach())
        destination[prefix + "weight"] = torch.cat([take(p.weight) for p in ps], 0)
        if ps[0].bias is not None:
            destination[prefix + "bias"] = torch.cat([take(p.bias) for p in ps], 0)
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for kind in ("weight", "bias"):
            t = state_dict.get(prefix + kind)
            if t is None:
                continue
            if t.shape[0] % len(self.part_names):
                error_msgs.append(f"{prefix}{kind}: {tuple(t.shape)} does not split into {len(self.part_names)} "
                                  "equal parts")
                continue
            del state_dict[prefix + kind]
            for name, ti in zip(self.part_names, t.chunk(len(self.part_names), 0)):
                state_dict[f"{prefix}{name}.{kind}"] = ti
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class UnpreparedModelError(ValueError):
    """A stock model whose fused layers were not split (``Adapter.prepare``) before FFN access."""


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
    # RMS norms computing ``x_hat * (offset + weight)``: 1 for Gemma (weights stored around 0), else 0
    norm_weight_offset: float = 0.0
    # where the config leaves the FFN width unset: ``(config key, factor)``, width = factor * config[key]
    ffn_width_fallback: tuple[str, int] | None = None
    # a fused FFN layer: ``(path in the block, part names in output order)``, e.g. Phi-3's
    # ``("mlp.gate_up_proj", ("gate", "up"))``; ``prepare`` splits it, ``ffn_paths`` name its parts
    fused_ffn: tuple[str, tuple[str, ...]] | None = None

    # --- structure -------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_path(self.base(model), self.blocks_path)

    def n_blocks(self, model: nn.Module) -> int:
        return len(self.blocks(model))

    def ffn(self, block: nn.Module) -> FFN:
        if self.fused_ffn is not None and not isinstance(get_path(block, self.fused_ffn[0]), SplitLinear):
            raise UnpreparedModelError(
                f"this {self.family} block computes {'/'.join(self.fused_ffn[1])} with one fused layer "
                f"({self.fused_ffn[0]}); split it first with adapter_for(model).prepare(model) "
                "(minilib.models.load and load_model do)")
        return FFN(block, {k: v for k, v in self.ffn_paths.items() if v is not None})

    def ffns(self, model: nn.Module) -> list[FFN]:
        return [self.ffn(b) for b in self.blocks(model)]

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put a stock model of this family in the form the paths describe, in place, and return it:
        a fused FFN layer (``fused_ffn``) becomes a ``SplitLinear`` (same outputs, same state dict).
        Idempotent; nothing to do for families without fused FFN layers.  Every loader calls it."""
        if self.fused_ffn is not None:
            path, names = self.fused_ffn
            for b in self.blocks(model):
                m = get_path(b, path)
                if not isinstance(m, SplitLinear):
                    set_path(b, path, SplitLinear.split(m, names))
        return model

    def to_stock(self, model: nn.Module) -> nn.Module:
        """The inverse of ``prepare``, in place: every ``SplitLinear`` fused back into the plain
        ``nn.Linear`` the stock architecture has (for exports that others read module by module)."""
        if self.fused_ffn is not None:
            path = self.fused_ffn[0]
            for b in self.blocks(model):
                m = get_path(b, path)
                if isinstance(m, SplitLinear):
                    set_path(b, path, m.fused())
        return model

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
        g = w + self.norm_weight_offset  # Gemma scales by (1 + weight)
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
        if v is None and self.ffn_width_fallback is not None:  # GPT-2 leaves n_inner unset: 4 * hidden
            k, factor = self.ffn_width_fallback
            v = factor * getattr(config, k)
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
_PRE_NORMS = ("input_layernorm", "post_attention_layernorm")
_QK_NORMS = ("self_attn.q_norm", "self_attn.k_norm")
_GEMMA_NORMS = _PRE_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")


def _llama_like(family: str, model_types: tuple[str, ...], norm_paths=_PRE_NORMS, **kw) -> Adapter:
    """A decoder laid out as Llama: ``layers``, ``self_attn.{q,k,v,o}_proj``, a gated ``mlp``, ``norm``."""
    return Adapter(family, model_types, True, "layers", _GATED_FFN, _LLAMA_LIKE_ATTN, "norm", "intermediate_size",
                   norm_paths, **kw)


ADAPTERS: dict[str, Adapter] = {a.family: a for a in [
    Adapter("gpt2", ("gpt2",), True, "h",
            {"up": "mlp.c_fc", "gate": None, "act": "mlp.act", "down": "mlp.c_proj"},
            {"qkv": "attn.c_attn", "o": "attn.c_proj"}, "ln_f", "n_inner", ("ln_1", "ln_2"),
            max_pos_keys=("n_positions",), ffn_width_fallback=("n_embd", 4)),
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
    _llama_like("llama", ("llama",)),
    Adapter("phi", ("phi",), True, "layers",
            {"up": "mlp.fc1", "gate": None, "act": "mlp.activation_fn", "down": "mlp.fc2"},
            {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.dense"}, "final_layernorm", "intermediate_size", ("input_layernorm",)),
    _llama_like("gemma3", ("gemma3_text", "gemma3"), _GEMMA_NORMS + _QK_NORMS, norm_weight_offset=1.0),
    _llama_like("qwen2", ("qwen2",)),      # Qwen2 and Qwen2.5: Llama with q/k/v biases
    _llama_like("qwen3", ("qwen3",), _PRE_NORMS + _QK_NORMS),
    _llama_like("mistral", ("mistral",)),
    # Phi-3: fused q/k/v (as GPT-2's c_attn) and a fused gate_up_proj, split by ``prepare``
    Adapter("phi3", ("phi3",), True, "layers",
            {"up": "mlp.gate_up_proj.up", "gate": "mlp.gate_up_proj.gate", "act": "mlp.activation_fn",
             "down": "mlp.down_proj"},
            {"qkv": "self_attn.qkv_proj", "o": "self_attn.o_proj"}, "norm", "intermediate_size", _PRE_NORMS,
            fused_ffn=("mlp.gate_up_proj", ("gate", "up"))),
    _llama_like("gemma2", ("gemma2",), _GEMMA_NORMS, norm_weight_offset=1.0),
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
