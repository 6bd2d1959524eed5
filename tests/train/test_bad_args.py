"""Bad arguments to fine-tuning: a clear error naming the argument and what is allowed, raised
before any training step (the model unchanged, no LoRA adapters left), never a silent 0-step run."""

import importlib

import numpy as np
import pytest
import torch

from minilib.train import finetune, finetune_classifier, fit_head
from minilib.train.checks import check_seed
from minilib.models import load

ft = importlib.import_module("minilib.train.finetune")  # the module (the package exports the function)
IDS = torch.randint(0, 1000, (600,), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model():
    return load("tiny-llama").model


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _run(m, train=IDS, dev=IDS[:200], **kw):
    args = dict(seqlen=32, batch_size=2, max_steps=1, eval_every=1, dev_windows=2, verbose=False)
    return finetune(m, train, dev, **{**args, **kw})


def _refused(m, err, match, monkeypatch, **kw):
    state = _state(m)

    def no_training(*a, **k):
        raise AssertionError("training started although the arguments were bad")
    monkeypatch.setattr(ft, "_train", no_training)
    with pytest.raises(err, match=match):
        _run(m, **kw)
    assert m.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    assert not any("lora" in n for n, _ in m.named_parameters())


def test_the_baseline_arguments_train(model):
    """The arguments the refusals below vary are valid as they are: one step runs."""
    m = load("tiny-llama").model
    res = _run(m)
    assert res.steps == 1


@pytest.mark.parametrize("arg,value,match", [
    ("max_steps", -5, r"max_steps must be an integer >= 1 \(or None\), got -5"),
    ("max_steps", 0, "max_steps must be an integer >= 1"),
    ("max_steps", 1.5, "max_steps must be an integer >= 1"),
    ("max_steps", True, "max_steps must be an integer >= 1"),
    ("max_steps", "10", "max_steps must be an integer >= 1"),
    ("eval_every", 0, "eval_every must be an integer >= 1, got 0"),
    ("eval_every", -1, "eval_every must be an integer >= 1"),
    ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
    ("batch_size", 2.0, "batch_size must be an integer >= 1"),
    ("max_epochs", 0, "max_epochs must be an integer >= 1"),
    ("warmup_steps", -1, "warmup_steps must be an integer >= 0"),
    ("dev_windows", 0, r"dev_windows must be an integer >= 1 \(or None\)"),
    ("lr", -1e-3, "lr must be a positive number, got -0.001"),
    ("lr", 0.0, "lr must be a positive number"),
    ("lr", float("nan"), "lr must be a positive number"),
    ("lr", float("inf"), "lr must be a positive number"),
    ("lr", "1e-3", "lr must be a positive number"),
    ("weight_decay", -0.1, r"weight_decay must be in \[0, 1\)"),
    ("seed", "a", r"seed must be an integer in \[0, 2\*\*63\), got 'a' \(str\)"),
    ("seed", 1.5, r"seed must be an integer in \[0, 2\*\*63\), got 1.5 \(float\)"),
    ("seed", True, "seed must be an integer"),
    ("seed", -1, "seed must be an integer"),
    ("seed", None, "seed must be an integer"),
    ("seqlen", 1, "seqlen must be"),
    ("seqlen", 300, r"seqlen 300 is above the model's maximum positions \(256\)"),
    ("seqlen", 32.0, "seqlen must be an integer"),
    ("method", "qlora", "method must be one of"),
    ("keep_sparsity", "yes", "keep_sparsity must be one of"),
])
def test_bad_hyper_parameters(model, monkeypatch, arg, value, match):
    _refused(model, (ValueError, TypeError), match, monkeypatch, **{arg: value})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_bad_seed_is_refused_before_lora_adapters_are_added(model, monkeypatch, method):
    _refused(model, ValueError, "seed must be an integer", monkeypatch, method=method, seed=2.5)


@pytest.mark.parametrize("which,bad,err,match", [
    ("train", IDS + 60000, ValueError,
     r"train_ids holds token id 60999, outside the model's vocabulary: allowed 0..50256 \(50257 tokens\)"),
    ("train", torch.cat([IDS, torch.tensor([-1])]), ValueError, "train_ids holds token id -1"),
    ("dev", IDS[:200] + 50257, ValueError, r"dev_ids holds token id 51256.*50257 tokens"),
    ("train", IDS.tolist(), TypeError, "train_ids must be a 1-D LongTensor of token ids"),
    ("dev", IDS[:200].tolist(), TypeError, r"dev_ids must be a torch tensor of token ids"),
    ("train", IDS.view(20, 30), TypeError, r"train_ids must be a 1-D LongTensor .*got shape \(20, 30\)"),
    ("train", IDS.float(), TypeError, "train_ids must hold integer token ids"),
    ("train", torch.zeros(0, dtype=torch.long), ValueError, "train_ids is empty"),
    ("dev", IDS[:20], Exception, r"dev_ids has 20 tokens, too short for one window of seqlen=32"),
])
def test_bad_token_data(model, monkeypatch, which, bad, err, match):
    kw = {"train": bad} if which == "train" else {"dev": bad}
    _refused(model, err, match, monkeypatch, **kw)


def test_dev_eval_must_be_callable(model, monkeypatch):
    _refused(model, TypeError, "dev_eval must be a callable", monkeypatch, dev_eval=3.0)


def test_a_custom_dev_measure_skips_the_dev_ids_check():
    m = load("tiny-llama").model
    res = _run(m, dev=None, dev_eval=lambda model: 1.0, dev_name="score")
    assert res.steps == 1 and res.best_dev_ppl == 1.0


def test_check_seed():
    assert check_seed(np.int64(7)) == 7 and check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (2**63, -1, 1.0, "1", True, np.float32(1)):
        with pytest.raises(ValueError, match="seed"):
            check_seed(bad)


@pytest.mark.parametrize("kw,match", [(dict(l2=-0.1), "l2 must be a finite number >= 0"),
                                      (dict(l2=float("nan")), "l2 must be a finite number >= 0"),
                                      (dict(max_iter=0), "max_iter must be an integer >= 1"),
                                      (dict(seed="a"), "seed must be an integer")])
def test_fit_head_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fit_head(torch.randn(8, 4), [0, 1] * 4, **kw)


@pytest.mark.parametrize("kw,match", [(dict(seed=1.5), "seed must be an integer"),
                                      (dict(max_length=0), "max_length must be an integer >= 1")])
def test_finetune_classifier_bad_arguments_before_copying(kw, match, monkeypatch):
    import minilib.train.classify as classify
    m, tok, _ = load("tiny-llama")
    monkeypatch.setattr(classify.copy, "deepcopy", lambda *a, **k: pytest.fail("the model was copied"))
    with pytest.raises(ValueError, match=match):
        finetune_classifier(m, tok, ["a", "b"], [0, 1], verbose=False, **kw)
