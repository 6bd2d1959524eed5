"""The paper profiles plan clean against the embedded data, and the planner reports each
kind of defect by the parameter to change: fine-tuning steps capped by epochs, test chunks beyond the
split, heavily overlapping calibration windows, examples or items beyond the set, a hub fallback.

No model forward: tokenizers, corpora and the MCQ / classification sets only (cached per process)."""

import warnings

import pytest

from minilib.params import HubFallbackWarning
from minilib.profiles import NOTEBOOKS
from minilib.profiles import plan as P
from minilib.profiles.plan import (BAD_VALUE, CALIB_OVERLAP, EXCEEDS_SET, EXCEEDS_SPLIT, FT_CAPPED, HUB_FALLBACK, KINDS, TOO_SHORT,
                                   plan)


def _params_of(p, kind):
    return [x.param for x in p.problems if x.kind == kind]


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_paper_profile_plans_clean(notebook):
    p = plan(notebook, "paper")  # as where the hub is reachable: the paper's hub models
    assert p.profile == "paper" and p.model == NOTEBOOKS[notebook][1]["paper"]["model"].hub
    assert p.tokenizer  # says what the tokens were counted with
    assert p.ok, p.report()
    assert all(x.kind in KINDS for x in p.problems)


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_default_profile_plans_clean(notebook):
    """What `make reproduce` runs: no window count, item count or split beyond the embedded data (the
    dense baselines once asked 32 x 512-token windows of splits that hold 12)."""
    p = plan(notebook, "default")
    assert p.profile == "default"
    assert p.ok, p.report()


def test_plan_resolves_as_the_check_cell_does():
    p = plan("SparseGPT_one_shot", "paper", eval_windows=4)
    assert p.params["calib_corpus"] == "c4"            # the notebook's parameters cell
    assert p.params["nsamples"] == 32                  # the profile
    assert p.params["eval_windows"] == 4               # an override (papermill -p) wins
    with pytest.raises(ValueError, match="'eval_windows' = -1"):
        plan("SparseGPT_one_shot", "paper", eval_windows=-1)  # bad values fail as in the notebook
    with pytest.raises(KeyError, match="known notebooks: .*SparseGPT_one_shot"):
        plan("SparseGPT", "paper")


def test_former_contextual_paper_profile_reports_every_defect_it_had():
    old = dict(calib_windows=128, seqlen=2048, test_chunks=400, dev_chunks=64, chunk_bytes=2048, ft_steps=1000,
               ft_seqlen=512, ft_batch=8, ft_eval_every=50)
    p = plan("contextual_pruning", "paper", **old)
    kinds = p.kinds()
    assert set(kinds) == {FT_CAPPED, EXCEEDS_SPLIT, CALIB_OVERLAP}, p.report()
    assert kinds[FT_CAPPED] == ["ft_steps"] * 3                    # every domain, epochs = 1
    assert "test_chunks" in kinds[EXCEEDS_SPLIT] and "dev_chunks" in kinds[EXCEEDS_SPLIT]
    assert set(kinds[CALIB_OVERLAP]) == {"calib_windows"}
    text = p.report()
    assert "capped by epochs = 1 on 'tiny'" in text and "stops after 4 steps" in text
    assert "test_chunks = 400: the test split of 'wiki' holds 97 chunks" in text


def test_ft_steps_capped_by_epochs_is_reported():
    p = plan("contextual_pruning", "paper", ft_steps=100, ft_batch=8, domains=["tiny"], mcq_sets={})
    (msg,) = [str(x) for x in p.problems if x.kind == FT_CAPPED]
    assert msg.startswith("ft_steps = 100 is capped by epochs = 1 on 'tiny'") and "epochs >= 25" in msg
    assert plan("contextual_pruning", "paper", ft_steps=100, ft_batch=8, domains=["tiny"], mcq_sets={},
                epochs=25).ok  # with enough epochs ft_steps binds


def test_test_chunks_beyond_the_split_are_reported():
    p = plan("contextual_pruning", "paper", test_chunks=30, domains=["tiny"], mcq_sets={})
    assert _params_of(p, EXCEEDS_SPLIT) == ["test_chunks"]
    assert "holds 29 chunks of chunk_bytes = 1024" in str(p.problems[0])
    p = plan("SparseGPT_one_shot", "paper", eval_windows=21, heldout_windows=15)
    assert sorted(_params_of(p, EXCEEDS_SPLIT)) == ["eval_windows", "heldout_windows"]
    p = plan("contextual_pruning", "paper", chunk_bytes=1024, test_chunks=28, seqlen=40000, domains=["tiny"],
             mcq_sets={})
    assert _params_of(p, TOO_SHORT) == ["seqlen"]  # a split shorter than one window stops the run


def test_overlapping_calibration_windows_are_reported():
    p = plan("contextual_pruning", "paper", calib_windows=16, domains=["tiny"], mcq_sets={})
    (msg,) = [str(x) for x in p.problems if x.kind == CALIB_OVERLAP]
    assert msg.startswith("calib_windows = 16 windows of seqlen = 2048 from the calib split of 'tiny'")
    assert "only 15 non-overlapping windows fit" in msg and "at most 9 windows of 2048" in msg
    # windows that fit but overlap by chance, and the SparseGPT calibration
    assert _params_of(plan("contextual_pruning", "paper", calib_windows=10, domains=["tiny"], mcq_sets={}),
                      CALIB_OVERLAP) == ["calib_windows"]
    # the SparseGPT notebook draws distinct windows: too many is an error, never an overlap
    assert _params_of(plan("SparseGPT_one_shot", "paper", nsamples=128), EXCEEDS_SPLIT) == ["nsamples"]
    assert _params_of(plan("SparseGPT_one_shot", "paper", seed=7), BAD_VALUE) == ["seed"]
    assert _params_of(plan("SparseGPT_one_shot", "paper", owl_sparsities=[0.9]), BAD_VALUE) == ["owl_sparsities"]


def test_expected_repeat_matches_the_seeded_draws():
    import torch

    from minilib.data import calibration_windows
    T, n, L = 5000, 6, 700
    draws = [calibration_windows(torch.arange(T), n, L, s) for s in range(300)]
    sim = sum(1 - torch.unique(w).numel() / w.numel() for w in draws) / len(draws)
    assert abs(P.expected_repeat(T, n, L) - sim) < 0.01
    assert P.expected_repeat(10**9, 128, 2048) < 1e-3  # a large corpus: no repeats, computed without 1e9 positions


def test_examples_and_items_beyond_the_set_are_reported():
    p = plan("GPT2_anatomy", "paper", n_test=8000, n_train=30000)
    assert sorted(_params_of(p, EXCEEDS_SET)) == ["n_test", "n_train"]
    msg = next(str(x) for x in p.problems if x.param == "n_test")
    assert "'sarcasm' holds 28,614 examples" in msg and "at most 5,723" in msg
    p = plan("GPT2_anatomy", "paper", ft_n_train=25000)
    assert _params_of(p, EXCEEDS_SET) == ["ft_n_train"]
    p = plan("SparseGPT_one_shot", "paper", mcq_n=1001)
    assert _params_of(p, EXCEEDS_SET) == ["mcq_n"] and "'sciq' holds 1,000 items" in str(p.problems[0])


def test_a_hub_fallback_is_reported(monkeypatch):
    monkeypatch.delenv("MINILIB_ALLOW_FALLBACK", raising=False)
    # offline with the fallback allowed: the run would be the embedded model with paper-sized settings
    with warnings.catch_warnings():
        warnings.simplefilter("error", HubFallbackWarning)  # the planner keeps the warning to itself
        p = plan("GPT2_anatomy", "paper", hub=False, allow_fallback=True)
    assert p.model == "smollm2-135m" and _params_of(p, HUB_FALLBACK) == ["model"]
    assert "'smollm2-135m' replaces the hub model 'gpt2'" in str(p.problems[0])
    # offline without it: resolve would stop; the plan says so and still sizes the fallback
    p = plan("GPT2_anatomy", "paper", hub=False)
    assert _params_of(p, HUB_FALLBACK) == ["model"] and "MINILIB_ALLOW_FALLBACK=1" in str(p.problems[0])
    assert p.sizes
    # an explicit model is no fallback
    assert plan("GPT2_anatomy", "paper", hub=False, model="smollm2-135m").ok


def test_readme_command_plans_every_paper_profile_clean(capsys):
    """README: `.venv/bin/python -m minilib.profiles.plan --profile paper`, as written."""
    assert P.main(["--profile", "paper"]) == 0
    assert "plans clean" in capsys.readouterr().out


def test_cli_exits_1_on_problems(capsys):
    assert P.main(["GPT2_anatomy"]) == 0
    assert "plans clean" in capsys.readouterr().out
    assert P.main(["GPT2_anatomy", "--offline"]) == 1
    assert "PROBLEM (hub_fallback)" in capsys.readouterr().out


def test_calibration_budgets_below_a_full_rank_hessian_are_reported():
    """8 x 64 = 512 tokens cannot give SmolLM2's down_proj (1,536 inputs) a full-rank Hessian: the
    default profile's former budget sweep stopped with a CalibrationError after 35 minutes."""
    p = plan("SparseGPT_one_shot", "default", budget_nsamples=[8, 32, 128])
    bad = [x for x in p.problems if x.kind == BAD_VALUE]
    assert [x.param for x in bad] == ["budget_nsamples"] and "at least 24 windows of 64" in bad[0].message
    p = plan("SparseGPT_one_shot", "default", nsamples=16, seqlen=64)
    assert "nsamples" in _params_of(p, BAD_VALUE)
    assert not plan("SparseGPT_one_shot", "default").problems  # 24 x 64 = 1,536: exactly full rank
