"""Data: corpora, disjoint splits, windows, MCQ and classification schemas."""

import json

import numpy as np
import pytest
import torch

from minilib.data import (CorpusError, MCQItem, SchemaError, calibration_windows, corpus_splits, eval_windows,
                          load_classification, load_mcq, load_text, split_tokens, validate_mcq)
from minilib.models.tokenizers import gpt2_tokenizer

# --- assets ---------------------------------------------------------------------------------------


def test_embedded_corpora_and_local_files(tmp_path):
    wiki = load_text("wiki")
    assert len(wiki) > 1_000_000 and "<doc" not in wiki
    (tmp_path / "a.txt").write_text("hello world\n" * 10)
    assert load_text(tmp_path / "a.txt").startswith("hello")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    assert load_text(tmp_path / "b.jsonl") == "one\n\ntwo"
    with pytest.raises(FileNotFoundError, match="neither an embedded corpus"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(CorpusError, match="no 'text' field"):
        (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
        load_text(tmp_path / "c.jsonl")


def test_splits_are_disjoint_and_windows_stay_inside():
    ids = torch.arange(10_000)
    sp = split_tokens(ids, {"calib": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1})
    sp.assert_disjoint()
    calib = calibration_windows(sp["calib"], n=64, seqlen=100, seed=3)
    test = eval_windows(sp["test"], seqlen=100)
    assert calib.shape == (64, 100) and test.shape == (10, 100)
    assert set(calib.flatten().tolist()).isdisjoint(test.flatten().tolist())
    assert calib.max() < 5000 and test.min() >= 9000
    # eval windows are contiguous and non-overlapping
    assert torch.equal(test.flatten(), sp["test"][:1000])
    # calibration windows are seeded
    assert torch.equal(calib, calibration_windows(sp["calib"], 64, 100, seed=3))
    assert not torch.equal(calib, calibration_windows(sp["calib"], 64, 100, seed=4))


def test_real_corpus_splits_share_no_token_positions():
    tok = gpt2_tokenizer()
    sp = corpus_splits(tok, "tiny")
    spans = sorted(sp.ranges.values())
    assert spans[0][0] == 0 and all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert sum(b - a for a, b in spans) <= len(sp.ids)


def test_corpus_too_short():
    with pytest.raises(CorpusError, match="too short"):
        eval_windows(torch.arange(100), seqlen=512)
    with pytest.raises(CorpusError, match="too short"):
        calibration_windows(torch.arange(100), n=4, seqlen=512)
    with pytest.raises(CorpusError, match="empty"):
        split_tokens(torch.arange(5), {"a": 0.5, "b": 0.01})
    with pytest.raises(ValueError, match="sum to at most 1"):
        split_tokens(torch.arange(100), {"a": 0.8, "b": 0.8})


@pytest.mark.parametrize("name,n,k", [("arc_easy", 570, 4), ("sciq", 1000, 4), ("piqa", 1838, 2),
                                      ("boolq", 3270, 2), ("mmlu:anatomy", 135, 4), ("openbookqa", 500, 4)])
def test_embedded_mcq_sets(name, n, k):
    items = load_mcq(name)
    from collections import Counter
    assert len(items) == n and Counter(len(it.choices) for it in items).most_common(1)[0][0] == k
    assert 0 < np.mean([it.answer == 0 for it in items]) < 1 or name == "sciq"


def test_mcq_schema_errors(tmp_path):
    with pytest.raises(SchemaError, match="at least 2 choices"):
        validate_mcq([MCQItem("q", ("only",), 0)])
    with pytest.raises(SchemaError, match="not an index"):
        validate_mcq([MCQItem("q", ("a", "b"), 2)])
    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps({"question": "q", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(SchemaError, match="missing field 'answer'"):
        load_mcq(str(f))
    with pytest.raises(KeyError, match="unknown MCQ set"):
        load_mcq("no_such_set")
    with pytest.raises(KeyError, match="unknown MMLU subject"):
        load_mcq("mmlu:underwater_basketweaving")
    with pytest.raises(FileNotFoundError):
        load_mcq(str(tmp_path / "missing.jsonl"))


def test_classification_sets(tmp_path):
    sarcasm = load_classification("sarcasm")
    assert len(sarcasm) == 28614 and set(np.unique(sarcasm.labels)) == {0, 1}
    train, test = sarcasm.split(0.2, seed=0)
    assert len(test) == 5723 and len(train) + len(test) == len(sarcasm)
    from collections import Counter  # disjoint as multisets of examples (headlines can repeat)
    assert Counter(train.texts) + Counter(test.texts) == Counter(sarcasm.texts)
    assert abs(test.labels.mean() - sarcasm.labels.mean()) < 0.03
    sst2 = load_classification("sst2")
    assert len(sst2) == 872 and sst2.label_names == ("negative", "positive")
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(SchemaError, match="no labels"):
        load_classification(str(f))



def test_mcq_subsets_are_one_seeded_subset_everywhere():
    """Every notebook that scores n items of a set scores the same n items (one permutation fixed by
    SUBSET_SEED), and a smaller subset lies inside a larger one."""
    from minilib.data.tasks import SUBSET_SEED
    q = lambda items: [it.question for it in items]  # noqa: E731
    small, large = load_mcq("arc_easy", n=24), load_mcq("arc_easy", n=60)
    assert q(small) == q(large)[:24] and q(load_mcq("arc_easy", n=60, seed=SUBSET_SEED)) == q(large)
    whole = load_mcq("arc_easy")
    assert q(large) != q(whole)[:60]                       # a seeded shuffle, not the file's first items
    assert q(load_mcq("arc_easy", n=60, seed=None)) == q(whole)[:60]
    assert set(q(large)) <= set(q(whole))
