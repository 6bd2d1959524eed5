"""Adapters, loading, linear orientation and surgery on the tiny models of every family."""

import copy
import json

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from minilib.hooks import count_hooks, forward_hooks
from minilib.models import (SUPPORTED_FAMILIES, TINY, UnknownModelError, UnsupportedModelError, adapter_for, load,
                            remove_ffn_neurons, save_model)
from minilib.models.linear import in_features, out_features, select_inputs, select_outputs, weight_oi
from minilib.models import PlanMismatchError, ffn_widths, read_plan
from minilib.models.saving import SAVED, write_hashes

EXPECTED = {  # family, gated FFN, final norm present, decoder
    "tiny-gpt2": ("gpt2", False, True, True),
    "tiny-bert": ("bert", False, False, False),
    "tiny-opt": ("opt", False, True, True),
    "tiny-llama": ("llama", True, True, True),
    "tiny-phi": ("phi", False, True, True),
    "tiny-gemma3": ("gemma3", True, True, True),
    "tiny-qwen2": ("qwen2", True, True, True),
    "tiny-qwen3": ("qwen3", True, True, True),
    "tiny-mistral": ("mistral", True, True, True),
    "tiny-phi3": ("phi3", True, True, True),
    "tiny-gemma2": ("gemma2", True, True, True),
}


def _batch(tok, texts=("the cat sat on the mat", "hi")):
    return tok(list(texts), return_tensors="pt", padding=True)


def test_every_family_has_a_tiny_model():
    assert set(EXPECTED) == set(TINY)
    assert {adapter_for(load(n).model).family for n in TINY} == set(SUPPORTED_FAMILIES)
    assert len(TINY) == len(SUPPORTED_FAMILIES)  # one tiny model per family


@pytest.mark.parametrize("name", TINY)
def test_adapter_finds_the_parts(name):
    model, tok, ad = load(name)
    family, gated, has_norm, decoder = EXPECTED[name]
    assert ad.family == family and ad.is_decoder == decoder
    blocks = ad.blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    for b in blocks:
        f = ad.ffn(b)
        assert (f.gate is not None) == gated
        assert f.width == 128 and in_features(f.down) == 128 and out_features(f.down) == 64
        assert in_features(f.up) == 64
        attn = ad.attention(b)
        assert "o" in attn and out_features(attn["o"]) == 64
        assert set(ad.linear_layers(b).values()) >= {f.up, f.down}
        # the adapter's norms are every normalisation layer of the block (Qwen3's q/k norms, Gemma's four)
        norms = {m for n, m in b.named_modules() if "norm" in type(m).__name__.lower()}
        assert set(ad.norms(b).values()) == norms and norms
    assert (ad.final_norm(model) is not None) == has_norm
    assert ad.input_embeddings(model).num_embeddings == len(tok)
    assert (ad.head(model) is not None) == decoder  # bare encoder: no head
    assert ad.max_positions(model.config) == 256


@pytest.mark.parametrize("name", TINY)
def test_ffn_hook_point_is_the_neuron_activation(name):
    """The input of ``down`` equals act(up(x)) [* gate(x)] computed from the block's own parts."""
    model, tok, ad = load(name)
    f = ad.ffn(ad.blocks(model)[0])
    seen = {}
    with forward_hooks({f.up: lambda m, a, o: seen.__setitem__("up_in", a[0]),
                        f.down: lambda m, a, o: seen.__setitem__("down_in", a[0])}):
        with torch.no_grad():
            model(**_batch(tok))
    assert count_hooks(model) == 0
    with torch.no_grad():
        x = seen["up_in"]
        a = f.act(f.up(x))
        if f.gate is not None:  # llama/gemma: act(gate) * up
            a = f.act(f.gate(x)) * f.up(x)
    torch.testing.assert_close(a, seen["down_in"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_decision_position_selects_the_right_token(name):
    model, tok, ad = load(name)
    enc = _batch(tok)
    pos = ad.decision_positions(enc["attention_mask"])
    if ad.is_decoder:
        assert pos.tolist() == [int(enc["attention_mask"][0].sum()) - 1, int(enc["attention_mask"][1].sum()) - 1]
        assert enc["input_ids"][1, pos[1]] != tok.pad_token_id or tok.pad_token_id == tok.eos_token_id
    else:
        assert pos.tolist() == [0, 0]
        assert enc["input_ids"][0, 0] == tok.cls_token_id


def test_decision_position_with_left_padding():
    ad = adapter_for(load("tiny-llama").model)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    assert ad.decision_positions(mask).tolist() == [4, 4, 1]


def test_conv1d_orientation_in_one_place():
    conv = Conv1D(6, 4)  # nf=out=6, nx=in=4; weight stored [in, out]
    torch.nn.init.normal_(conv.weight)
    assert conv.weight.shape == (4, 6) and weight_oi(conv).shape == (6, 4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(conv(x), x @ weight_oi(conv).T + conv.bias)
    keep = torch.tensor([0, 2, 5])
    sub = select_outputs(conv, keep)
    assert isinstance(sub, Conv1D)
    torch.testing.assert_close(sub(x), conv(x)[:, keep])
    sub_in = select_inputs(conv, torch.tensor([1, 3]))
    torch.testing.assert_close(sub_in(x[:, [1, 3]]), x[:, [1, 3]] @ weight_oi(conv)[:, [1, 3]].T + conv.bias)
    lin = nn.Linear(4, 6)
    torch.testing.assert_close(select_outputs(lin, keep)(x), lin(x)[:, keep])


@pytest.mark.parametrize("name", TINY)
def test_removal_equals_zero_masking_and_saves(name, tmp_path):
    model, tok, ad = load(name)
    enc = _batch(tok)
    g = torch.Generator().manual_seed(0)
    masked = copy.deepcopy(model)
    keeps = []
    for i, b in enumerate(ad.blocks(masked)):
        keep = torch.randperm(128, generator=g)[:80].sort().values
        keeps.append(keep)
        drop = torch.ones(128, dtype=torch.bool)
        drop[keep] = False
        weight_oi(ad.ffn(b).down)[:, drop] = 0.0
    for i, keep in enumerate(keeps):
        assert remove_ffn_neurons(model, i, keep) == 48
    assert ffn_widths(model) == [80, 80]
    with torch.no_grad():
        ref = masked(**enc)[0]
        out = model(**enc)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    path = save_model(model, tok, tmp_path / "pruned", extra={"note": "test"})
    plan = read_plan(path)
    assert plan["family"] == ad.family and plan["extra"] == {"note": "test"}
    assert len(plan["reshaped"]) == 2 * (3 if ad.ffn(ad.blocks(model)[0]).gate is not None else 2)
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))  # no pickles
    back = load(path)
    with torch.no_grad():
        again = back.model(**enc)[0]
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert ffn_widths(back.model) == [80, 80]


def test_removal_bad_input():
    model, _, _ = load("tiny-gpt2")
    with pytest.raises(ValueError, match="no"):
        remove_ffn_neurons(model, 0, torch.tensor([], dtype=torch.long))
    with pytest.raises(IndexError, match=r"\[0, 128\)"):
        remove_ffn_neurons(model, 0, torch.tensor([0, 500]))
    # a boolean mask or a fraction is not a list of indices: refused, the layer untouched
    with pytest.raises(TypeError, match="boolean mask"):
        remove_ffn_neurons(model, 0, torch.ones(128, dtype=torch.bool))
    with pytest.raises(TypeError, match="integer"):
        remove_ffn_neurons(model, 0, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="integer"):
        remove_ffn_neurons(model, 0, 0.3)
    with pytest.raises(ValueError, match="duplicate"):
        remove_ffn_neurons(model, 0, [1, 2, 2])
    with pytest.raises(IndexError, match="block 7"):
        remove_ffn_neurons(model, 7, [1, 2])
    assert ffn_widths(model) == [128, 128]
    assert remove_ffn_neurons(model, 0, list(range(128))) == 0  # keeping everything changes nothing


def test_save_is_atomic_and_loaded_plan_checked(tmp_path):
    model, tok, _ = load("tiny-opt")
    p = save_model(model, tok, tmp_path / "m")
    plan = json.loads((p / "minilib_plan.json").read_text())
    plan["version"] = 99
    (p / "minilib_plan.json").write_text(json.dumps(plan))
    write_hashes(p, SAVED)  # the edit passes the hash check only with a rewritten manifest
    with pytest.raises(PlanMismatchError, match="version"):
        load(p)
    assert [q.name for q in tmp_path.iterdir()] == ["m"]  # no staging leftovers


def test_same_seed_same_tiny_weights():
    a, b = load("tiny-llama").model, load("tiny-llama").model
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_load_local_folder_path_is_the_hub_path(tmp_path):
    """A folder written by save_pretrained loads through the same code path as hub ids."""
    model, tok, _ = load("tiny-gpt2")
    model.save_pretrained(tmp_path / "gpt2-like")
    tok.save_pretrained(tmp_path / "gpt2-like")
    m = load(str(tmp_path / "gpt2-like"))
    assert m.adapter.family == "gpt2"
    enc = _batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(m.model(**enc).logits, model(**enc).logits)
    cls = load(str(tmp_path / "gpt2-like"), task="sequence-classification", num_labels=3)
    assert cls.model.config.num_labels == 3 and cls.adapter.head(cls.model).out_features == 3


def test_dtype_and_device_parameters():
    m = load("tiny-llama", dtype=torch.bfloat16, device="cpu")
    assert next(m.model.parameters()).dtype == torch.bfloat16 and m.device.type == "cpu"


def test_unknown_model_and_family(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load("./no/such/model")
    with pytest.raises(UnknownModelError, match="not a model folder"):
        load(str(tmp_path))
    with pytest.raises(UnknownModelError, match="smollm2-135m"):
        load("definitely-not-a-model-xyz", local_files_only=True)
    from transformers import T5Config
    T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab_size=50).save_pretrained(tmp_path / "t5")
    with pytest.raises(UnsupportedModelError, match="supported families: gpt2, bert, opt, llama, phi, gemma3, qwen2, "
                       "qwen3, mistral, phi3, gemma2"):
        load(str(tmp_path / "t5"))
    with pytest.raises(ValueError, match="unknown task"):
        load("tiny-gpt2", task="translation")


def test_hooks_are_removed_even_when_the_body_raises():
    model, tok, ad = load("tiny-llama")
    f = ad.ffn(ad.blocks(model)[0])
    with pytest.raises(RuntimeError):
        with forward_hooks({f.down: lambda *a: None, f.up: lambda *a: None}):
            assert count_hooks(model) == 2
            raise RuntimeError("boom")
    assert count_hooks(model) == 0


def test_phi3_fused_gate_up_is_split_into_real_modules_with_the_stock_state_dict():
    """Phi-3 computes gate and up with one ``gate_up_proj`` ([gate; up] rows, ``chunk(2, -1)``).
    ``prepare`` splits it: gate is the first half, up the second; the outputs and the state dict
    are the stock model's; an unprepared model's FFN is refused with a clear error; ``to_stock``
    fuses it back."""
    from transformers import AutoModelForCausalLM

    from minilib.models import SplitLinear, UnpreparedModelError
    model, tok, ad = load("tiny-phi3")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        stock = AutoModelForCausalLM.from_config(model.config).eval()
    with pytest.raises(UnpreparedModelError, match=r"mlp.gate_up_proj.*prepare"):
        ad.ffns(stock)
    fused = {k: v.clone() for k, v in stock.state_dict().items()}
    split = ad.prepare(copy.deepcopy(stock))
    assert ad.prepare(split) is split  # idempotent
    block, stock_block = ad.blocks(split)[0], ad.blocks(stock)[0]
    f = ad.ffn(block)
    assert isinstance(block.mlp.gate_up_proj, SplitLinear) and type(f.gate) is type(f.up) is nn.Linear
    w = stock_block.mlp.gate_up_proj.weight
    assert torch.equal(f.gate.weight, w[:128]) and torch.equal(f.up.weight, w[128:])
    sd = split.state_dict()
    assert list(sd) == list(fused) and all(torch.equal(sd[k], fused[k]) for k in sd)
    enc = _batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(split(**enc).logits, stock(**enc).logits, rtol=0, atol=1e-6)
    back = ad.to_stock(copy.deepcopy(split))
    assert type(ad.blocks(back)[0].mlp.gate_up_proj) is nn.Linear
    assert all(torch.equal(back.state_dict()[k], fused[k]) for k in fused)
    # a stock state dict loads into a split model (strictly), and a split one into a stock model
    other = ad.prepare(AutoModelForCausalLM.from_config(model.config))
    other.load_state_dict(fused, strict=True)
    assert torch.equal(ad.ffn(ad.blocks(other)[1]).up.weight, ad.blocks(stock)[1].mlp.gate_up_proj.weight[128:])
    plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(split.state_dict(), strict=True)
    assert torch.equal(plain.state_dict()["model.layers.1.mlp.gate_up_proj.weight"],
                       fused["model.layers.1.mlp.gate_up_proj.weight"])


def test_phi3_removing_neurons_removes_their_gate_and_up_rows(tmp_path):
    """Removing neuron i of a Phi-3 FFN removes rows i and F + i of the fused gate_up_proj and column i
    of down_proj; saved and loaded, and in stock form (``to_stock``), that is the fused layout."""
    model, tok, ad = load("tiny-phi3")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    keep = torch.tensor([0, 3, 4, 10, 77, 127])
    remove_ffn_neurons(model, 1, keep)
    name = "model.layers.1.mlp.gate_up_proj.weight"
    want = torch.cat([before[name][keep], before[name][128 + keep]])
    assert torch.equal(model.state_dict()[name], want)
    assert torch.equal(model.state_dict()["model.layers.1.mlp.down_proj.weight"],
                       before["model.layers.1.mlp.down_proj.weight"][:, keep])
    stock = ad.to_stock(copy.deepcopy(model))
    assert torch.equal(ad.blocks(stock)[1].mlp.gate_up_proj.weight, want)
    enc = _batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(stock(**enc).logits, model(**enc).logits, rtol=0, atol=1e-6)
    back = load(save_model(model, tok, tmp_path / "phi3"))
    assert ffn_widths(back.model) == [128, 6]
    assert torch.equal(back.model.state_dict()[name], want)


def test_split_linear_with_bias_keeps_the_fused_layer():
    """SplitLinear (the generic part behind Phi-3's split): outputs, state dict (with a bias), load of a fused
    tensor, fusing back; a part that is no plain Linear (e.g. a LoRA wrapper) saves under its own keys."""
    from minilib.models import SplitLinear
    torch.manual_seed(0)
    fused = nn.Linear(8, 6)
    split = SplitLinear.split(fused, ("a", "b", "c"))
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(split(x), fused(x), rtol=0, atol=1e-6)
    assert torch.equal(split.b.weight, fused.weight[2:4]) and torch.equal(split.c.bias, fused.bias[4:])
    sd = split.state_dict(prefix="m.")
    assert list(sd) == ["m.weight", "m.bias"] and torch.equal(sd["m.weight"], fused.weight.detach())
    other = SplitLinear.split(nn.Linear(8, 6), ("a", "b", "c"))
    other.load_state_dict(fused.state_dict(), strict=True)
    assert torch.equal(other.a.weight, fused.weight[:2]) and torch.equal(other.fused().bias, fused.bias)
    with pytest.raises(RuntimeError, match="does not split into 3 equal parts"):
        other.load_state_dict({"weight": torch.zeros(7, 8), "bias": torch.zeros(6)})
    split.a = nn.Sequential(split.a)  # no plain Linear any more: the parts' own keys
    assert sorted(split.state_dict()) == ["a.0.bias", "a.0.weight", "b.bias", "b.weight", "c.bias", "c.weight"]
