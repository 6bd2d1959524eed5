"""Tiny randomly-initialised models of every supported family, for unit tests.

Each is seeded (the same weights every time), has 2 blocks, hidden size 64 and an FFN of 128
neurons, and uses a real tokenizer: GPT-2's BPE for the decoders, MiniLM's WordPiece for BERT.
``TINY`` names one per family (tests take their family lists from it), ``TINY_DECODERS`` all but BERT.
"""

from __future__ import annotations

import torch

HIDDEN, FFN, LAYERS, HEADS = 64, 128, 2, 4


def _configs(vocab: int, pad: int):
    from transformers import (BertConfig, Gemma2Config, Gemma3TextConfig, GPT2Config, LlamaConfig, MistralConfig,
                              OPTConfig, Phi3Config, PhiConfig, Qwen2Config, Qwen3Config)
    common = dict(vocab_size=vocab, pad_token_id=pad)
    decoder = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                   max_position_embeddings=256, bos_token_id=50256, eos_token_id=50256, **common)
    return {
        "tiny-gpt2": lambda: GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                                        n_positions=256, bos_token_id=50256, eos_token_id=50256, **common),
        "tiny-bert": lambda: BertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                        intermediate_size=FFN, max_position_embeddings=256, **common),
        "tiny-opt": lambda: OPTConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      ffn_dim=FFN, max_position_embeddings=256, word_embed_proj_dim=HIDDEN,
                                      bos_token_id=50256, eos_token_id=50256, **common),
        "tiny-llama": lambda: LlamaConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                          num_key_value_heads=2, intermediate_size=FFN, max_position_embeddings=256,
                                          tie_word_embeddings=True, bos_token_id=50256, eos_token_id=50256,
                                          **common),
        "tiny-phi": lambda: PhiConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                      intermediate_size=FFN, max_position_embeddings=256, partial_rotary_factor=0.5,
                                      bos_token_id=50256, eos_token_id=50256, **common),
        "tiny-gemma3": lambda: Gemma3TextConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                num_attention_heads=HEADS, num_key_value_heads=1, head_dim=16,
                                                intermediate_size=FFN, max_position_embeddings=256,
                                                sliding_window=64, bos_token_id=50256, eos_token_id=50256,
                                                **common),
        # Qwen2/2.5: Llama with q/k/v biases (tied embeddings, as Qwen2.5-0.5B)
        "tiny-qwen2": lambda: Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True, **decoder),
        # Qwen3: per-head q/k RMS norms, an explicit head_dim
        "tiny-qwen3": lambda: Qwen3Config(num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, **decoder),
        # Mistral: sliding-window attention over 64 positions
        "tiny-mistral": lambda: MistralConfig(num_key_value_heads=2, sliding_window=64, tie_word_embeddings=True,
                                              **decoder),
        # Phi-3: fused qkv_proj and gate_up_proj, untied head
        "tiny-phi3": lambda: Phi3Config(num_key_value_heads=2, tie_word_embeddings=False, **decoder),
        # Gemma-2: four norms per block, (1 + weight) norms, logit and attention soft-capping, scaled
        # embedding, sliding window on every other layer
        "tiny-gemma2": lambda: Gemma2Config(num_key_value_heads=1, head_dim=16, sliding_window=64, **decoder),
    }


# the real tokenizer each tiny model uses: MiniLM's WordPiece for the encoder, GPT-2's BPE otherwise
TOKENIZER = {"tiny-gpt2": "gpt2", "tiny-bert": "wordpiece", "tiny-opt": "gpt2", "tiny-llama": "gpt2",
             "tiny-phi": "gpt2", "tiny-gemma3": "gpt2", "tiny-qwen2": "gpt2", "tiny-qwen3": "gpt2",
             "tiny-mistral": "gpt2", "tiny-phi3": "gpt2", "tiny-gemma2": "gpt2"}
TINY = tuple(TOKENIZER)                                      # one per supported family
TINY_DECODERS = tuple(n for n in TINY if TOKENIZER[n] != "wordpiece")   # all but the encoder (tiny-bert)


def tiny_tokenizer(name: str):
    from transformers import AutoTokenizer

    from minilib import assets
    from minilib.models.tokenizers import gpt2_tokenizer
    if TOKENIZER[name] == "wordpiece":
        return AutoTokenizer.from_pretrained(assets.fetch("minilm-l6"))
    tok = gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    return tok


def tiny_model(name: str, task: str | None = None, num_labels: int | None = None, seed: int = 0):
    """``(model, tokenizer)`` for a tiny random model; the same seed gives the same weights."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    from minilib.models.adapters import adapter_for
    if name not in TINY:
        raise ValueError(f"unknown tiny model {name!r}; choose one of {TINY}")
    tok = tiny_tokenizer(name)
    config = _configs(len(tok), tok.pad_token_id)[name]()
    if task is None:
        task = "causal-lm" if adapter_for(config).is_decoder else "base"
    if task == "sequence-classification":
        config.num_labels = num_labels or 2
        cls = AutoModelForSequenceClassification
    else:
        cls = {"causal-lm": AutoModelForCausalLM, "base": AutoModel}.get(task)
        if cls is None:
            raise ValueError(f"unknown task {task!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config(config, dtype=torch.float32)
    return adapter_for(model).prepare(model).eval(), tok
