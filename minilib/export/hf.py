"""Export any pruned model as a plain Hugging Face folder that stock transformers loads.

    info = export_hf(model, tokenizer, "out/")       # save_pretrained + tokenizer, atomically
    AutoModelForCausalLM.from_pretrained("out/")      # no minilib needed to read it

**FFN widths.**  Stock configs of our families hold one FFN width (``Adapter.ffn_config_key``:
``intermediate_size``, ``n_inner``, ``ffn_dim``); no family we support takes per-layer widths in
transformers 5.x (only other families do, e.g. Gemma-3n's list-valued ``intermediate_size``).  A
model whose FFNs were pruned to different widths is therefore exported with every FFN padded to the
widest kept width: zero rows in ``up`` (and ``gate``) and their biases, zero columns in ``down``.
A padded neuron contributes exactly 0 in every family, since its ``down`` column is zero.  The
report says how many parameters the padding costs.  Fused FFN layers that minilib holds split
(Phi-3's ``gate_up_proj``, ``Adapter.prepare``) are fused back (``Adapter.to_stock``): gate rows,
then up rows, each padded, so the exported module tree is the stock one.

**Vocabulary.**  A vocabulary-pruned model (``RemappedTokenizer``) gets a real tokenizer for its new
ids: ``remap_tokenizer`` rebuilds the ``tokenizers`` pipeline (normalizer, pre-tokenizer, decoder,
post-processor, added tokens) with the kept tokens renumbered.  For BPE it keeps the merges whose
two parts and result are all kept, and turns on ``ignore_merges`` (a word that is itself a kept
token becomes that token).  What holds:

* the new tokenizer only emits ids the model has;
* byte-level BPE that keeps every byte symbol of the original vocabulary (``mask_vocab`` keeps
  them) encodes every text the original encodes, and ``decode(encode(text)) == text``
  (``lossless``); if byte symbols were dropped, characters without a symbol become the fallback
  token instead of silently disappearing;
* a word whose original tokens are all kept and can still be built by the kept merges
  (``reachable``) gets exactly ``RemappedTokenizer``'s ids (the kept merges are a subset in the
  same order, so BPE applies the same merges), and so does a word that is one kept token (with
  ``ignore_merges`` a word that is itself a kept token is emitted whole, even in the rare case where
  the original BPE would have split it);
* a kept token whose original merge path goes through a pruned intermediate token cannot be built
  (``unreachable_tokens`` in the report): a word that used it *inside a longer word* is spelt with
  other kept tokens, so the ids differ from ``RemappedTokenizer``'s while the text is kept.  On
  real text that is under 1% of the words ``RemappedTokenizer`` encodes without fallback
  (``benchmarks/bench_export.py``; the measured shares are in docs/export.md);
* WordPiece keeps its greedy longest match, so words whose pieces are all kept get the same ids.

An exact stock tokenizer for every input is impossible: BPE can only build a token through its
intermediate tokens, and a pruned intermediate has no row in the model (an id for it would be an
id the model does not have).  Where ``RemappedTokenizer`` falls back (bytes or the unknown token),
the new tokenizer usually finds longer kept tokens instead, so the two differ there by design.

The folder carries ``minilib_export.json`` (the report) and ``.minilib-manifest.json`` (the size and
sha256 of every file, as ``minilib.models.save_model`` writes it).  An export replaces only the files
that an export's manifest says it wrote (``minilib.io.atomic_dir``): a folder holding any other file
raises ``DestinationError`` listing them (with ``overwrite=True`` they are kept, never deleted).
``minilib.models.load(path)`` checks every file against the manifest before loading an export.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from minilib.io import atomic_dir, check_destination
from minilib.models.adapters import adapter_for
from minilib.models.linear import in_features, out_features, resized_like, weight_oi
from minilib.models.saving import check_hashes, owned_by, write_hashes
from minilib.models.surgery import ffn_widths
from minilib.models.tokenizers import bytes_to_unicode
from minilib.models.vocab import CONFIG_KEY, RemappedTokenizer, _has_component

EXPORT_FILE = "minilib_export.json"
EXPORT = "export"  # what wrote the folder, in its manifest
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class ExportError(ValueError):
    """The model or tokenizer cannot be exported as asked (nothing was written)."""


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``export_hf`` / ``export_compressed``."""
    return (Path(path) / EXPORT_FILE).is_file()


# --- the model ------------------------------------------------------------------------------------

def _padded(layer: nn.Module, out_f: int, in_f: int) -> nn.Module:
    """A copy of ``layer`` grown to ``[out_f, in_f]`` with zeros (weight and bias) in the new places."""
    o, i = out_features(layer), in_features(layer)
    new = resized_like(layer, out_f, in_f)
    with torch.no_grad():
        w = weight_oi(new)
        w.zero_()
        w[:o, :i] = weight_oi(layer)
        if layer.bias is not None:
            new.bias.zero_()
            new.bias[:o] = layer.bias
    new.train(layer.training)
    return new


def hf_model(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of ``model`` that its config describes exactly, and what it took.

    Every FFN is padded with zero neurons to the widest kept width, the config's FFN width set to
    it, minilib's own config keys dropped (the exported tokenizer speaks the model's ids), and fused
    FFN layers fused back (``Adapter.to_stock``: the copy has the stock module tree; its FFNs are
    read again after ``prepare``).  ``model`` is not changed.  Returns ``(copy, {"ffn_widths",
    "ffn_width", "padding_neurons", "padding_params"})``."""
    adapter = adapter_for(model)
    widths = ffn_widths(model, adapter)
    width = max(widths)
    saving = _ffn_saving(model, adapter, widths)
    out = copy.deepcopy(model)
    pad_params = 0
    for ffn, w in zip(adapter.ffns(out), widths):
        if w == width:
            continue
        before = sum(p.numel() for p in ffn.block.parameters())
        ffn.replace("up", _padded(ffn.up, width, in_features(ffn.up)))
        if ffn.gate is not None:
            ffn.replace("gate", _padded(ffn.gate, width, in_features(ffn.gate)))
        ffn.replace("down", _padded(ffn.down, out_features(ffn.down), width))
        pad_params += sum(p.numel() for p in ffn.block.parameters()) - before
    cfg = out.config
    if width != adapter.ffn_width(cfg):
        setattr(cfg, adapter.ffn_config_key, width)
    if hasattr(cfg, CONFIG_KEY):
        delattr(cfg, CONFIG_KEY)
    adapter.to_stock(out)
    _check_config_builds(out)
    saving["ffn_params_removed_exported"] = saving["ffn_params_removed"] - pad_params
    saving["saving"] = _saving_sentence(saving, widths, pad_params)
    return out, {"ffn_widths": widths, "ffn_width": width,
                 "padding_neurons": sum(width - w for w in widths), "padding_params": pad_params, **saving}


def _neuron_params(ffn) -> int:
    """Parameters one FFN neuron holds: its ``up`` (and ``gate``) row with their bias entries and its
    ``down`` column."""
    n = 0
    for lin in (ffn.up, ffn.gate):
        if lin is not None:
            n += in_features(lin) + (1 if getattr(lin, "bias", None) is not None else 0)
    return n + out_features(ffn.down)


def _ffn_saving(model: nn.Module, adapter, widths: list[int]) -> dict:
    """What FFN pruning removed against the width the model's config states (the unpruned width,
    which ``remove_neurons`` leaves in the config), in neurons and parameters."""
    full = adapter.ffn_width(model.config)
    removed = [max(0, full - w) for w in widths]
    params = sum(r * _neuron_params(f) for r, f in zip(removed, adapter.ffns(model)))
    return {"ffn_width_config": int(full), "ffn_neurons_removed": int(sum(removed)), "ffn_params_removed": int(params)}


def _saving_sentence(s: dict, widths: list[int], pad: int) -> str:
    """What the exported folder saves, in one sentence (``minilib_export.json``'s ``saving``)."""
    if not s["ffn_params_removed"]:
        return "no FFN neuron was removed: the folder holds the model's full FFN width"
    kept = s["ffn_params_removed_exported"]
    if not pad:
        return (f"every FFN keeps {widths[0]} of {s['ffn_width_config']} neurons: the folder keeps the whole saving "
                f"of {s['ffn_params_removed']:,} FFN parameters")
    return (f"FFN widths {min(widths)}-{max(widths)} of {s['ffn_width_config']} differ between layers, and the stock "
            f"config holds one width: {pad:,} zero padding parameters come back, so the folder keeps "
            f"{kept:,} of the {s['ffn_params_removed']:,} FFN parameters the pruning removed "
            f"({kept / s['ffn_params_removed']:.0%}); prune with equal widths (remove_neurons(..., equal_widths=True), "
            "the contextual study's ffn_widths='equal') to keep all of it")


def _check_config_builds(model: nn.Module) -> None:
    """Raise ``ExportError`` unless ``type(model)(model.config)`` has exactly the model's tensors."""
    with torch.device("meta"):
        fresh = type(model)(model.config)
    ref = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    cur = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bad = sorted(k for k in set(ref) | set(cur) if ref.get(k) != cur.get(k))
    if bad:
        raise ExportError(f"the config does not describe this {type(model).__name__}: {len(bad)} tensors differ, "
                          f"e.g. {[(k, cur.get(k), ref.get(k)) for k in bad[:3]]} (model, config)")


# --- the tokenizer --------------------------------------------------------------------------------

def _remap_processor(proc, o2n: dict[int, int]):
    """The post-processor with its special-token ids renumbered (a pruned one raises)."""
    if proc is None:
        return None

    def new_id(i, tok):
        if i not in o2n:
            raise ExportError(f"the post-processor adds {tok!r} (id {i}), which was pruned from the vocabulary")
        return o2n[i]

    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for name, st in proc.get("special_tokens", {}).items():
            st["ids"] = [new_id(i, name) for i in st["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for k in ("sep", "cls"):
            tok, i = proc[k]
            proc[k] = [tok, new_id(i, tok)]
    elif kind == "Sequence":
        proc["processors"] = [_remap_processor(p, o2n) for p in proc["processors"]]
    elif kind != "ByteLevel":
        raise ExportError(f"post-processor {kind!r} is not supported by the tokenizer export")
    return proc


def _bpe_merges(model: dict, vocab: dict[str, int]) -> tuple[list, dict]:
    """The merges whose parts and result are all in ``vocab`` (original order), and reachability."""
    pairs = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    kept = [[a, b] for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
    produced = {a + b for a, b in pairs}
    reachable = {t for t in vocab if t not in produced}  # base symbols: no merge makes them
    changed = True
    while changed:  # merges come in rank order, so one pass normally suffices
        changed = False
        for a, b in kept:
            ab = a + b
            if ab not in reachable and a in reachable and b in reachable:
                reachable.add(ab)
                changed = True
    unreachable = sorted(t for t in vocab if t not in reachable)
    return kept, {"merges_before": len(pairs), "merges_after": len(kept),
                  "unreachable_tokens": len(unreachable), "unreachable_examples": unreachable[:10],
                  "reachable": reachable}


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: a tokenizer's JSON holds ~10^5 small objects, and building
    lists beside them triggers full collections that cost 10x the work itself."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def remap_tokenizer(rtok: RemappedTokenizer):
    """A stock ``PreTrainedTokenizerFast`` whose ids are the pruned model's; see the module docstring
    for what it guarantees.  Returns ``(tokenizer, info)``; ``info["reachable"]`` is the set of kept
    token strings that the kept merges can still build (BPE only)."""
    with _gc_paused():
        return _remap_tokenizer(rtok)


def _remap_tokenizer(rtok: RemappedTokenizer):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    base, vmap = rtok.base, rtok.vmap
    backend = getattr(base, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{type(base).__name__} is not backed by the tokenizers library; the export needs a "
                          "fast tokenizer to rebuild")
    state = json.loads(backend.to_str())
    o2n = {old: new for new, old in enumerate(vmap.kept)}
    model = state["model"]
    kind = model.get("type")
    if kind not in ("BPE", "WordPiece", "WordLevel"):
        raise ExportError(f"tokenizer model {kind!r} is not supported (BPE, WordPiece, WordLevel are)")
    old_vocab = model["vocab"]
    vocab = {t: o2n[i] for t, i in old_vocab.items() if i in o2n}
    info = {"model": kind, "vocab_before": len(model["vocab"]), "vocab_after": len(vocab)}
    unk = model.get("unk_token")
    if unk is not None and unk not in vocab:
        raise ExportError(f"the tokenizer's unknown token {unk!r} was pruned; keep it to export the tokenizer")
    if kind == "BPE":
        model["merges"], extra = _bpe_merges(model, vocab)
        model["ignore_merges"] = True  # a word that is a kept token is that token, whatever merges are gone
        info.update(extra)
    model["vocab"] = vocab
    dropped = []
    added = []
    for t in state.get("added_tokens") or []:
        if t["id"] in o2n:
            added.append({**t, "id": o2n[t["id"]]})
        else:
            dropped.append(t["content"])
    state["added_tokens"] = added
    state["post_processor"] = _remap_processor(state.get("post_processor"), o2n)
    if state.get("padding"):
        pid = state["padding"].get("pad_id")
        state["padding"] = {**state["padding"], "pad_id": o2n[pid]} if pid in o2n else None
    byte_level = _has_component(state.get("pre_tokenizer"), "ByteLevel")
    if byte_level:  # every byte symbol the original tokenizer had is still there
        symbols = [c for c in bytes_to_unicode().values() if c in old_vocab]
    elif kind == "BPE" and model.get("byte_fallback"):
        symbols = [t for t in (f"<0x{b:02X}>" for b in range(256)) if t in old_vocab]
    else:
        symbols = None
    missing = None if symbols is None else [c for c in symbols if c not in vocab]
    lossless = missing is not None and not missing
    if kind == "BPE" and not lossless and model.get("unk_token") is None:
        # without an unknown token BPE silently drops characters it has no symbol for
        model["unk_token"] = base.convert_ids_to_tokens(vmap.kept[vmap.fallback_id])
    info.update(byte_level=byte_level, lossless=lossless, missing_symbols=None if missing is None else len(missing),
                unk_token=model.get("unk_token"), dropped_added_tokens=dropped)

    specials = {}
    for name in SPECIAL_NAMES:
        tok = getattr(base, name, None)
        if tok is None:
            continue
        i = base.convert_tokens_to_ids(str(tok))
        if i in o2n:
            specials[name] = str(tok)
        else:
            dropped.append(str(tok))
    new = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)), model_max_length=base.model_max_length,
        padding_side=base.padding_side, truncation_side=base.truncation_side,
        clean_up_tokenization_spaces=getattr(base, "clean_up_tokenization_spaces", False), **specials)
    return new, info


def hf_tokenizer(model: nn.Module, tokenizer):
    """The tokenizer to save with ``model``: a ``RemappedTokenizer`` becomes a stock tokenizer for the
    new ids (``remap_tokenizer``), any other is saved as it is.  Returns ``(tokenizer, info)``."""
    if isinstance(tokenizer, RemappedTokenizer):
        tokenizer.check_model(model)
        tok, info = remap_tokenizer(tokenizer)
        return tok, {k: v for k, v in info.items() if k != "reachable"}
    if getattr(model.config, CONFIG_KEY, None) is not None:
        raise ExportError("this model's vocabulary was pruned; export it with its RemappedTokenizer (the base "
                          "tokenizer would give it ids it does not have)")
    if tokenizer is None:
        return None, {"model": None}
    return tokenizer, {"model": "unchanged", "vocab_after": len(tokenizer)}


# --- the folder -----------------------------------------------------------------------------------

def folder_bytes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes on disk: ``{"weights": safetensors files, "total": every file}``."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return {"weights": sum(p.stat().st_size for p in files if p.suffix == ".safetensors"),
            "total": sum(p.stat().st_size for p in files)}


def check_overwrite(path: str | os.PathLike, overwrite: bool) -> None:
    """Fail before any work if ``path`` holds a file that no export wrote (unless ``overwrite``: kept)."""
    check_destination(path, owned_by(EXPORT), overwrite, what="a minilib export")


def check_export(path: str | os.PathLike) -> None:
    """Raise ``minilib.models.saving.CorruptModelError`` naming the file unless every file of the export
    at ``path`` still has the size and sha256 recorded when it was written."""
    check_hashes(path, EXPORT, "exported model")


class TokenizerWarning(UserWarning):
    """Stock ``AutoTokenizer`` reads an exported tokenizer as something else than what was written."""


PROBE = ("Once upon a time, the 3 quick brown foxes jumped over 42 lazy dogs (1234567 of them). Naïve "
         "façades, Ünïcödé, emoji \U0001F600 and tabs\t.\n")


def auto_tokenizer_check(folder: str | os.PathLike, tokenizer, n_tokens: int = 400) -> dict:
    """What stock ``AutoTokenizer.from_pretrained(folder)`` makes of the tokenizer saved there:
    ``{"class", "same_ids"}``, ``same_ids`` whether it gives ``tokenizer``'s ids on a probe (a fixed
    text with digits, accents and emoji, then ``n_tokens`` tokens spread over the vocabulary, decoded).

    transformers 5.x rebuilds the tokenizer of the model types it pins to their own class (``qwen2``:
    ``Qwen2Tokenizer``) from the vocabulary and merges alone, with its own pre-tokenizer and without
    ``ignore_merges``: other ids than the saved ``tokenizer.json`` gives.  ``PreTrainedTokenizerFast
    .from_pretrained(folder)`` reads that file as written (and ``minilib.models.load`` reads the class
    that saved it)."""
    from transformers import AutoTokenizer
    auto = AutoTokenizer.from_pretrained(folder)
    step = max(1, len(tokenizer) // n_tokens)
    text = PROBE + "".join(tokenizer.decode([i], skip_special_tokens=True) for i in range(0, len(tokenizer), step))
    same = auto(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"class": type(auto).__name__, "same_ids": bool(same)}


def write_folder(path: str | os.PathLike, model: nn.Module, tokenizer, report: dict, overwrite: bool,
                 after_save=None) -> dict:
    """``save_pretrained`` of ``model`` and ``tokenizer`` into a staging folder, ``after_save(stage)``,
    then the report (``minilib_export.json``); the folder replaces ``path`` in one rename.  Whether
    stock ``AutoTokenizer`` reads the tokenizer back as written is checked (``auto_tokenizer_check``,
    ``report["tokenizer"]["auto_tokenizer"]``); where it does not, ``TokenizerWarning`` says so."""
    with atomic_dir(path, owned=owned_by(EXPORT), overwrite=overwrite, what="a minilib export",
                    seal=lambda stage, kept: write_hashes(stage, EXPORT, kept)) as stage:
        model.save_pretrained(stage)
        if tokenizer is not None:
            tokenizer.save_pretrained(stage)
            auto = auto_tokenizer_check(stage, tokenizer)
            report.setdefault("tokenizer", {})["auto_tokenizer"] = auto
            if not auto["same_ids"]:
                warnings.warn(f"stock AutoTokenizer.from_pretrained({str(path)!r}) reads the exported tokenizer as "
                              f"{auto['class']}, which gives other ids than the tokenizer.json written there "
                              f"(transformers rebuilds the tokenizer of model type {model.config.model_type!r} from "
                              "its vocabulary and merges); read it with PreTrainedTokenizerFast.from_pretrained(path) "
                              "(minilib.models.load does)", TokenizerWarning, stacklevel=3)
        if after_save is not None:
            after_save(stage)
        report["bytes"] = folder_bytes(stage)
        (stage / EXPORT_FILE).write_text(json.dumps(report, indent=1, default=str))
    return report


def export_hf(model: nn.Module, tokenizer, path: str | os.PathLike, overwrite: bool = False) -> dict:
    """Save ``model`` (any family, FFN- and/or vocabulary-pruned) and its tokenizer as a plain Hugging
    Face folder that ``AutoModel*.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
    load without minilib.  Returns the report (also written to ``minilib_export.json``): FFN widths,
    the config width, padding neurons and parameters, the tokenizer's vocabulary and guarantees,
    parameter count and bytes on disk."""
    check_overwrite(path, overwrite)
    hf, ffn = hf_model(model)
    tok, tok_info = hf_tokenizer(model, tokenizer)
    report = {"format": "hf", "path": str(path), "family": adapter_for(model).family,
              "class": type(model).__name__, **ffn, "vocab_size": int(hf.config.vocab_size),
              "params": sum(p.numel() for p in hf.parameters()), "tokenizer": tok_info}
    return write_folder(path, hf, tok, report, overwrite)
