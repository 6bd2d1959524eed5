"""Hugging Face export: stock transformers (in a subprocess that never imports minilib) loads every
family, FFN-pruned, vocabulary-pruned and both, with the minilib model's logits; the tokenizer for
a pruned vocabulary is a real HF tokenizer that speaks the model's ids."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from minilib.export import ExportError, export_hf, hf_model, is_export, remap_tokenizer
from minilib.export.hf import TokenizerWarning
from minilib.io import DestinationError
from minilib.models import TINY, ffn_widths, load, token_counts
from minilib.models.vocab import RemappedTokenizer, keep_vocab_rows, make_vocab_map
from minilib.prune import mask_vocab, remove_neurons

FAMILIES = TINY
CALIB = ("Once upon a time there was a little cat. The cat liked to play in the sun. One day the cat saw a "
         "big dog. The dog was kind and they played together all day. ") * 12
PROMPT = "Once upon a time the dog saw a little cat. They played in the sun all day."
HELD_OUT = "Naïve façades: the 3 quick brown foxes jumped over 42 lazy dogs! Ünïcödé, emoji \U0001F600 and tabs\t."

# runs in a fresh interpreter: stock transformers only (minilib must never be imported there)
LOADER = r"""
import json, sys
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
jobs = json.load(open(sys.argv[1]))
out = {}
for j in jobs:
    cls = AutoModel if j["auto"] == "AutoModel" else AutoModelForCausalLM
    model = cls.from_pretrained(j["dir"]).eval()
    with torch.no_grad():
        out[j["name"]] = model(input_ids=torch.tensor([j["ids"]]))[0][0].contiguous()
    # AutoTokenizer, and the tokenizer.json as written (which AutoTokenizer rebuilds for some model types)
    for kind, tok in (("auto", AutoTokenizer.from_pretrained(j["dir"])),
                      ("fast", PreTrainedTokenizerFast.from_pretrained(j["dir"]))):
        ho = tok(j["held_out"], add_special_tokens=False)["input_ids"]
        j[kind] = {"class": type(tok).__name__, "prompt": tok(j["prompt"], add_special_tokens=j["specials"])["input_ids"],
                   "held_out_ids": ho, "held_out_back": tok.decode(ho), "len": len(tok)}
save_file(out, sys.argv[2])
json.dump({"jobs": jobs, "minilib_imported": "minilib" in sys.modules}, open(sys.argv[3], "w"))
"""


def run_stock(jobs: list[dict], tmp: Path) -> tuple[dict, dict]:
    """Load every job's folder with plain transformers in a subprocess; (logits by name, job results)."""
    from safetensors.torch import load_file
    spec, logits, res = tmp / "jobs.json", tmp / "logits.safetensors", tmp / "res.json"
    spec.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, "-c", LOADER, str(spec), str(logits), str(res)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(res.read_text())
    assert out["minilib_imported"] is False
    return load_file(str(logits)), {j["name"]: j for j in out["jobs"]}


_VMAPS: dict = {}  # one vocabulary map per tokenizer (building one is the slow part)


def prune(name: str, ffn: bool, vocab: bool, seed: int = 0, base=None):
    """A tiny model with FFNs pruned to different widths per layer and/or its vocabulary pruned
    (``base``: a loaded ``(model, tokenizer)`` to copy instead of loading again)."""
    import copy
    model, tok = (copy.deepcopy(base[0]), base[1]) if base is not None else tuple(load(name))[:2]
    if ffn:
        g = torch.Generator().manual_seed(seed)
        remove_neurons(model, [torch.rand(w, generator=g) < f for w, f in zip(ffn_widths(model), (0.3, 0.6))])
    if vocab:
        kind = type(tok).__name__
        if kind not in _VMAPS:
            ids = torch.tensor(tok(CALIB, add_special_tokens=False)["input_ids"])
            keep = ~mask_vocab(token_counts(ids, model.config.vocab_size), tok, min_tokens=100)
            _VMAPS[kind] = make_vocab_map(keep, tok)
        keep_vocab_rows(model, _VMAPS[kind])
        tok = RemappedTokenizer(tok, _VMAPS[kind])
    return model, tok


def test_every_family_loads_in_stock_transformers_with_the_same_logits(tmp_path):
    jobs, models = [], {}
    for name in FAMILIES:
        base = tuple(load(name))[:2]
        for ffn, vocab in ((True, False), (False, True), (True, True)):
            model, tok = prune(name, ffn, vocab, base=base)
            key = f"{name}-{'ffn' * ffn}{'vocab' * vocab}"
            d = tmp_path / key
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                info = export_hf(model, tok, d)
            warned = [w for w in caught if issubclass(w.category, TokenizerWarning)]
            assert bool(warned) == (not info["tokenizer"]["auto_tokenizer"]["same_ids"]), key
            assert is_export(d) and json.loads((d / "minilib_export.json").read_text()) == json.loads(
                json.dumps(info, default=str))
            widths = ffn_widths(model)
            assert info["ffn_widths"] == widths and info["ffn_width"] == max(widths)
            if ffn:  # padded neurons: up (+ gate) rows and biases, down columns
                assert widths[0] != widths[1]
                hidden = model.config.hidden_size if name != "tiny-gpt2" else model.config.n_embd
                hf, _ = hf_model(model)
                per_neuron = sum(p.numel() for p in hf.parameters()) - sum(p.numel() for p in model.parameters())
                assert info["padding_params"] == per_neuron > 0
                assert info["padding_neurons"] == max(widths) - min(widths)
                assert info["padding_params"] % (max(widths) - min(widths)) == 0
                assert info["padding_params"] // info["padding_neurons"] >= 2 * hidden
            specials = name == "tiny-bert"
            ids = tok(PROMPT, add_special_tokens=specials)["input_ids"]
            with torch.no_grad():
                models[key] = model(input_ids=torch.tensor([ids]))[0][0]
            jobs.append({"name": key, "dir": str(d), "auto": "AutoModel" if name == "tiny-bert" else "causal",
                         "ids": ids, "prompt": PROMPT, "specials": specials, "held_out": HELD_OUT,
                         "vocab": vocab, "size": int(model.config.vocab_size),
                         "auto_same": info["tokenizer"]["auto_tokenizer"]["same_ids"]})
    logits, res = run_stock(jobs, tmp_path)
    for key, ref in models.items():
        torch.testing.assert_close(logits[key], ref, atol=1e-5, rtol=0, msg=key)
        j = res[key]
        # transformers 5 rebuilds a qwen2 folder's tokenizer as Qwen2Tokenizer (its own pre-tokenizer, no
        # ignore_merges), which is not the GPT-2 BPE the tiny model uses: the export says so
        assert j["auto_same"] == (not key.startswith("tiny-qwen2")), key
        assert (j["auto"]["class"] == "Qwen2Tokenizer") == key.startswith("tiny-qwen2"), key
        for kind in ("fast", "auto") if j["auto_same"] else ("fast",):
            t = j[kind]
            assert t["prompt"] == j["ids"], (key, kind)  # every word of the prompt is a kept token
            assert max(t["held_out_ids"]) < j["size"] and t["len"] == j["size"], (key, kind)  # only the model's ids
            if not key.startswith("tiny-bert"):  # byte-level BPE, every byte kept: lossless
                assert t["held_out_back"] == HELD_OUT, (key, kind)
        if key == "tiny-qwen2-vocab":  # what AutoTokenizer gives instead: not the model's ids
            assert j["auto"]["prompt"] != j["ids"]


def test_remapped_tokenizer_agrees_on_held_out_text():
    """GPT-2 BPE pruned to the tokens of a calibration text: on held-out text the stock tokenizer
    never emits a missing id, loses no character, and gives RemappedTokenizer's ids for every word
    whose tokens are all kept and reachable (the guarantee), and for nearly all other words."""
    from minilib.data import load_text
    from minilib.models.tokenizers import gpt2_tokenizer
    tok = gpt2_tokenizer()
    text = load_text("wiki")
    calib, held = text[:200_000], text[-30_000:]
    keep = ~mask_vocab(token_counts(torch.tensor(tok(calib)["input_ids"]), len(tok)), tok)
    rtok = RemappedTokenizer(tok, make_vocab_map(keep, tok))
    new, info = remap_tokenizer(rtok)
    assert info["lossless"] and info["vocab_after"] == int(keep.sum()) and info["unreachable_tokens"] > 0
    ids = new(held)["input_ids"]
    assert max(ids) < rtok.vmap.new_size and new.decode(ids) == held
    words = [w for w, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(held)]
    reachable = info["reachable"]
    n_clean = same_clean = n_guaranteed = 0
    for w in words:
        old = [t.id for t in tok.backend_tokenizer.model.tokenize(w)]
        rtok.reset_counts()
        ref = rtok.map_ids(old)
        got = [t.id for t in new.backend_tokenizer.model.tokenize(w)]
        if rtok.fallback_count:
            continue
        n_clean += 1
        same_clean += got == ref
        if all(tok.convert_ids_to_tokens(i) in reachable for i in old):
            n_guaranteed += 1
            assert got == ref, w
    assert n_guaranteed > 1000 and n_clean > n_guaranteed
    assert same_clean / n_clean > 0.98  # measured 0.997 (wiki); the rest use unreachable kept tokens


def test_tokenizer_without_all_byte_symbols_maps_unknown_characters_to_the_fallback_token():
    from minilib.models.tokenizers import gpt2_tokenizer
    tok = gpt2_tokenizer()
    keep = torch.zeros(len(tok), dtype=torch.bool)
    keep[tok("The cat sat on the mat.")["input_ids"]] = True
    keep[tok.eos_token_id] = True
    for c in " Thecatsonm.":  # the single characters of the text, but no other byte symbols
        keep[tok.convert_tokens_to_ids(tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(c)[0][0])] = True
    rtok = RemappedTokenizer(tok, make_vocab_map(keep, tok, fallback="unk"))
    new, info = remap_tokenizer(rtok)
    assert not info["lossless"] and info["missing_symbols"] > 200 and info["unk_token"] == "<|endoftext|>"
    ids = new("The cat sat on the zebra.")["input_ids"]  # 'z', 'b', 'r' have no symbol left
    unk = rtok.vmap.fallback_id
    assert ids.count(unk) == 3 and max(ids) < rtok.vmap.new_size  # not silently dropped
    assert new("The cat sat on the mat.")["input_ids"] == rtok.encode("The cat sat on the mat.")


def test_wordpiece_ids_equal_remapped_where_no_fallback():
    model, tok = prune("tiny-bert", False, True)
    new, info = remap_tokenizer(tok)
    assert info["model"] == "WordPiece" and not info["lossless"]
    text = "the cat saw a big dog and the dog played in the sun."
    got = new(text)["input_ids"]
    assert got == tok(text)["input_ids"] and tok.fallback_count == 0
    assert new.convert_ids_to_tokens(got)[0] == "[CLS]" and got[-1] == int(tok.vmap.old_to_new[102])
    # a word never seen: RemappedTokenizer maps each pruned piece to [UNK], WordPiece the whole word
    got, ref = new("a giraffe")["input_ids"], tok("a giraffe")["input_ids"]
    unk = tok.unk_token_id
    assert got.count(unk) == 1 and ref.count(unk) >= 1
    assert [i for i in got if i != unk] == [i for i in ref if i != unk]


def test_refuses_a_folder_it_did_not_write(tmp_path):
    model, tok, _ = load("tiny-llama")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(DestinationError, match="not written by a minilib export"):
        export_hf(model, tok, target)
    assert (target / "notes.txt").read_text() == "keep me"
    out = tmp_path / "export"
    export_hf(model, tok, out)
    export_hf(model, tok, out)  # its own export: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine"]


def test_vocab_pruned_model_needs_its_remapped_tokenizer(tmp_path):
    model, _ = prune("tiny-llama", False, True)
    _, base, _ = load("tiny-llama")
    with pytest.raises(ExportError, match="RemappedTokenizer"):
        export_hf(model, base, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_export_leaves_the_model_unchanged():
    model, tok = prune("tiny-phi", True, False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    widths = ffn_widths(model)
    hf, info = hf_model(model)
    assert ffn_widths(model) == widths and ffn_widths(hf) == [max(widths)] * len(widths)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config.intermediate_size == 128 and hf.config.intermediate_size == max(widths)


@pytest.mark.integration
def test_smollm2_pruned_vocabulary_tokenizer_on_real_text(smollm2):
    """SmolLM2's tokenizer pruned to the tokens of half of TinyStories: on the held-out tenth the
    exported tokenizer round-trips the text, emits only kept ids and gives RemappedTokenizer's ids
    on at least 98% of the words that tokenizer encodes without fallback (measured: 99.4%)."""
    from minilib.data import load_text
    tok = smollm2.tokenizer
    text = load_text("tiny")
    calib, held = text[: len(text) // 2], text[len(text) - len(text) // 10:]
    keep = ~mask_vocab(token_counts(torch.tensor(tok(calib, add_special_tokens=False)["input_ids"]), len(tok)), tok)
    rtok = RemappedTokenizer(tok, make_vocab_map(keep, tok))
    new, info = remap_tokenizer(rtok)
    ids = new(held)["input_ids"]
    assert info["lossless"] and new.decode(ids) == held and max(ids) < rtok.vmap.new_size
    backend = tok.backend_tokenizer
    clean = same = 0
    for w, _ in backend.pre_tokenizer.pre_tokenize_str(held):
        rtok.reset_counts()
        ref = rtok.map_ids([t.id for t in backend.model.tokenize(w)])
        if not rtok.fallback_count:
            clean += 1
            same += [t.id for t in new.backend_tokenizer.model.tokenize(w)] == ref
    assert clean > 3000 and same / clean >= 0.98


def test_export_carries_hashes_that_load_checks(tmp_path):
    from minilib.export.hf import check_export
    from minilib.models import CorruptModelError
    model, tok, _ = load("tiny-llama")
    d = tmp_path / "export"
    export_hf(model, tok, d)
    man = json.loads((d / ".minilib-manifest.json").read_text())
    assert man["minilib"] == "export" and {"model.safetensors", "config.json", "minilib_export.json"} <= set(
        man["files"])
    check_export(d)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(load(d).model(input_ids=ids).logits, model(input_ids=ids).logits)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="exported model .* is corrupted.*model.safetensors fails its sha256"):
        load(d)
    with pytest.raises(CorruptModelError, match="model.safetensors fails its sha256"):
        check_export(d)
    (d / "minilib_export.json").write_text("{}")
    with pytest.raises(CorruptModelError, match="minilib_export.json has size"):
        check_export(d)


def test_export_over_an_export_never_deletes_a_user_file(tmp_path):
    model, tok, _ = load("tiny-llama")
    out = tmp_path / "export"
    export_hf(model, tok, out)
    (out / "README.md").write_text("my model card")
    with pytest.raises(DestinationError, match="not written by a minilib export: README.md"):
        export_hf(model, tok, out)
    assert (out / "README.md").read_text() == "my model card"
    export_hf(model, tok, out, overwrite=True)  # asked for: exported, the card kept
    assert (out / "README.md").read_text() == "my model card"
    assert json.loads((out / ".minilib-manifest.json").read_text())["kept"] == ["README.md"]
    load(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_minilib_reads_an_exported_tokenizer_as_written(tmp_path):
    """Stock AutoTokenizer rebuilds a qwen2 export's pruned tokenizer as Qwen2Tokenizer (no ignore_merges:
    the words fall apart); the export warns, and minilib's load and load_compressed read tokenizer.json
    as written, with the model's ids."""
    from transformers import AutoTokenizer

    from minilib.export import load_compressed
    model, tok = prune("tiny-qwen2", False, True)
    with pytest.warns(TokenizerWarning, match="as Qwen2Tokenizer.*PreTrainedTokenizerFast.from_pretrained"):
        info = export_hf(model, tok, tmp_path / "q")
    assert info["tokenizer"]["auto_tokenizer"] == {"class": "Qwen2Tokenizer", "same_ids": False}
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    assert AutoTokenizer.from_pretrained(tmp_path / "q")(PROMPT, add_special_tokens=False)["input_ids"] != ids
    assert load(tmp_path / "q").tokenizer(PROMPT, add_special_tokens=False)["input_ids"] == ids
    assert load_compressed(tmp_path / "q")[1](PROMPT, add_special_tokens=False)["input_ids"] == ids


@pytest.mark.parametrize("name", FAMILIES)
def test_the_report_says_what_the_folder_saves(name):
    """``ffn_params_removed`` is what the pruning removed in memory, ``ffn_params_removed_exported``
    what the folder still saves (the padding back to one width subtracted); with equal widths the two
    are the same and no padding comes back."""
    import copy
    base = tuple(load(name))[:2]
    dense = sum(p.numel() for p in base[0].parameters())
    unequal, _ = prune(name, True, False, base=base)
    equal = copy.deepcopy(base[0])
    g = torch.Generator().manual_seed(0)
    widths = ffn_widths(equal)
    masks = [torch.rand(w, generator=g) < f for w, f in zip(widths, (0.3, 0.6))]
    remove_neurons(equal, masks, equal_widths=True, scores=[torch.rand(w, generator=g) for w in widths])
    assert len(set(ffn_widths(equal))) == 1
    assert sum(int((~m).sum()) for m in masks) - sum(ffn_widths(equal)) in range(-len(widths), len(widths) + 1)
    for model, padded in ((unequal, True), (equal, False)):
        hf, info = hf_model(model)
        exported = sum(p.numel() for p in hf.parameters())
        assert info["ffn_width_config"] == widths[0]
        assert info["ffn_params_removed"] == dense - sum(p.numel() for p in model.parameters()) > 0
        assert info["ffn_params_removed_exported"] == dense - exported
        assert (info["padding_params"] > 0) == padded
        assert ("zero padding parameters come back" in info["saving"]) == padded
        assert ("keeps the whole saving" in info["saving"]) == (not padded)
    _, info = hf_model(base[0])
    assert info["ffn_params_removed"] == 0 and "no FFN neuron was removed" in info["saving"]
