"""MCQ items and prompts as lm-evaluation-harness builds them, 95% intervals, and the
choice between the two scoring paths."""

import numpy as np
import pytest
import torch

from minilib.data import MCQItem, SchemaError, load_mcq
from minilib.data.tasks import LMEVAL_SPLIT, default_mcq_split
from minilib.eval import mcq_accuracy, mcq_requests, pick_method
from minilib.eval.mcq import SHARED_MIN_RATIO, choice_loglikelihoods, choice_loglikelihoods_shared, token_counts
from minilib.models import load
from minilib.stats import wilson_interval


def test_sciq_keeps_the_leading_newline_of_an_empty_support():
    items = load_mcq("sciq")
    assert len(items) == 1000                                   # the whole set by default
    empty = [it for it in items if it.question.startswith("\nQuestion: ")]
    assert len(empty) > 50                                      # "{{support.lstrip()}}\nQuestion: ..."
    assert items[0].question == "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert all(it.answer == 3 for it in items)


def test_mmlu_has_the_subject_description_line():
    it = load_mcq("mmlu:abstract_algebra")[0]
    assert it.question.startswith("The following are multiple choice questions (with answers) about abstract "
                                  "algebra.\n\nFind the degree")
    assert it.question.endswith("\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:") and it.choices == ("A", "B", "C", "D")


def test_splits_follow_lm_eval_where_embedded():
    assert LMEVAL_SPLIT["sciq"] == LMEVAL_SPLIT["arc_easy"] == LMEVAL_SPLIT["openbookqa"] == "test"
    assert default_mcq_split("mmlu:anatomy") == "test"          # embedded: lm-eval's split
    assert default_mcq_split("sciq") == "validation"            # test is not embedded
    with pytest.raises(SchemaError, match="no split 'test' embedded .*lm-evaluation-harness scores 'test'"):
        load_mcq("arc_easy", split="test")
    assert len(load_mcq("mmlu:anatomy", split="validation")) < len(load_mcq("mmlu:anatomy"))
    assert [len(load_mcq(s)) for s in ("arc_easy", "arc_challenge", "openbookqa")] == [570, 299, 500]


def test_split_on_a_file_is_refused(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(SchemaError, match="embedded MCQ sets only"):
        load_mcq(str(f), split="test")


def test_requests_are_question_and_spaced_choice():
    items = [MCQItem("Q: 2+2?\nA:", ("4", "5"), 0)]
    assert mcq_requests(items) == [("Q: 2+2?\nA:", " 4"), ("Q: 2+2?\nA:", " 5")]


@pytest.fixture(scope="module")
def gpt2():
    return load("tiny-gpt2")


def test_accuracy_has_95_intervals_and_details(gpt2):
    items = load_mcq("arc_easy", n=12)
    res = mcq_accuracy(gpt2.model, gpt2.tokenizer, items, details=True)
    k = sum(res["correct"])
    assert res["acc"] == k / 12 and (res["acc_ci95_low"], res["acc_ci95_high"]) == wilson_interval(k, 12)
    kn = sum(res["correct_norm"])
    assert (res["acc_norm_ci95_low"], res["acc_norm_ci95_high"]) == wilson_interval(kn, 12)
    assert len(res["loglikelihoods"]) == 12 and res["method"] in ("batched", "shared")
    with pytest.raises(ValueError, match="method must be one of"):
        mcq_accuracy(gpt2.model, gpt2.tokenizer, items, method="fast")


def test_both_paths_agree_and_auto_picks_by_lengths(gpt2):
    short = [MCQItem("Q: colour?\nA:", ("red", "blue", "green"), 0)] * 3
    long = [MCQItem("word " * 150 + "\nQuestion: which?\nAnswer:", ("A", "B", "C", "D"), 1)] * 2
    for items in (short, long):
        a = choice_loglikelihoods(gpt2.model, gpt2.tokenizer, items)
        b = choice_loglikelihoods_shared(gpt2.model, gpt2.tokenizer, items)
        np.testing.assert_allclose(np.concatenate(a), np.concatenate(b), atol=1e-3)
    assert token_counts(gpt2.tokenizer, short)["ratio"] < 3 < token_counts(gpt2.tokenizer, long)["ratio"]
    wide = [MCQItem("Q:", ("a long answer " * 20, "another long answer " * 20), 0)]  # choices dominate
    assert token_counts(gpt2.tokenizer, wide)["ratio"] < SHARED_MIN_RATIO <= token_counts(gpt2.tokenizer, short)["ratio"]
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):  # the CPU rule is the same at any thread count: shared unless the choices dominate
            torch.set_num_threads(n)
            assert pick_method(gpt2.model, gpt2.tokenizer, short) == pick_method(gpt2.model, gpt2.tokenizer, long) \
                == "shared"
            assert mcq_accuracy(gpt2.model, gpt2.tokenizer, long)["method"] == "shared"
            assert pick_method(gpt2.model, gpt2.tokenizer, wide) == "batched"
    finally:
        torch.set_num_threads(threads)
    assert mcq_accuracy(gpt2.model, gpt2.tokenizer, long, shared_prefix=False)["method"] == "batched"
