"""Parity with lm-evaluation-harness: the same requests from the same items, and the same
per-choice log-likelihoods from lm-eval's own HF wrapper on an already-loaded tiny model.  No
network: lm-eval's tasks are built on the embedded data."""

import numpy as np
import pytest

from minilib.data import MCQItem, load_mcq
from minilib.eval import mcq_accuracy, mcq_requests
from minilib.eval.mcq import choice_loglikelihoods
from minilib.models import load

lmeval = pytest.importorskip("minilib.eval.lmeval")
pytest.importorskip("lm_eval")


@pytest.mark.parametrize("task,ours", [("sciq", "sciq"), ("arc_easy", "arc_easy"), ("arc_challenge", "arc_challenge"),
                                       ("openbookqa", "openbookqa"), ("piqa", "piqa"),
                                       ("mmlu_anatomy", "mmlu:anatomy")])
def test_lm_eval_builds_the_same_requests_for_the_whole_set(task, ours):
    t = lmeval.embedded_task(task)
    t.build_all_requests(rank=0, world_size=1)
    theirs = [i.args for i in sorted(t.instances, key=lambda i: (i.doc_id, i.idx))]
    items = load_mcq(ours)
    assert theirs == mcq_requests(items)
    targets = [t.doc_to_target(d) for d in t.eval_docs]
    assert targets == [it.answer for it in items]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_same_loglikelihoods_as_lm_eval_hflm(name):
    m = load(name)
    # SciQ's leading newline, ARC, MMLU's description line, and a context with a trailing space
    items = load_mcq("sciq", n=2) + load_mcq("arc_easy", n=2) + load_mcq("mmlu:anatomy", n=1) + \
        [MCQItem("The answer is ", ("yes", "no way"), 0)]
    theirs = lmeval.loglikelihoods(m, mcq_requests(items), batch_size=4)
    ours = np.concatenate(choice_loglikelihoods(m.model, m.tokenizer, items))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_simple_evaluate_gives_our_accuracy():
    m = load("tiny-llama")
    res = lmeval.evaluate(m, ["arc_easy"], limit=6, batch_size=8)["results"]["arc_easy"]
    ours = mcq_accuracy(m.model, m.tokenizer, load_mcq("arc_easy", n=6, seed=None))  # lm-eval limit: the first 6
    assert res["acc,none"] == pytest.approx(ours["acc"]) and res["acc_norm,none"] == pytest.approx(ours["acc_norm"])


def test_unknown_task_is_named():
    with pytest.raises(KeyError, match="no embedded data for lm-eval task 'lambada_openai'"):
        lmeval.embedded_task("lambada_openai")


def test_wrapping_a_loaded_model_does_not_warn_about_it_and_other_warnings_pass():
    """lm-eval warns on every HFLM built around a loaded model ("`pretrained` model kwarg is not of
    type `str`", about accelerate/parallelize, which the bridge never uses): dropped while the bridge
    builds it, and only that message."""
    import logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    log = logging.getLogger("lm_eval.models.huggingface")
    keep = Keep()
    log.addHandler(keep)
    try:
        lmeval.hflm(load("tiny-llama"), batch_size=2)
        assert not [m for m in keep.messages if "is not of type `str`" in m]
        assert not log.filters  # the filter is gone afterwards
        log.warning("`pretrained` model kwarg is not of type `str` -- outside the bridge")
        assert keep.messages[-1].endswith("outside the bridge")
    finally:
        log.removeHandler(keep)
