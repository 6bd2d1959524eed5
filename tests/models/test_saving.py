"""Saving reshaped models: one folder, atomic, never clobbering a user's folder, always with the
model's own tokenizer and head."""

import json
from pathlib import Path

import pytest
import torch

from minilib.io import DestinationError
from minilib.models import (PlanMismatchError, RemappedTokenizer, ffn_widths, is_saved_model, load, load_model,
                            remove_ffn_neurons, save_model, token_counts)
from minilib.models.saving import SAVED, CorruptModelError, write_hashes
from minilib.prune import mask_vocab, remove_vocab


def _vocab_pruned(text):
    m = load("tiny-llama")
    ids = torch.tensor(m.tokenizer(text, add_special_tokens=False)["input_ids"])
    tok, _ = remove_vocab(m.model, m.tokenizer, mask_vocab(token_counts(ids, 50257), m.tokenizer))
    return m.model, tok, ids


def test_refuses_a_folder_it_did_not_write(tmp_path):
    m = load("tiny-gpt2")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    with pytest.raises(DestinationError, match="not written by minilib"):
        save_model(m.model, m.tokenizer, target)
    assert (target / "thesis.tex").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    save_model(m.model, m.tokenizer, target, overwrite=True)  # asked for: saved, and the user's file kept
    assert is_saved_model(target) and (target / "thesis.tex").read_text() == "do not delete"
    assert load(target).plan is not None  # a kept file is part of the verified folder


def test_replaces_a_saved_model_atomically(tmp_path):
    m = load("tiny-gpt2")
    p = save_model(m.model, m.tokenizer, tmp_path / "m", extra={"v": 1})
    remove_ffn_neurons(m.model, 0, torch.arange(64))
    save_model(m.model, m.tokenizer, p, extra={"v": 2})
    back = load(p)
    assert back.plan["extra"] == {"v": 2} and ffn_widths(back.model) == [64, 128]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m"]


def test_vocab_pruned_model_comes_back_with_its_tokenizer(tmp_path, logits, cat_text):
    model, tok, ids = _vocab_pruned(cat_text)
    head = torch.nn.Linear(64, 2)
    p = save_model(model, tok, tmp_path / "m", head=head)
    files = {q.name for q in Path(p).iterdir()}
    assert {"vocab_map.json", "model.safetensors", "minilib_plan.json", "decision_head.safetensors"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".pth")) for f in files)
    for back in (load(p), load_model(p)):  # both entry points
        assert isinstance(back.tokenizer, RemappedTokenizer) and back.tokenizer.vmap.kept == tok.vmap.kept
        x = torch.tensor(tok.map_ids(ids[:40].tolist()))[None]
        torch.testing.assert_close(logits(back.model, x), logits(model, x))
        torch.testing.assert_close(back.head.weight, head.weight)
        assert back.tokenizer.decode(back.tokenizer.encode("the little cat")) == "the little cat"


def test_missing_vocab_map_is_an_error(tmp_path, cat_text):
    model, tok, _ = _vocab_pruned(cat_text)
    p = save_model(model, tok, tmp_path / "m")
    (p / "vocab_map.json").unlink()
    with pytest.raises(PlanMismatchError, match="vocab_map.json is missing"):
        load(p)


def test_pruned_vocabulary_needs_its_tokenizer_to_save(tmp_path, cat_text):
    model, tok, _ = _vocab_pruned(cat_text)
    with pytest.raises(PlanMismatchError, match="RemappedTokenizer"):
        save_model(model, tok.base, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_corrupt_plan_is_a_clear_error(tmp_path):
    m = load("tiny-opt")
    p = save_model(m.model, m.tokenizer, tmp_path / "m")
    (p / "minilib_plan.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="minilib_plan.json has size 9"):
        load(p)
    write_hashes(p, SAVED)  # as if the manifest had been rewritten too: the parse errors stay clear
    with pytest.raises(PlanMismatchError, match="not valid JSON"):
        load(p)
    plan = {"version": 1, "class": "NoSuchModel", "reshaped": {}, "extra": {}}
    (p / "minilib_plan.json").write_text(json.dumps(plan))
    write_hashes(p, SAVED)
    with pytest.raises(PlanMismatchError, match="NoSuchModel"):
        load(p)


def test_a_saved_qwen2_model_keeps_its_own_tokenizer(tmp_path):
    """transformers 5's AutoTokenizer rebuilds any qwen2 folder's tokenizer as Qwen2Tokenizer (its own
    pre-tokenizer: digits one by one); load_model reads the class that saved it, so the tiny model's
    GPT-2 BPE comes back with GPT-2's ids."""
    from transformers import AutoTokenizer
    m = load("tiny-qwen2")
    text = "In 1984 there were 42 cats."
    want = m.tokenizer(text)["input_ids"]
    p = save_model(m.model, m.tokenizer, tmp_path / "q")
    assert type(AutoTokenizer.from_pretrained(p)).__name__ == "Qwen2Tokenizer"
    assert AutoTokenizer.from_pretrained(p)(text)["input_ids"] != want  # what a plain AutoTokenizer would give
    back = load(p).tokenizer
    assert type(back) is type(m.tokenizer) and back(text)["input_ids"] == want
