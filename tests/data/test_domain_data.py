"""Domain corpora: contiguous disjoint splits; MCQ schema errors."""

import json

import pytest
import torch

from minilib.data import SchemaError, corpus_splits, load_mcq
from minilib.eval import lm_nll
from minilib.models import (adapter_for, load,
                            load_model, save_model)
from minilib.prune import mask_threshold, score_neurons_l1


TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 16


def mask_ffn_neurons(model, st, eps, criterion="any"):
    return mask_threshold(score_neurons_l1(model, st, criterion), eps)


def lm_loss(model, x):
    return lm_nll(model, x)


def save_pruned(model, tok, path, extra=None):
    return save_model(model, tok, path, extra=extra)


def load_remapped_tokenizer(path, model):
    tok = load_model(path).tokenizer
    tok.check_model(model)
    return tok


def windows(tok, n=8, seqlen=32):
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    return ids[: n * seqlen].view(n, seqlen)


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def zero_neurons(model, layer, idx):
    """Make FFN neurons ``idx`` of block ``layer`` output exactly zero (zero their up/gate rows)."""
    ffn = adapter_for(model).ffn(adapter_for(model).blocks(model)[layer])
    from minilib.models.linear import weight_oi
    with torch.no_grad():
        for part in ("up", "gate"):
            lin = getattr(ffn, part)
            if lin is not None:
                weight_oi(lin)[idx] = 0
                if lin.bias is not None:
                    lin.bias.data[idx] = 0


def test_splits_disjoint_on_domain_corpus():
    _, tok, _ = load("tiny-llama")
    sp = corpus_splits(tok, "tiny")
    sp.assert_disjoint()
    spans = sorted(sp.ranges.values())
    assert [s[0] for s in spans[1:]] == [s[1] for s in spans[:-1]]  # contiguous, no gap, no overlap
    used = torch.zeros(len(sp.ids), dtype=torch.int)
    for a, b in sp.ranges.values():
        used[a:b] += 1
    assert int(used.max()) == 1
    assert set(sp.ranges) == {"calib", "train", "dev", "test"}


def test_bad_mcq_schema(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(SchemaError, match="answer 5 is not an index"):
        load_mcq(str(f))
    f.write_text(json.dumps({"question": "Q?", "options": ["a", "b"], "answer": 0}) + "\n")
    with pytest.raises(SchemaError, match="missing field"):
        load_mcq(str(f))

