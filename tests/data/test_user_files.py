"""data/: the user's folder exists in a fresh clone, and its example corpus, MCQ and classification
files go through the public loaders and the evaluation code the notebooks use."""

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from minilib.data import corpus_splits, eval_windows, load_classification, load_mcq, load_text, validate_mcq
from minilib.eval import mcq_accuracy, perplexity
from minilib.eval.decision import decision_accuracy, decision_features, decision_task
from minilib.models import load
from minilib.train.heads import fit_head

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
CORPUS, MCQ, CLS = DATA / "example_corpus.txt", DATA / "example_mcq.jsonl", DATA / "example_classification.jsonl"
EXAMPLES = [CORPUS, MCQ, CLS]


def test_data_folder_is_tracked_and_documented():
    readme = (DATA / "README.md").read_text()
    for f in EXAMPLES:
        assert f.is_file(), f"{f} is missing"
        assert f.name in readme, f"data/README.md does not describe {f.name}"
    for fn in ("corpus_splits", "load_mcq", "load_classification"):
        assert fn in readme
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git whether data/ is ignored")
    paths = [str(p.relative_to(ROOT)) for p in [DATA / "README.md", *EXAMPLES]]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and not r.stdout.strip(), f".gitignore ignores files of data/: {r.stdout.split()}"


# --- corpus -----------------------------------------------------------------------------------------

def test_example_corpus_splits_are_disjoint_and_cover_it():
    text = load_text(CORPUS)
    assert 4_000 < len(text.encode()) < 10_000  # "a few KB"; read as UTF-8 (it has a "café")
    m = load("tiny-llama")
    sp = corpus_splits(m.tokenizer, CORPUS)
    assert list(sp.ranges) == ["calib", "train", "dev", "test"]
    spans = list(sp.ranges.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(sp.ids)
    assert all(b0 == a1 for (_, b0), (a1, _) in itertools.pairwise(spans)), "splits must be contiguous"
    assert all(b > a for a, b in spans), "every split must be non-empty"
    sp.assert_disjoint()
    assert torch.equal(torch.cat([sp[k] for k in sp.ranges]), sp.ids)
    # data/README.md promises one evaluation window of 128 tokens in the test split
    assert len(sp["test"]) >= 128
    assert eval_windows(sp["test"], 128).shape == (1, 128)
    ppl = perplexity(m.model, sp["test"], seqlen=128)
    vocab = m.model.get_output_embeddings().weight.shape[0]
    assert np.isfinite(ppl) and 1 < ppl < 3 * vocab  # a random model is near uniform over its vocabulary


@pytest.mark.integration
def test_example_corpus_is_real_text_for_a_real_model(smollm2):
    """SmolLM2 reads the example as English: test-split perplexity far from uniform (49,152 tokens) and
    in the range of the embedded corpora (10-35, README)."""
    sp = corpus_splits(smollm2.tokenizer, CORPUS)
    ppl = perplexity(smollm2.model, sp["test"], seqlen=128)
    assert 5 < ppl < 60, ppl


# --- MCQ ----------------------------------------------------------------------------------------------

def test_example_mcq_loads_and_scores():
    items = load_mcq(MCQ)
    assert len(items) == 5
    validate_mcq(items, str(MCQ))
    raw = [json.loads(line) for line in MCQ.read_text().splitlines() if line.strip()]
    assert [it.answer for it in items] == [r["answer"] for r in raw]
    assert all(it.question.endswith("Answer:") and not any(c.startswith(" ") for c in it.choices) for it in items)
    assert len(load_mcq(MCQ, n=2, seed=0)) == 2
    m = load("tiny-llama")
    shared = mcq_accuracy(m.model, m.tokenizer, items)
    plain = mcq_accuracy(m.model, m.tokenizer, items, shared_prefix=False)
    assert shared["n"] == 5 and shared["chance"] == pytest.approx(0.25)
    assert shared["acc"] in {k / 5 for k in range(6)} and shared["acc_norm"] in {k / 5 for k in range(6)}
    # the KV-cache-sharing scorer and the plain one pick the same choices on the user's file
    assert (shared["acc"], shared["acc_norm"]) == (plain["acc"], plain["acc_norm"])


# --- classification -----------------------------------------------------------------------------------

def test_example_classification_runs_through_the_decision_pipeline():
    ds = load_classification(CLS)
    assert len(ds) == 10 and ds.label_names == ("0", "1")
    assert np.bincount(ds.labels).tolist() == [5, 5]
    task = decision_task(str(CLS), test_fraction=0.2, seed=0)
    assert (task.info["n_train"], task.info["n_test"]) == (8, 2)
    assert not set(task.train.texts) & set(task.test.texts)
    assert sorted(task.train.texts + task.test.texts) == sorted(ds.texts)
    m = load("tiny-gpt2")
    feats = decision_features(m.model, m.tokenizer, task.texts("train"))
    assert feats.shape[0] == 8 and torch.isfinite(feats).all()
    head = fit_head(feats, task.train.labels)
    res = decision_accuracy(m.model, m.tokenizer, head, task, "test")
    assert res["n"] == 2 and res["acc"] in (0.0, 0.5, 1.0) and 0 <= res["ci95_low"] <= res["acc"] <= res["ci95_high"] <= 1
