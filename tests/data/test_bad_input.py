"""Bad data and bad arguments fail early, with an error that names the file and line, the corpus, or
the argument and its allowed range -- never a traceback deep in torch, a bare KeyError, or silence."""

import json
import math

import numpy as np
import pytest
import torch

from minilib.data import (ClassificationSet, CorpusError, MCQItem, SchemaError, calibration_set,
                          calibration_windows, corpus_splits, eval_windows, load_classification, load_mcq,
                          load_text, load_tokens, split_tokens, tokenize_text, validate_mcq)
from minilib.models import load


@pytest.fixture(scope="module")
def tok():
    return load("tiny-llama").tokenizer


def never_called(*a, **k):
    raise AssertionError("the tokenizer was called: the bad argument was not caught first")


def jsonl(path, *rows):
    """Write rows (dicts are dumped, strings written as they are) one per line."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return path


# --- corpora --------------------------------------------------------------------------------------


def test_text_files_name_file_and_line_on_encoding_errors(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("line one\nline two\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt:3: not UTF-8 text \(byte 0xe9 at column 4\)"):
        load_text(f)
    g = tmp_path / "bom.txt"
    g.write_bytes(b"\xef\xbb\xbfhello\n")
    assert load_text(g) == "hello\n"  # the BOM is not text
    with pytest.raises(CorpusError, match="is a folder"):
        load_text(tmp_path)
    with pytest.raises(TypeError, match="corpus must be a name or a path"):
        load_text(None)
    for spec in ("hf:", "hf:wikitext", "hf::test", "hf:a:b:c:d:e"):  # checked before any download
        with pytest.raises(CorpusError, match="bad hf spec"):
            load_text(spec)


def test_jsonl_corpus_checks_every_row(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", {"text": "one"}, {"text": "two"}, {"body": "three"})
    with pytest.raises(CorpusError, match=r"c\.jsonl:3: row has no 'text' field \(fields: \['body'\]\)"):
        load_text(f)
    jsonl(f, {"text": "one"}, '{"text": "two"', {"text": "three"})
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: invalid JSON"):
        load_text(f)
    jsonl(f, {"text": "one"}, {"text": None})
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: 'text' must be a string, got NoneType"):
        load_text(f)
    jsonl(f, {"text": "one"}, '["a", "list"]')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: each line must be a JSON object, got list"):
        load_text(f)
    f.write_bytes(b'{"text": "one"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not UTF-8"):
        load_text(f)
    jsonl(f, "", "  ")
    with pytest.raises(CorpusError, match="empty"):
        load_text(f)
    # a raw U+2028 inside a JSON string is text, not a line break
    jsonl(f, {"text": "a\u2028b"}, {"text": "c"})
    assert load_text(f) == "a\u2028b\n\nc"


def test_short_corpus_errors_name_the_corpus(tmp_path, tok):
    f = tmp_path / "short.txt"
    f.write_text("A few words only.")
    with pytest.raises(CorpusError, match=r"split '\w+' of corpus '.*short\.txt' would be empty"):
        corpus_splits(tok, f)
    f.write_text("word " * 400)
    with pytest.raises(CorpusError, match=r"the calib split of corpus '.*short\.txt' has \d+ tokens, too short "
                                          r"for windows of 512"):
        calibration_set(tok, f, nsamples=2, seqlen=512)
    with pytest.raises(CorpusError, match="too short for one window of 512"):
        eval_windows(corpus_splits(tok, f)["test"], 512)
    with pytest.raises(KeyError, match=r"no split 'valid' in corpus '.*short\.txt'; splits are"):
        corpus_splits(tok, f)["valid"]
    with pytest.raises(CorpusError, match="gives no tokens"):
        tokenize_text(lambda chunks, **kw: {"input_ids": [[] for _ in chunks]}, "text", name="x")
    with pytest.raises(CorpusError, match="empty"):
        tokenize_text(tok, "")


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(n=0), ValueError, "n must be an integer >= 1, got 0"),
    (dict(n=-3), ValueError, "n must be an integer >= 1, got -3"),
    (dict(n=2.5), TypeError, r"n must be an integer >= 1, got 2.5 \(float\)"),
    (dict(n=True), TypeError, "n must be an integer >= 1, got True"),
    (dict(seqlen=0), ValueError, "seqlen must be an integer >= 1"),
    (dict(seqlen="64"), TypeError, "seqlen must be an integer >= 1, got '64'"),
    (dict(seed=-1), ValueError, "seed must be an integer >= 0"),
    (dict(seed=0.5), TypeError, "seed must be an integer >= 0"),
])
def test_calibration_windows_arguments(kwargs, err, match):
    args = dict(n=4, seqlen=16, seed=0) | kwargs
    with pytest.raises(err, match=match):
        calibration_windows(torch.arange(1000), **args)


def test_window_and_split_arguments(tok):
    ids = torch.arange(1000)
    assert calibration_windows(ids, np.int64(2), 8).shape == (2, 8)  # numpy integers are integers
    with pytest.raises(ValueError, match="max_windows must be an integer >= 1 or None, got 0"):
        eval_windows(ids, 10, max_windows=0)
    with pytest.raises(ValueError, match="seqlen must be an integer >= 1, got -1"):
        eval_windows(ids, -1)
    with pytest.raises(TypeError, match=r"1-D tensor of token ids.*shape \(10, 100\)"):
        eval_windows(ids.view(10, 100), 10)
    with pytest.raises(TypeError, match="1-D tensor of token ids.*torch.float32"):
        calibration_windows(ids.float(), 2, 8)
    with pytest.raises(TypeError, match=r"1-D tensor of token ids \(integers\), got list"):
        split_tokens(list(range(10)), {"a": 0.5})
    for bad in ({}, {"a": "0.5"}, {"a": math.nan}, {"a": -0.1}, {"a": True}, [0.5, 0.5], {"": 0.5}):
        with pytest.raises(ValueError, match="fraction|split names"):
            split_tokens(ids, bad)
    # checked before anything is read or tokenized
    with pytest.raises(ValueError, match="sum to at most 1"):
        corpus_splits(never_called, "wiki", fractions={"a": 0.7, "b": 0.7})
    with pytest.raises(ValueError, match="nsamples must be an integer >= 1, got 0"):
        calibration_set(never_called, "c4", nsamples=0)
    with pytest.raises(ValueError, match="max_chars must be an integer >= 1 or None, got 0"):
        load_tokens(never_called, "wiki", max_chars=0)
    with pytest.raises(TypeError, match="pass the .tokenizer of a loaded model"):
        corpus_splits(load("tiny-llama"), "wiki")


# --- MCQ ------------------------------------------------------------------------------------------

GOOD = {"question": "Question: 2 + 2?\nAnswer:", "choices": ["3", "4"], "answer": 1}


@pytest.mark.parametrize("row,match", [
    (GOOD | {"choices": "AB"}, r"'choices' must be a list of strings, got str 'AB' \(a string is not a list"),
    (GOOD | {"choices": []}, "needs at least 2 choices, got 0"),
    (GOOD | {"choices": ["only"], "answer": 0}, "needs at least 2 choices, got 1"),
    (GOOD | {"choices": ["a", 3]}, "choice 1 must be a non-empty string, got 3"),
    (GOOD | {"choices": ["a", " "]}, "choice 1 must be a non-empty string"),
    (GOOD | {"answer": 2}, r"answer 2 is not an index into its 2 choices \(0..1\)"),
    (GOOD | {"answer": -1}, "answer -1 is not an index"),
    (GOOD | {"answer": "1"}, r"answer must be an integer index into the choices \(0..1\), got str '1'"),
    (GOOD | {"answer": 1.0}, "answer must be an integer index.*got float"),
    (GOOD | {"answer": True}, "answer must be an integer index.*got bool"),
    (GOOD | {"question": ""}, "'question' must be a non-empty string"),
    (GOOD | {"question": ["a"]}, "'question' must be a non-empty string"),
    ({"question": "q", "answer": 0}, r"missing field 'choices'; the MCQ schema is question, choices, answer"),
    ('{"question": "q", ', "invalid JSON"),
    ("3", "each line must be a JSON object, got int"),
])
def test_mcq_file_rows_are_checked_with_file_and_line(tmp_path, row, match):
    f = jsonl(tmp_path / "m.jsonl", GOOD, GOOD, row, GOOD)  # the bad row is the third: not only the first
    with pytest.raises(SchemaError, match=r"m\.jsonl:3: " + match):
        load_mcq(f)


def test_mcq_file_encoding_empty_and_suffix(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b'\n{"question": "caf\xe9?", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(SchemaError, match=r"m\.jsonl:2: not UTF-8"):
        load_mcq(f)
    jsonl(f, "")
    with pytest.raises(SchemaError, match="holds no MCQ items"):
        load_mcq(f)
    g = tmp_path / "m.json"
    g.write_text(json.dumps([GOOD]))
    with pytest.raises(SchemaError, match=r"m\.json: MCQ files are JSON lines with the suffix \.jsonl"):
        load_mcq(g)
    with pytest.raises(TypeError, match="MCQ set must be a name or a path"):
        load_mcq(["arc_easy"])


def test_mcq_n_and_seed(tmp_path):
    f = jsonl(tmp_path / "m.jsonl", *[GOOD] * 5)
    for n, err in [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("3", TypeError)]:
        with pytest.raises(err, match="n must be an integer >= 1 or None"):
            load_mcq(f, n=n)
    with pytest.raises(ValueError, match="seed must be an integer >= 0 or None"):
        load_mcq(f, seed=-1)
    assert len(load_mcq(f, n=3, seed=1)) == 3
    with pytest.warns(UserWarning, match="has 5 items, fewer than n=9: using all 5"):
        assert len(load_mcq(f, n=9)) == 5


def test_validate_mcq_items():
    assert validate_mcq([MCQItem("q", ("a", "b"), np.int64(1))])  # numpy integers are integers
    with pytest.raises(SchemaError, match="set item 1: answer must be an integer index.*got bool"):
        validate_mcq([MCQItem("q", ("a", "b"), 0), MCQItem("q", ("a", "b"), True)], "set")
    with pytest.raises(SchemaError, match="item 0: expected an MCQItem"):
        validate_mcq([("q", ("a", "b"), 0)])
    with pytest.raises(SchemaError, match="is empty"):
        validate_mcq([])
    with pytest.raises(SchemaError, match="a string is not a list of choices"):
        validate_mcq([MCQItem("q", "AB", 0)])


# --- classification -------------------------------------------------------------------------------


@pytest.mark.parametrize("row,match", [
    ({"text": "x", "label": "pos"}, r"'label' must be an integer >= 0 \(0, 1, ...\), got str 'pos'"),
    ({"text": "x", "label": 1.5}, "'label' must be an integer >= 0.*got float 1.5"),
    ({"text": "x", "label": True}, "'label' must be an integer >= 0.*got bool"),
    ({"text": "x", "label": -1}, "'label' must be an integer >= 0.*got int -1"),
    ({"text": "x", "label": None}, "'label' must be an integer >= 0.*got NoneType"),
    ({"text": "x"}, "missing field 'label': no labels for the task on this row"),
    ({"label": 0}, "missing field 'text'"),
    ({"text": 3, "label": 0}, "'text' must be a string, got int"),
    ('{"text": "x", "label": 0', "invalid JSON"),
])
def test_classification_file_rows_are_checked_with_file_and_line(tmp_path, row, match):
    f = jsonl(tmp_path / "c.jsonl", {"text": "a", "label": 0}, {"text": "b", "label": 1}, row)
    with pytest.raises(SchemaError, match=r"c\.jsonl:3: " + match):
        load_classification(f)


def test_classification_empty_file_and_split_arguments(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", "")
    with pytest.raises(SchemaError, match="holds no rows"):
        load_classification(f)
    (tmp_path / "c.csv").write_text("text,label\nx,0\n")
    with pytest.raises(SchemaError, match=r"c\.csv: classification files are JSON lines with the suffix \.jsonl"):
        load_classification(tmp_path / "c.csv")
    ds = ClassificationSet(list("abcde"), np.array([0, 1, 0, 1, 0]), ("0", "1"))
    for bad in (0, 1, 1.5, -0.2, "0.2", True):
        with pytest.raises(ValueError, match="test_fraction must be a number in \\(0, 1\\)"):
            ds.split(bad)
    with pytest.raises(SchemaError, match="leaves an empty test part"):
        ds.split(0.05)
    with pytest.raises(SchemaError, match="leaves an empty train part"):
        ds.split(0.95)
    train, test = ds.split(0.4, seed=0)
    assert (len(train), len(test)) == (3, 2) and sorted(train.texts + test.texts) == list("abcde")
