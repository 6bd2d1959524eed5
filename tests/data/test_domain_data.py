"""Domain corpora: contiguous disjoint splits; MCQ schema errors."""

import json

import pytest
import torch

from minilib.data import SchemaError, corpus_splits, load_mcq
from minilib.models import load


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

