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


# --- data that cannot be what the user meant ---------------------------------------------


@pytest.mark.parametrize("data,line,col", [
    (b"\x00" * 64, 1, 1),                                      # a file of NUL bytes
    (b"some text\nmore\x00\x01\x02 text\n", 2, 5),              # binary bytes inside text
    ("hello\nworld\n".encode("utf-16-le"), 1, 2),              # UTF-16: a NUL after every ASCII letter
])
def test_binary_content_is_not_a_corpus(tmp_path, data, line, col):
    f = tmp_path / "blob.txt"
    f.write_bytes(data)
    with pytest.raises(CorpusError, match=rf"blob\.txt:{line}: binary content, not text \(a NUL byte at column "
                                          rf"{col}"):
        load_text(f)
    g = tmp_path / "blob.jsonl"                                 # the same check for JSON lines
    g.write_bytes(b'{"text": "a"}\n' + data)
    with pytest.raises(CorpusError, match=rf"blob\.jsonl:{line + 1}: binary content"):
        load_text(g)
    h = tmp_path / "blob_mcq.jsonl"                             # and for MCQ / classification files
    h.write_bytes(data)
    with pytest.raises(SchemaError, match="binary content"):
        load_mcq(h)
    with pytest.raises(SchemaError, match="binary content"):
        load_classification(h)


@pytest.mark.parametrize("name,content,fmt", [
    ("records.json", json.dumps([{"text": "one"}, {"text": "two"}]), "JSON"),
    ("records.JSON", json.dumps({"text": "one"}), "JSON"),
    ("table.csv", "text,label\none,0\n", "CSV"),
    ("data.parquet", "PAR1", "Parquet"),
    ("conf.yaml", "text: one\n", "YAML"),
])
def test_structured_files_are_rejected_with_the_formats_read(tmp_path, name, content, fmt):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(CorpusError) as e:
        load_text(f)
    msg = str(e.value)
    assert str(f) in msg and f"{fmt} files are not read as corpora" in msg
    assert ".txt" in msg and ".jsonl" in msg                  # the formats that are read
    with pytest.raises(CorpusError, match="not read as corpora"):
        corpus_splits(never_called, f)                        # before any tokenizing
    if name == "records.json":
        assert "convert it to .jsonl" in msg
        jsonl(tmp_path / "records.jsonl", {"text": "one"}, {"text": "two"})   # the documented way works
        assert load_text(tmp_path / "records.jsonl") == "one\n\ntwo"


def test_split_too_short_names_the_split_and_the_corpus(tmp_path, tok):
    f = tmp_path / "short.txt"
    f.write_text("word " * 400)
    sp = corpus_splits(tok, f)
    for part in ("dev", "test", "train"):
        with pytest.raises(CorpusError, match=rf"the {part} split of corpus '.*short\.txt' has \d+ tokens, too short "
                                              r"for one window of 512"):
            eval_windows(sp[part], 512)
        with pytest.raises(CorpusError, match=rf"the {part} split of corpus '.*short\.txt' has \d+ tokens, too short "
                                              r"for windows of 512"):
            calibration_windows(sp[part], 2, 512)
    assert sp.describe("dev") == f"the dev split of corpus {str(f)!r}"
    with pytest.raises(CorpusError, match="my part has"):        # an explicit name wins
        eval_windows(sp["dev"], 512, name="my part")
    with pytest.raises(CorpusError, match="^corpus part has"):   # a tensor of unknown origin
        eval_windows(sp["dev"].clone(), 512)
    with pytest.raises(CorpusError, match=r"split 'dev' of corpus 'tiny-ids' would be empty"):
        split_tokens(torch.arange(5), {"calib": 0.9, "dev": 0.05}, name="tiny-ids")


MCQ_FILE_BAD = [
    (GOOD | {"choices": ["4", "4"], "answer": 1}, "choices 0 and 1 are the same text '4'"),
    (GOOD | {"choices": ["3", "4", "5", "4 "]}, "choices 1 and 3 are the same text '4'"),
    (GOOD | {"choices": [" 3", "4"]}, r"choice 0 ' 3' starts with whitespace; write choices without the leading "
                                      r"space \(the scorer puts one space"),
    (GOOD | {"choices": ["3", "\t4"]}, "choice 1 '\\\\t4' starts with whitespace"),
]


@pytest.mark.parametrize("row,match", MCQ_FILE_BAD, ids=[m[:30] for _, m in MCQ_FILE_BAD])
def test_mcq_file_choices_follow_the_documented_format(tmp_path, row, match):
    f = jsonl(tmp_path / "m.jsonl", GOOD, row)
    with pytest.raises(SchemaError, match=r"m\.jsonl:2: " + match):
        load_mcq(f)


def test_mcq_items_in_code_keep_lm_eval_spaces_and_warn_on_a_duplicated_answer():
    import warnings as w
    from minilib.data import DuplicateChoicesWarning
    with w.catch_warnings():
        w.simplefilter("error")
        validate_mcq([MCQItem("q", (" a", " b"), 0)])                # HellaSwag's endings: kept, as lm-eval scores them
        validate_mcq([MCQItem("q", ("west", "south", "west", "north"), 3)])   # SciQ: a distractor twice, harmless
    with pytest.warns(DuplicateChoicesWarning, match=r"set item 1: the answer \(choice 2\) and choice 0 are the same "
                                                     r"text 'x'.*never scored right"):
        validate_mcq([MCQItem("q", ("a", "b"), 0), MCQItem("q", ("x", "y", "x"), 2)], "set")
    with pytest.warns(DuplicateChoicesWarning, match="only by a tie"):
        validate_mcq([MCQItem("q", ("x", "y", "x"), 0)])


CLS_BAD = [
    ({"text": "", "label": 0}, "'text' is empty: it has no token to classify"),
    ({"text": "  \n", "label": 1}, "'text' is empty"),
]


@pytest.mark.parametrize("row,match", CLS_BAD, ids=["empty", "blank"])
def test_classification_file_empty_text_is_rejected(tmp_path, row, match):
    f = jsonl(tmp_path / "c.jsonl", {"text": "a", "label": 0}, {"text": "b", "label": 1}, row)
    with pytest.raises(SchemaError, match=r"c\.jsonl:3: " + match):
        load_classification(f)


def test_classification_file_labels_without_a_class_are_rejected(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", {"text": "a", "label": 0}, {"text": "b", "label": 2}, {"text": "c", "label": 2})
    with pytest.raises(SchemaError, match=r"c\.jsonl: labels are class ids 0..K-1.*class \[1\] of 0..2 has no row "
                                          r"\(labels present: \[0, 2\]\)"):
        load_classification(f)
    jsonl(f, {"text": "a", "label": 1}, {"text": "b", "label": 2})
    with pytest.raises(SchemaError, match=r"class \[0\] of 0..2 has no row"):
        load_classification(f)
    jsonl(f, {"text": "a", "label": 1}, {"text": "b", "label": 0})
    assert load_classification(f).label_names == ("0", "1")


@pytest.mark.parametrize("texts,labels,names,match", [
    (["a", "", "c"], [0, 1, 0], ("n", "p"), r"ClassificationSet texts\[1\] is empty"),
    (["a", " ", "c"], [0, 1, 0], ("n", "p"), r"texts\[1\] is only whitespace"),
    (["a", None], [0, 1], ("n", "p"), r"texts\[1\] must be a string, got NoneType"),
    ("abc", [0, 1, 0], ("n", "p"), "texts must be a list of strings, got str"),
    (["a", "b", "c"], [0, 2, 1], ("n", "p"), r"labels\[1\] = 2 is >= num_labels=2: the model cannot predict it; "
                                             r"labels must be class ids 0..1"),
    (["a", "b", "c"], [0, -1, 1], ("n", "p"), r"labels\[1\] = -1 is negative"),
    (["a", "b", "c"], [0.0, 1.0, 1.0], ("n", "p"), "labels must be integer class ids.*float64"),
    (["a", "b", "c"], [True, False, True], ("n", "p"), "labels must be integer class ids.*bool"),
    (["a", "b", "c"], [0, 1], ("n", "p"), r"one label per text: 3 texts, got labels of shape \(2,\)"),
    (["a", "b"], None, ("n", "p"), "no labels for the task"),
    (["a", "b"], [0, 1], (), "label_names must be a non-empty tuple of strings"),
])
def test_classification_set_checks_texts_and_labels_when_made(texts, labels, names, match):
    with pytest.raises(SchemaError, match=match):
        ClassificationSet(texts, labels if labels is None else np.asarray(labels), names)


def test_classification_set_labels_become_int64():
    ds = ClassificationSet(["a", "b"], [1, 0], ["n", "p"])
    assert ds.labels.dtype == np.int64 and ds.label_names == ("n", "p")
    assert ds.subset([1]).labels.tolist() == [0]


@pytest.mark.parametrize("texts,labels,num,match", [
    (["a", "b", "c"], [0, 2, 2], None, r"finetune_classifier: class \[1\] of 0..2 has no example among its 3 "
                                       r"\(labels present: \[0, 2\]\)"),
    (["a", "b", "c"], [0, 1, 1], 3, r"class \[2\] of 0..2 has no example"),
    (["a", "b", "c"], [1, 1, 1], None, r"needs examples of at least two classes, got 3 example\(s\) of \[1\]"),
    (["a", "b", "c"], [0, 1, 2], 2, r"labels\[2\] = 2 is >= num_labels=2: the model cannot predict it"),
    (["a", "b", "c"], [0, 1, -1], None, r"labels\[2\] = -1 is negative"),
    (["a", "", "c"], [0, 1, 0], None, r"texts\[1\] is empty"),
])
def test_training_data_checks(texts, labels, num, match):
    from minilib.data import check_training_data
    with pytest.raises(SchemaError, match=match):
        check_training_data(texts, labels, num, "finetune_classifier")
    assert check_training_data(["a", "b"], np.array([1, 0]), 2).tolist() == [1, 0]


def test_finetune_classifier_checks_its_data_before_any_compute():
    from minilib.train.classify import finetune_classifier
    m = load("tiny-llama")
    for texts, labels, head, match in [
            (["good film", "bad film", ""], [1, 0, 1], None, r"finetune_classifier: texts\[2\] is empty"),
            (["good film", "bad film", "ok"], [1, 0, -1], None, r"labels\[2\] = -1 is negative"),
            (["good film", "bad film", "ok"], [2, 0, 2], None, r"class \[1\] of 0..2 has no example"),
            (["good film", "bad film", "ok"], [1, 0, 2], torch.nn.Linear(32, 2),
             r"labels\[2\] = 2 is >= num_labels=2")]:
        with pytest.raises(SchemaError, match=match):
            finetune_classifier(m.model, never_called, texts, labels, method="lora", init_head=head, verbose=False)
