"""Export sparse, 2:4 and sparse+quantized models in the compressed-tensors format.

    info = export_compressed(model, tok, "out/", report)          # report: the PruneReport (wbits, N:M)
    model, tok = load_compressed("out/")                             # read back any of these folders

**What the ecosystem reads today** (compressed-tensors 0.20, transformers 5.23, vLLM >= 0.19.1):
compressed-tensors 0.15 removed its sparsity compressors, vLLM 0.19.1 removed its 2:4 sparse
kernels and transformers now requires compressed-tensors >= 0.15 and ignores ``sparsity_config``.
So the formats are:

* ``sparse_format="dense"`` (default): sparse weights stored as they are (zeros included), with
  the block linear layers quantized when ``wbits < 16``:
    - ``quant_format="pack-quantized"`` (default): k-bit codes packed eight to an int32 (4-bit),
      per-channel asymmetric scales and zero points -- the compressed-tensors W4A16_ASYM layout
      that vLLM and llm-compressor use.  transformers 5.23 loads it with
      ``from_pretrained(path, quantization_config=CompressedTensorsConfig(dequantize=True))``; its
      default path fails on asymmetric packed zero points (a compressed-tensors 0.20 bug: the
      zero point is not packed when the model is built on the meta device);
    - ``quant_format="naive-quantized"``: the same codes stored one per int8, which plain
      ``from_pretrained(path)`` loads;
* ``sparse_format="sparse-bitmask"`` / ``"sparse-24-bitmask"`` (no quantization): the bitmask
  layouts of compressed-tensors <= 0.14 (nonzero values + a packed bitmask, per weight).  Stock
  transformers 5.x ignores ``sparsity_config`` and would load such layers freshly initialised, so the
  weights go to ``model.<format>.safetensors`` (``legacy_weights_name``) and ``from_pretrained``
  refuses the folder; ``load_compressed`` reads it.  Here for the checkpoint size they buy.

**Exact quantized weights.**  minilib stores quantized weights dequantized: each row is
``scale * (q - zero)`` with ``q`` in ``[0, 2**wbits)`` (``minilib.prune.quant``, per-channel
asymmetric min-max).  ``grid_of`` recovers, per row, an fp32 scale and an integer zero point that
reproduce every stored value bit for bit; compressed-tensors then stores codes ``q - 2**(wbits-1)``
and zero points ``zero - 2**(wbits-1)`` (its signed convention) and dequantizes
``(code - zero_point) * scale`` -- the same products.  Every export decompresses each layer again
with compressed-tensors and checks it equals the model's weight exactly; otherwise it raises and
writes nothing.

Only ``nn.Linear`` layers of the blocks are compressed (compressed-tensors targets ``Linear``);
GPT-2's ``Conv1D`` layers are refused, the embeddings and heads stay dense.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from minilib.export.hf import EXPORT_FILE, ExportError, check_overwrite, hf_model, hf_tokenizer, write_folder
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi
from minilib.prune.masks import is_nm
from minilib.prune.quant import check_wbits

QUANT_FORMATS = ("pack-quantized", "naive-quantized")
SPARSE_FORMATS = ("dense", "sparse-bitmask", "sparse-24-bitmask")
LEGACY_VERSION = "0.14.0.1"  # the last compressed-tensors release that reads the bitmask layouts


# --- the quantization grid --------------------------------------------------------------------------

@torch.no_grad()
def grid_of(weight: torch.Tensor, wbits: int, tol: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``(scale [rows, 1] fp32, zero [rows, 1] long, codes [rows, cols] long)`` with
    ``scale * (codes - zero) == weight`` exactly in fp32 and codes, zero in ``[0, 2**wbits)``.

    The rows of ``weight`` must lie on a per-row grid of ``2**wbits`` levels that holds 0 (as
    ``minilib.prune.quant`` makes them; pruned zeros are on it).  The grid step is found from the
    gaps between the row's distinct values, then the exact fp32 scale from its largest value.
    Raises ``ExportError`` naming the rows that are on no such grid."""
    wbits = check_wbits(wbits)
    maxq = 2 ** wbits - 1
    w = weight.detach().float().cpu()
    rows = w.shape[0]
    v, _ = torch.sort(torch.cat([w, torch.zeros(rows, 1)], 1), dim=1)  # 0 is always a level
    span = v[:, -1] - v[:, 0]
    gaps = v.diff(dim=1)
    real = gaps > span[:, None] * 1e-6
    gmin = torch.where(real, gaps, torch.full_like(gaps, float("inf"))).amin(1)
    gmin = torch.where(real.any(1), gmin, torch.ones_like(gmin))  # all-zero rows: any step
    step = torch.ones(rows)
    found = torch.zeros(rows, dtype=torch.bool)
    for j in range(1, maxq + 1):  # the grid step divides the smallest gap
        cand = gmin / j
        r = gaps / cand[:, None]
        ok = (((r - r.round()).abs() <= tol) | ~real).all(1) & (span / cand <= maxq + 0.5) & ~found
        step = torch.where(ok, cand, step)
        found |= ok
        if bool(found.all()):
            break
    k = torch.round(w / step[:, None])
    if not bool(found.all()) or bool(((k.amax(1).clamp_min(0) - k.amin(1).clamp_max(0)) > maxq).any()):
        bad = (~found).nonzero().flatten().tolist()
        raise ExportError(f"rows {bad[:5]} are not on a {wbits}-bit per-channel grid (was the model quantized "
                          f"with wbits={wbits}?)")
    # the exact fp32 scale: the largest value over its level, give or take a few ulps
    idx = k.abs().argmax(1, keepdim=True)
    km = k.gather(1, idx)[:, 0].double()
    base = torch.where(km != 0, (w.gather(1, idx)[:, 0].double() / km).float(), step)
    scale = base.clone()
    done = torch.zeros(rows, dtype=torch.bool)
    for direction in (float("inf"), float("-inf")):
        c = base.clone()
        for _ in range(8):
            good = (c[:, None] * k == w).all(1) & ~done
            scale = torch.where(good, c, scale)
            done |= good
            c = torch.nextafter(c, torch.full_like(c, direction))
    if not bool(done.all()):
        bad = (~done).nonzero().flatten().tolist()
        raise ExportError(f"rows {bad[:5]}: no fp32 scale reproduces the stored weights exactly (export an fp32 "
                          "model)")
    zero = (-k.amin(1, keepdim=True)).clamp_min(0).long()
    return scale[:, None], zero, k.long() + zero


# --- the legacy bitmask layouts (compressed-tensors <= 0.14) ------------------------------------------

def bitmask_encode(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sparse-bitmask``: the nonzeros in row-major order, a bitmask packed along rows (little-endian
    bits), the offset of each row's first value, and the shape."""
    from compressed_tensors.utils import pack_bitmasks
    w = w.detach().cpu().contiguous()
    nz = w != 0
    counts = nz.sum(-1)
    return {"shape": torch.tensor(list(w.shape)), "compressed": w[nz], "bitmask": pack_bitmasks(nz),
            "row_offsets": torch.cumsum(counts, 0) - counts}


def bitmask_decode(d: dict[str, torch.Tensor]) -> torch.Tensor:
    from compressed_tensors.utils import unpack_bitmasks
    shape = [int(x) for x in d["shape"].flatten()]
    out = torch.zeros(shape, dtype=d["compressed"].dtype)
    out[unpack_bitmasks(d["bitmask"], shape)] = d["compressed"]
    return out


def bitmask24_encode(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sparse-24-bitmask``: two kept values of every 4 inputs (``[rows, cols / 2]``), their packed
    bitmask and the shape (as a column).  ``w`` must hold at least 2 zeros in every 4 inputs."""
    from compressed_tensors.utils import pack_bitmasks
    w = w.detach().cpu().contiguous()
    rows, cols = w.shape
    g = w.reshape(rows, cols // 4, 4)
    prefer = (g != 0).float() - torch.arange(4) * 1e-3  # nonzeros first, then the earliest zeros
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, prefer.topk(2, dim=-1).indices, True)
    mask = mask.reshape(rows, cols)
    return {"shape": torch.tensor([rows, cols]).reshape(-1, 1), "compressed": w[mask].reshape(rows, cols // 2),
            "bitmask": pack_bitmasks(mask)}


def bitmask24_decode(d: dict[str, torch.Tensor]) -> torch.Tensor:
    from compressed_tensors.utils import unpack_bitmasks
    shape = [int(x) for x in d["shape"].flatten()]
    out = torch.zeros(shape, dtype=d["compressed"].dtype)
    out[unpack_bitmasks(d["bitmask"], shape)] = d["compressed"].flatten()
    return out


_LEGACY = {  # format: (encoder, decoder, the names' prefix drops ".weight")
    "sparse-bitmask": (bitmask_encode, bitmask_decode, False),
    "sparse-24-bitmask": (bitmask24_encode, bitmask24_decode, True),
}


def _legacy_keys(weight_key: str, fmt: str) -> str:
    return weight_key[: -len(".weight")] if _LEGACY[fmt][2] else weight_key


def legacy_weights_name(fmt: str) -> str:
    """The weights file of a bitmask folder: ``model.<fmt>.safetensors``, not ``model.safetensors``,
    so that stock transformers 5.x, which ignores ``sparsity_config``, refuses the folder ("no file
    named model.safetensors") instead of loading the compressed layers freshly initialised; a
    sharded folder's index is ``model.<fmt>.safetensors.index.json`` likewise."""
    return f"model.{fmt}.safetensors"


def _rewrite_legacy(stage: Path, weight_keys: set[str], fmt: str) -> dict:
    """Replace each weight in ``weight_keys`` by its ``fmt`` tensors in every safetensors file of
    ``stage`` (and in the shard index), then give the weights file (or the index) the name of
    ``legacy_weights_name``.  Returns ``{"tensors": n, "max_abs_diff": 0.0}``."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    encode, decode, _ = _LEGACY[fmt]
    done, worst = 0, 0.0
    index_file = stage / "model.safetensors.index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else None
    for f in sorted(stage.glob("*.safetensors")):
        out = {}
        with safe_open(str(f), framework="pt") as fh:
            meta = fh.metadata()
            for k in fh.keys():
                t = fh.get_tensor(k)
                if k not in weight_keys:
                    out[k] = t
                    continue
                enc = encode(t)
                worst = max(worst, float((decode(enc) - t).abs().max()) if t.numel() else 0.0)
                prefix = _legacy_keys(k, fmt)
                for part, v in enc.items():
                    out[f"{prefix}.{part}"] = v.contiguous()
                    if index is not None:
                        index["weight_map"][f"{prefix}.{part}"] = f.name
                if index is not None:
                    index["weight_map"].pop(k, None)
                done += 1
        save_file(out, str(f), metadata=meta)
    if index is not None:
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True))
    if done != len(weight_keys):
        raise ExportError(f"found {done} of the {len(weight_keys)} weights to compress in the saved files")
    if worst != 0.0:
        raise ExportError(f"{fmt}: decoding does not give the weights back (max |diff| {worst})")
    name = legacy_weights_name(fmt)
    if index is not None:
        index_file.rename(stage / f"{name}.index.json")
    else:
        (stage / "model.safetensors").rename(stage / name)
    return {"tensors": done, "max_abs_diff": worst}


# --- the export -------------------------------------------------------------------------------------

def _targets(model: nn.Module) -> dict[str, nn.Module]:
    """The linear layers of every block, by full module name (what ``prune_model`` prunes)."""
    adapter = adapter_for(model)
    wanted = {id(m) for b in adapter.blocks(model) for m in adapter.linear_layers(b).values()}
    return {n: m for n, m in model.named_modules() if id(m) in wanted}


def _resolve_wbits(report, wbits: int | None) -> int:
    got = None
    if report is not None:
        got = getattr(report, "wbits", None)
        if got is None and hasattr(report, "target"):
            got = report.target.get("wbits")
        if got is None and isinstance(report, dict):
            got = report.get("wbits", report.get("target_wbits"))
    if wbits is not None and got is not None and int(wbits) != int(got):
        raise ExportError(f"wbits={wbits} contradicts the report, which says the model was quantized to {got} bits")
    return check_wbits(int(wbits if wbits is not None else (got if got is not None else 16)))


def _quantize(model: nn.Module, targets: dict[str, nn.Module], wbits: int, quant_format: str):
    """Attach per-channel asymmetric ``wbits`` schemes whose scales and zero points reproduce the
    weights exactly, compress in place with compressed-tensors, check by decompressing.  Returns
    the ``ModelCompressor`` (its ``update_config`` writes the config)."""
    from compressed_tensors.compressors import BaseCompressor, ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    offset = 2 ** (wbits - 1)  # compressed-tensors stores signed codes in [-offset, offset)
    ignore = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in targets)
    args = QuantizationArgs(num_bits=wbits, type="int", symmetric=False, strategy="channel")
    scheme = QuantizationScheme(targets=["Linear"], weights=args, format=quant_format)
    config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore, format=quant_format)
    dense = {n: m.weight.detach().clone() for n, m in targets.items()}  # nn.Linear: [out, in]
    grids = {n: grid_of(w, wbits) for n, w in dense.items()}  # raises before anything changes
    apply_quantization_config(model, config, show_progress=False)
    quantized = {n for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None}
    if quantized != set(targets):
        raise ExportError(f"compressed-tensors matched other layers than the blocks' linear layers: "
                          f"{sorted(quantized ^ set(targets))[:5]}")
    with torch.no_grad():
        for n, m in targets.items():
            scale, zero, _ = grids[n]
            m.weight_scale.copy_(scale.to(m.weight_scale.dtype))
            m.weight_zero_point.copy_((zero - offset).to(m.weight_zero_point.dtype))
            m.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=quant_format)
    compressor.compress_model(model)
    codec = BaseCompressor.get_value_from_registry(quant_format)
    for n, m in targets.items():
        back = codec.decompress(dict(m.state_dict()), m.quantization_scheme)["weight"]
        if back.shape != dense[n].shape or not torch.equal(back.to(dense[n].dtype), dense[n]):
            diff = float((back - dense[n]).abs().max()) if back.shape == dense[n].shape else float("inf")
            raise ExportError(f"{n}: compressed-tensors decompresses other weights (max |diff| {diff})")
    compressor.remove_decompression_hook(model)
    return compressor


def export_compressed(model: nn.Module, tokenizer, path: str | os.PathLike, report=None, *, wbits: int | None = None,
                      quant_format: str = "pack-quantized", sparse_format: str = "dense",
                      overwrite: bool = False) -> dict:
    """Save a sparse (any pattern, 2:4) and/or k-bit quantized model as a compressed-tensors folder
    (see the module docstring for the formats and who reads them).

    ``report``: the ``PruneReport`` of the pruning (its ``wbits`` says whether and how the weights
    were quantized); or pass ``wbits`` (16 = not quantized).  The model is not changed: FFN- and
    vocabulary-pruned models are padded and get a stock tokenizer exactly as in ``export_hf``.
    Returns the report dict (also ``minilib_export.json``): formats, bits, compressed layers, their
    sparsity and structure, the check of the decompressed weights, padding, tokenizer, bytes."""
    import compressed_tensors
    if quant_format not in QUANT_FORMATS:
        raise ValueError(f"quant_format must be one of {QUANT_FORMATS}, got {quant_format!r}")
    if sparse_format not in SPARSE_FORMATS:
        raise ValueError(f"sparse_format must be one of {SPARSE_FORMATS}, got {sparse_format!r}")
    wbits = _resolve_wbits(report, wbits)
    if wbits < 16 and sparse_format != "dense":
        raise ExportError(f"{sparse_format} holds unquantized weights only; quantized models are stored with "
                          f"sparse_format='dense' and quant_format in {QUANT_FORMATS}")
    if 8 < wbits < 16:
        raise ExportError(f"compressed-tensors integer formats hold at most 8 bits; wbits={wbits} cannot be stored "
                          "(export with export_hf, which keeps the dequantized weights)")
    check_overwrite(path, overwrite)
    hf, ffn = hf_model(model)
    tok, tok_info = hf_tokenizer(model, tokenizer)
    targets = _targets(hf)
    compress = wbits < 16 or sparse_format != "dense"
    not_linear = sorted({type(m).__name__ for m in targets.values() if type(m) is not nn.Linear})
    if compress and not_linear:
        raise ExportError(f"compressed-tensors compresses nn.Linear layers; this model's blocks use {not_linear} "
                          "(GPT-2's Conv1D): export it with sparse_format='dense' and no quantization, or export_hf")
    zeros = sum(int((weight_oi(m) == 0).sum()) for m in targets.values())
    numel = sum(weight_oi(m).numel() for m in targets.values())
    two_four = all(is_nm(weight_oi(m), 2, 4) for m in targets.values())
    if sparse_format == "sparse-24-bitmask" and not two_four:
        raise ExportError("sparse-24-bitmask needs every compressed layer to hold 2 zeros in every 4 inputs; "
                          "this model is not 2:4 sparse (use sparse-bitmask)")
    info = {"format": "compressed-tensors", "path": str(path), "family": adapter_for(model).family,
            "class": type(model).__name__, "sparse_format": sparse_format,
            "quant_format": quant_format if wbits < 16 else None, "wbits": wbits,
            "compressed_tensors": compressed_tensors.__version__, "layers": len(targets), "layer_params": numel,
            "sparsity": zeros / max(1, numel), "structure": "2:4" if two_four else "unstructured",
            "max_abs_diff": 0.0, **ffn, "vocab_size": int(hf.config.vocab_size), "tokenizer": tok_info}

    after_save = None
    if wbits < 16:
        compressor = _quantize(hf, targets, wbits, quant_format)  # raises unless exact

        def after_save(stage):
            compressor.update_config(str(stage))
    elif sparse_format != "dense":
        name = legacy_weights_name(sparse_format)
        warnings.warn(f"{sparse_format} is the layout of compressed-tensors <= {LEGACY_VERSION}, which stock "
                      f"transformers 5.x does not decompress: the weights are written to {name} (not "
                      "model.safetensors), so from_pretrained refuses the folder instead of loading the "
                      "compressed layers freshly initialised; read it with minilib.export.load_compressed",
                      UserWarning, stacklevel=2)
        info["readers"] = (f"minilib.export.load_compressed; the tensors in {name} are compressed-tensors <= "
                           f"{LEGACY_VERSION}'s layout (stock transformers 5.x refuses the folder)")
        keys = {f"{n}.weight" for n in targets}
        structure = "2:4" if sparse_format == "sparse-24-bitmask" else "unstructured"

        def after_save(stage):
            from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig
            info["max_abs_diff"] = _rewrite_legacy(stage, keys, sparse_format)["max_abs_diff"]
            cls = Sparse24BitMaskConfig if sparse_format == "sparse-24-bitmask" else BitmaskConfig
            sc = cls(global_sparsity=info["sparsity"], sparsity_structure=structure, targets=sorted(targets), ignore=[])
            cfg_file = stage / "config.json"
            cfg = json.loads(cfg_file.read_text())
            cfg["quantization_config"] = {"quant_method": "compressed-tensors", "version": LEGACY_VERSION,
                                          "sparsity_config": sc.model_dump()}
            cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return write_folder(path, hf, tok, info, overwrite, after_save)


# --- reading back -----------------------------------------------------------------------------------

def load_compressed(path: str | os.PathLike, dtype: torch.dtype = torch.float32, verify: bool = True):
    """``(model, tokenizer)`` from a folder written by ``export_compressed`` (or ``export_hf``): dense
    and quantized folders through stock transformers (quantized weights dequantized by
    compressed-tensors), the legacy bitmask layouts decoded here first.  Every file is first checked
    against the sha256 the export recorded (``check_export``: ``CorruptModelError`` naming the file);
    ``verify=False`` skips that, e.g. for a folder exported before exports carried a manifest.  The
    model comes back prepared for minilib (``Adapter.prepare``: Phi-3's fused FFN layer split)."""
    import transformers
    from transformers import AutoConfig, CompressedTensorsConfig

    from minilib.export.hf import check_export
    from minilib.models.tokenizers import read_tokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not an exported model folder")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    if verify:
        check_export(path)
    raw = json.loads((path / "config.json").read_text())
    qc = raw.get("quantization_config") or {}
    config = AutoConfig.from_pretrained(path)
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise ExportError(f"{path}: config.json names no model class of this transformers version ({archs})")
    tok = read_tokenizer(path) if (path / "tokenizer_config.json").is_file() else None
    legacy = (qc.get("sparsity_config") or {}).get("format")
    if legacy in _LEGACY:
        _, decode, _ = _LEGACY[legacy]
        with tempfile.TemporaryDirectory(prefix=".decoded.", dir=path.parent) as tmp:
            tmp = Path(tmp)
            cfg = dict(raw)
            cfg.pop("quantization_config")
            (tmp / "config.json").write_text(json.dumps(cfg))
            if (path / "generation_config.json").is_file():
                shutil.copy(path / "generation_config.json", tmp / "generation_config.json")
            _decode_files(path, tmp, decode, legacy)
            model = cls.from_pretrained(tmp, dtype=dtype)
    elif qc.get("quant_method") == "compressed-tensors" and qc.get("config_groups"):
        with warnings.catch_warnings():  # "the config from the model will be used": what we want
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            model = cls.from_pretrained(path, dtype=dtype,
                                        quantization_config=CompressedTensorsConfig(dequantize=True))
    else:
        model = cls.from_pretrained(path, dtype=dtype)
    return adapter_for(model).prepare(model).eval(), tok  # fused FFN layers split, as every minilib loader does


def _decode_files(src: Path, dst: Path, decode, fmt: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file
    parts = ("shape", "compressed", "bitmask", "row_offsets")
    name = legacy_weights_name(fmt)  # (folders written before the rename hold model.safetensors)
    for f in sorted(src.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            keys = list(fh.keys())
            groups: dict[str, dict] = {}
            out = {}
            for k in keys:
                prefix, _, part = k.rpartition(".")
                if part in parts and f"{prefix}.compressed" in keys:
                    groups.setdefault(prefix, {})[part] = fh.get_tensor(k)
                else:
                    out[k] = fh.get_tensor(k)
        for prefix, d in groups.items():
            out[prefix if prefix.endswith(".weight") else f"{prefix}.weight"] = decode(d)
        save_file(out, str(dst / ("model.safetensors" if f.name == name else f.name)), metadata={"format": "pt"})
    idx = next((i for i in (src / f"{name}.index.json", src / "model.safetensors.index.json") if i.is_file()), None)
    if idx is not None:
        index = json.loads(idx.read_text())
        wm = {}
        for k, v in index["weight_map"].items():
            prefix, _, part = k.rpartition(".")
            if part in parts:
                k = prefix if prefix.endswith(".weight") else f"{prefix}.weight"
            wm[k] = v
        index["weight_map"] = wm
        (dst / "model.safetensors.index.json").write_text(json.dumps(index))


__all__ = ["QUANT_FORMATS", "SPARSE_FORMATS", "EXPORT_FILE", "export_compressed", "load_compressed", "grid_of",
           "bitmask_encode", "bitmask_decode", "bitmask24_encode", "bitmask24_decode"]
