"""The decision task: disjoint seeded splits, clear errors for bad labels and templates."""

import json

import numpy as np
import pytest

from minilib.data import ClassificationSet, SchemaError
from minilib.eval.decision import decision_task

TEXTS = ["the movie was great fun", "a dull, lifeless film", "what a waste of time and money",
         "surprisingly moving", "I loved every minute of it, really", "no"]


def test_decision_task_split_and_bad_labels(tmp_path):
    t = decision_task("sst2", n_train=100, n_test=50, seed=1)
    assert len(t.train) == 100 and len(t.test) == 50
    assert not set(t.train.texts) & set(t.test.texts)
    assert decision_task("sst2", 100, 50, seed=1).test.texts == t.test.texts
    f = tmp_path / "nolabels.jsonl"
    f.write_text("\n".join(json.dumps({"text": s}) for s in TEXTS))
    with pytest.raises(SchemaError, match="no labels"):
        decision_task(str(f))
    one = ClassificationSet(TEXTS, np.zeros(len(TEXTS), dtype=np.int64), ("a",))
    with pytest.raises(SchemaError, match="two classes"):
        decision_task(one)
    with pytest.raises(ValueError, match="text"):
        decision_task("sst2", template="no placeholder")

