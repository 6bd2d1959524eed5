"""compressed-tensors export: exact scales/zero points for minilib's k-bit weights, round trips
(save, load, identical logits) for sparse, 2:4 and sparse+quantized models, and clear refusals."""

import json
import subprocess
import sys

import pytest
import torch

from minilib.export import ExportError, export_compressed, grid_of, hf_model, load_compressed
from minilib.export.compressed import bitmask24_decode, bitmask24_encode, bitmask_decode, bitmask_encode
from minilib.models import ffn_widths, load
from minilib.prune import fit_quantizer, prune_model, remove_neurons

X = torch.randint(0, 5000, (2, 16), generator=torch.Generator().manual_seed(1))


def _calib():
    return torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("wbits", [2, 3, 4, 8])
def test_grid_recovers_minilib_quantized_weights_exactly(wbits):
    g = torch.Generator().manual_seed(wbits)
    w = torch.randn(96, 80, generator=g) * torch.rand(96, 1, generator=g)  # rows of different ranges
    q = fit_quantizer(w, wbits)(w)
    q[torch.rand(q.shape, generator=g) < 0.5] = 0  # pruned after quantizing, as SparseGPT does
    q[3] = 0  # an all-zero row (e.g. a padded FFN neuron)
    q[5, :] = 0
    q[5, 7] = -0.25  # a row with one nonzero value
    scale, zero, codes = grid_of(q, wbits)
    assert codes.min() >= 0 and codes.max() <= 2 ** wbits - 1 and zero.min() >= 0 and zero.max() <= 2 ** wbits - 1
    assert torch.equal(scale * (codes - zero).float(), q)  # bit for bit, the product minilib computes


def test_grid_refuses_weights_that_are_not_quantized():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ExportError, match="not on a 4-bit per-channel grid"):
        grid_of(w, 4)
    with pytest.raises(ExportError, match="not on a 2-bit"):
        grid_of(fit_quantizer(w, 4)(w), 2)  # 16 levels do not fit in 4


def test_bitmask_layouts_encode_and_decode():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 24, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.6] = 0
    e = bitmask_encode(w)
    assert e["compressed"].numel() == int((w != 0).sum()) and e["bitmask"].shape == (6, 3)
    assert e["row_offsets"].tolist() == [0] + torch.cumsum((w != 0).sum(1), 0)[:-1].tolist()
    assert torch.equal(bitmask_decode(e), w)
    w24 = w.clone().reshape(6, 6, 4)
    w24[..., :2] = 0  # 2 zeros in every 4, some groups with more
    w24 = w24.reshape(6, 24)
    e = bitmask24_encode(w24)
    assert e["compressed"].shape == (6, 12) and e["shape"].flatten().tolist() == [6, 24]
    assert torch.equal(bitmask24_decode(e), w24)


CASES = {  # name: (prune_model kwargs, export kwargs)
    "2:4+4bit-packed": (dict(method="sparsegpt", nm=(2, 4), wbits=4), {}),
    "2:4+4bit-int8": (dict(method="magnitude", nm=(2, 4), wbits=4), dict(quant_format="naive-quantized")),
    "50%+3bit-packed": (dict(method="wanda", sparsity=0.5, wbits=3), {}),
    "50%-bitmask": (dict(method="magnitude", sparsity=0.5), dict(sparse_format="sparse-bitmask")),
    "2:4-bitmask": (dict(method="magnitude", nm=(2, 4)), dict(sparse_format="sparse-24-bitmask")),
    "50%-dense": (dict(method="magnitude", sparsity=0.5), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_identical_logits(case, tmp_path, logits):
    pkw, ekw = CASES[case]
    m = load("tiny-llama")
    pkw = dict(pkw)
    calib = _calib() if pkw["method"] != "magnitude" else None
    rep = prune_model(m.model, pkw.pop("method"), calib=calib, **pkw)
    if ekw.get("sparse_format"):
        with pytest.warns(UserWarning, match="from_pretrained refuses the folder"):
            info = export_compressed(m.model, m.tokenizer, tmp_path / "out", rep, **ekw)
    else:
        info = export_compressed(m.model, m.tokenizer, tmp_path / "out", rep, **ekw)
    assert info["max_abs_diff"] == 0.0 and info["layers"] == 14
    assert info["structure"] == ("2:4" if "2:4" in case else "unstructured")
    assert abs(info["sparsity"] - 0.5) < 0.01
    back, tok = load_compressed(tmp_path / "out")
    assert torch.equal(logits(back, X), logits(m.model, X))
    assert tok("a cat")["input_ids"] == m.tokenizer("a cat")["input_ids"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    if rep.wbits < 16:
        qc = cfg["quantization_config"]
        weights = qc["config_groups"]["group_0"]["weights"]
        assert qc["format"] == info["quant_format"] and weights["num_bits"] == rep.wbits
        assert weights["symmetric"] is False and weights["strategy"] == "channel" and qc["ignore"] == ["lm_head"]
    elif ekw.get("sparse_format"):
        assert cfg["quantization_config"]["sparsity_config"]["format"] == ekw["sparse_format"]
    else:
        assert "quantization_config" not in cfg


def test_stock_transformers_loads_the_quantized_checkpoints(tmp_path, logits):
    """No minilib in the loading process: compressed-tensors dequantizes to minilib's weights."""
    refs = {}
    for fmt in ("pack-quantized", "naive-quantized"):
        m = load("tiny-llama")
        remove_neurons(m.model, [torch.arange(128) % 4 == 0, torch.arange(128) % 8 == 0])  # padded on export
        rep = prune_model(m.model, "magnitude", nm=(2, 4), wbits=4)
        info = export_compressed(m.model, m.tokenizer, tmp_path / fmt, rep, quant_format=fmt)
        assert info["padding_neurons"] == 16 and ffn_widths(m.model) == [96, 112] and info["ffn_width"] == 112
        refs[fmt] = logits(m.model, X)
    code = r"""
import sys, torch
from transformers import AutoModelForCausalLM, CompressedTensorsConfig
x = torch.tensor(%s)
for d, kw in ((sys.argv[1], {"quantization_config": CompressedTensorsConfig(dequantize=True)}), (sys.argv[2], {})):
    m = AutoModelForCausalLM.from_pretrained(d, **kw).eval()
    with torch.no_grad():
        torch.save(m(input_ids=x).logits, d + "/logits.pt")
assert "minilib" not in sys.modules
""" % X.tolist()
    dirs = [str(tmp_path / "pack-quantized"), str(tmp_path / "naive-quantized")]
    r = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for fmt, ref in refs.items():
        got = torch.load(tmp_path / fmt / "logits.pt", weights_only=True)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    sizes = {fmt: json.loads((tmp_path / fmt / "minilib_export.json").read_text())["bytes"]["weights"] for fmt in refs}
    # the same codes, 8 to an int32 vs 1 per int8: 14 layers x 0.5 byte per weight less
    assert sizes["naive-quantized"] - sizes["pack-quantized"] > 0.45 * info["layer_params"]


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-phi3"])  # Phi-3: gate_up_proj fused back, then quantized
def test_vocab_and_ffn_pruned_model_exports_quantized(name, tmp_path, logits):
    from minilib.models import token_counts
    from minilib.prune import mask_vocab, remove_vocab
    m = load(name)
    text = "Once upon a time there was a little cat who liked the sun. " * 20
    ids = torch.tensor(m.tokenizer(text)["input_ids"])
    rtok, _ = remove_vocab(m.model, m.tokenizer, mask_vocab(token_counts(ids, 50257), m.tokenizer, min_tokens=100))
    remove_neurons(m.model, [torch.arange(128) < 40, torch.arange(128) < 10])
    calib = torch.tensor(rtok.map_ids(ids.tolist())[:256]).view(4, 64)
    rep = prune_model(m.model, "sparsegpt", sparsity=0.5, wbits=4, calib=calib)
    info = export_compressed(m.model, rtok, tmp_path / "o", rep)
    back, tok = load_compressed(tmp_path / "o")
    x = torch.tensor([rtok.encode("Once upon a time there was a cat.")])
    assert tok("Once upon a time there was a cat.")["input_ids"] == x[0].tolist()
    # bit for bit the exported model (FFNs padded to one width; prepared, as load_compressed's is), and
    # the pruned model up to the rounding of the padded widths (gemma3: exact; phi3: 1.5e-8)
    hf, _ = hf_model(m.model)
    assert torch.equal(logits(back, x), logits(m.adapter.prepare(hf), x))
    torch.testing.assert_close(logits(back, x), logits(m.model, x), rtol=0, atol=1e-6)
    assert info["vocab_size"] == rtok.vmap.new_size and info["tokenizer"]["lossless"]


@pytest.mark.parametrize("fmt, prune_kw", [("sparse-bitmask", dict(sparsity=0.5)), ("sparse-24-bitmask", dict(nm=(2, 4)))])
def test_stock_transformers_refuses_a_bitmask_folder_instead_of_loading_it_wrong(fmt, prune_kw, tmp_path, logits):
    """transformers 5.x ignores sparsity_config: under model.safetensors the compressed layers came back
    freshly initialised with no error.  The folder holds model.<fmt>.safetensors, so from_pretrained
    raises; load_compressed reads it, and still reads a folder written under the old name."""
    from transformers import AutoModelForCausalLM
    m = load("tiny-llama")
    rep = prune_model(m.model, "magnitude", **prune_kw)
    with pytest.warns(UserWarning, match=f"written to model.{fmt}.safetensors"):
        info = export_compressed(m.model, m.tokenizer, tmp_path / "b", rep, sparse_format=fmt)
    assert "load_compressed" in info["readers"]
    names = sorted(p.name for p in (tmp_path / "b").glob("*.safetensors"))
    assert names == [f"model.{fmt}.safetensors"]
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    ref = logits(m.model, X)
    assert torch.equal(logits(load_compressed(tmp_path / "b")[0], X), ref)
    (tmp_path / "b" / f"model.{fmt}.safetensors").rename(tmp_path / "b" / "model.safetensors")  # the old name
    assert torch.equal(logits(load_compressed(tmp_path / "b", verify=False)[0], X), ref)


def test_refusals_write_nothing(tmp_path):
    m = load("tiny-llama")
    with pytest.raises(ExportError, match="not on a 4-bit"):  # claims 4 bits, but nothing was quantized
        export_compressed(m.model, m.tokenizer, tmp_path / "a", wbits=4)
    rep = prune_model(m.model, "magnitude", sparsity=0.5, wbits=4)
    with pytest.raises(ExportError, match="contradicts the report"):
        export_compressed(m.model, m.tokenizer, tmp_path / "a", rep, wbits=8)
    with pytest.raises(ExportError, match="unquantized weights only"):
        export_compressed(m.model, m.tokenizer, tmp_path / "a", rep, sparse_format="sparse-bitmask")
    with pytest.raises(ExportError, match="at most 8 bits"):
        export_compressed(m.model, m.tokenizer, tmp_path / "a", wbits=12)
    with pytest.raises(ValueError, match="quant_format must be one of"):
        export_compressed(m.model, m.tokenizer, tmp_path / "a", rep, quant_format="gptq")
    with pytest.raises(ValueError, match="sparse_format must be one of"):
        export_compressed(m.model, m.tokenizer, tmp_path / "a", rep, sparse_format="csr")
    d = load("tiny-llama")
    prune_model(d.model, "magnitude", sparsity=0.5)
    with pytest.raises(ExportError, match="not 2:4 sparse"):
        export_compressed(d.model, d.tokenizer, tmp_path / "a", sparse_format="sparse-24-bitmask")
    g = load("tiny-gpt2")
    rep = prune_model(g.model, "magnitude", nm=(2, 4), wbits=4)
    with pytest.raises(ExportError, match="Conv1D"):
        export_compressed(g.model, g.tokenizer, tmp_path / "a", rep)
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
    # GPT-2 sparse without quantization: stored dense, and the 2:4 structure is seen in [out, in]
    info = export_compressed(g.model, g.tokenizer, tmp_path / "g", wbits=16)
    assert info["structure"] == "2:4" and info["quant_format"] is None


def test_docs_tables_are_the_benchmark_json():
    """docs/export.md quotes results/export_sizes.json through the benchmark's renderer, never by hand."""
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_export", root / "benchmarks" / "bench_export.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = json.loads((root / "results" / "export_sizes.json").read_text())
    docs = (root / "docs" / "export.md").read_text()
    assert f"{bench.BEGIN}\n{bench.docs_tables(result)}\n{bench.END}" in docs
    sizes = {r["case"]: r for r in result["sizes"]}
    assert all(r["max_abs_diff"] == 0.0 for r in sizes.values())
    dense = sizes["dense fp32"]["weights_bytes"]
    assert sizes["50% unstructured, dense"]["weights_bytes"] == dense  # zeros cost as much as values
    packed = sizes["2:4 + 4-bit, pack-quantized"]["weights_bytes"]
    assert packed < sizes["2:4 + 4-bit, naive-quantized"]["weights_bytes"] < dense
    assert sizes["2:4, sparse-24-bitmask"]["weights_bytes"] < dense


def test_load_compressed_checks_every_file_against_the_manifest(tmp_path):
    """A byte flipped in an exported checkpoint (same size) is refused, naming the file; verify=False
    is the explicit way past the check."""
    from minilib.models import CorruptModelError
    m = load("tiny-llama")
    rep = prune_model(m.model, "magnitude", nm=(2, 4), wbits=4)
    export_compressed(m.model, m.tokenizer, tmp_path / "e", rep)
    f = tmp_path / "e" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="model.safetensors fails its sha256 check"):
        load_compressed(tmp_path / "e")
    with pytest.raises(TypeError, match="verify must be True or False"):
        load_compressed(tmp_path / "e", verify=1)
    model, _ = load_compressed(tmp_path / "e", verify=False)  # loads (wrongly, by one bit) when told to
    assert model is not None
