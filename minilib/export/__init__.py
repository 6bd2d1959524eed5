"""Pruned models everywhere: plain Hugging Face folders and compressed-tensors checkpoints.

* ``export_hf(model, tokenizer, path)`` -- ``save_pretrained`` + a real tokenizer for the model's ids;
  stock transformers loads it (pruned FFNs padded to one width, pruned vocabularies remapped);
* ``export_compressed(model, tokenizer, path, report=None)`` -- the compressed-tensors format
  (sparse weights, k-bit per-channel quantization packed by compressed-tensors);
* ``load_compressed(path)`` -- read back any folder ``export_compressed`` wrote.

Both exports return a small report dict and write it beside the model (``minilib_export.json``).
See docs/export.md.
"""

from minilib.export.compressed import QUANT_FORMATS, SPARSE_FORMATS, export_compressed, grid_of, load_compressed
from minilib.export.hf import ExportError, export_hf, hf_model, hf_tokenizer, is_export, remap_tokenizer

__all__ = ["QUANT_FORMATS", "SPARSE_FORMATS", "export_compressed", "grid_of", "load_compressed", "ExportError",
           "export_hf", "hf_model", "hf_tokenizer", "is_export", "remap_tokenizer"]
