"""The decision task: disjoint seeded splits, clear errors for bad labels and templates."""

import json

import numpy as np
import pytest

from minilib.data import ClassificationSet, SchemaError
from minilib.eval.decision import decision_task


def test_decision_task_split_and_bad_labels(tmp_path, reviews):
    t = decision_task("sst2", n_train=100, n_test=50, seed=1)
    assert len(t.train) == 100 and len(t.test) == 50
    assert not set(t.train.texts) & set(t.test.texts)
    assert decision_task("sst2", 100, 50, seed=1).test.texts == t.test.texts
    f = tmp_path / "nolabels.jsonl"
    f.write_text("\n".join(json.dumps({"text": s}) for s in reviews))
    with pytest.raises(SchemaError, match="no labels"):
        decision_task(str(f))
    one = ClassificationSet(reviews, np.zeros(len(reviews), dtype=np.int64), ("a",))
    with pytest.raises(SchemaError, match="two classes"):
        decision_task(one)
    with pytest.raises(ValueError, match="text"):
        decision_task("sst2", template="no placeholder")



def test_labels_a_head_cannot_output_are_refused_before_any_forward(reviews):
    """A 2-output head scored on a 3-class test split would count every class-2 item wrong without a word;
    fit_head on labels with a missing class would train an output nothing teaches."""
    import torch
    from minilib.eval.decision import decision_accuracy
    from minilib.models import load
    from minilib.train.heads import fit_head
    three = ClassificationSet(reviews * 2, np.array([0, 1, 2] * 4), ("a", "b", "c"))
    t = decision_task(three, n_train=6, n_test=6, seed=0)
    m = load("tiny-bert")
    head = torch.nn.Linear(m.model.config.hidden_size, 2)
    with pytest.raises(SchemaError, match=r"the test labels of 'custom'\[\d+\] = 2 is >= num_labels=2"):
        decision_accuracy(m.model, m.tokenizer, head, t)
    feats = torch.randn(4, 8)
    with pytest.raises(SchemaError, match=r"every class 0\.\.2"):
        fit_head(feats, [0, 2, 0, 2])
    with pytest.raises(SchemaError, match="one label per text"):
        fit_head(feats, [0, 1, 0])
    assert fit_head(feats, [0, 1, 0, 1]).out_features == 2
