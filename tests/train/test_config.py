"""The trainers' settings objects: checked when made (errors name the field and what is allowed),
unknown names refused by name, and the config path and the keyword path give identical results."""

import dataclasses

import pytest
import torch

from minilib.models import load
from minilib.train import ClassifierConfig, FinetuneConfig, SparsityMasks, TrainConfig, finetune, finetune_classifier

IDS = torch.randint(0, 1000, (900,), generator=torch.Generator().manual_seed(0))
LM = dict(seqlen=32, batch_size=2, lr=1e-3, max_steps=4, eval_every=2, dev_windows=2, warmup_steps=1,
          weight_decay=0.01)


@pytest.mark.parametrize("cls,kw,match", [
    (FinetuneConfig, {"max_steps": 0}, r"max_steps must be an integer >= 1 \(or None\), got 0"),
    (FinetuneConfig, {"seqlen": 1}, "seqlen must be an integer >= 2"),
    (FinetuneConfig, {"eval_every": 0}, "eval_every must be an integer >= 1"),
    (FinetuneConfig, {"dev_windows": 0}, r"dev_windows must be an integer >= 1 \(or None\)"),
    (FinetuneConfig, {"target_ppl": "low"}, r"target_ppl must be a number \(or None"),
    (FinetuneConfig, {"lr": 0.0}, "lr must be a positive number"),
    (FinetuneConfig, {"method": "qlora"}, r"method must be one of \('full', 'lora'\)"),
    (FinetuneConfig, {"method": "lora", "lora_r": 0}, "lora_r must be an integer >= 1"),
    (FinetuneConfig, {"keep_sparsity": "yes"}, "keep_sparsity must be one of"),
    (FinetuneConfig, {"seed": 1.5}, r"seed must be an integer in \[0, 2\*\*63\)"),
    (ClassifierConfig, {"epochs": 0}, "epochs must be an integer >= 1"),
    (ClassifierConfig, {"head_lr": -1.0}, "head_lr must be a positive number"),
    (ClassifierConfig, {"warmup": 1.0}, r"warmup must be in \[0, 1\)"),
    (ClassifierConfig, {"max_length": 0}, "max_length must be an integer >= 1"),
    (ClassifierConfig, {"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),   # checked for full too, as before
    (ClassifierConfig, {"batch_size": 0}, "batch_size must be an integer >= 1"),
])
def test_a_bad_field_is_refused_when_the_config_is_made(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)
    with pytest.raises(ValueError, match=match):   # and when replaced
        cls().replace(**kw)


def test_the_lora_fields_of_full_fine_tuning_are_not_checked():
    assert FinetuneConfig(lora_r=0).lora_r == 0       # as before: only method="lora" uses them


def test_defaults_and_learning_rate():
    assert FinetuneConfig().learning_rate == 5e-5 and FinetuneConfig(method="lora").learning_rate == 1e-3
    assert FinetuneConfig(lr=2e-4, method="lora").learning_rate == 2e-4
    c = ClassifierConfig()
    assert (c.batch_size, c.weight_decay, c.epochs, c.head_lr, c.warmup, c.max_length) == (16, 0.01, 1, 1e-3, 0.1, 128)
    f = FinetuneConfig()
    assert (f.batch_size, f.weight_decay, f.seqlen, f.max_steps, f.eval_every, f.dev_windows) == \
        (4, 0.0, 128, 40, 10, 8)
    assert set(TrainConfig.field_names()) < set(FinetuneConfig.field_names())
    assert set(TrainConfig.field_names()) < set(ClassifierConfig.field_names())
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.seqlen = 3


def test_unknown_settings_are_named():
    with pytest.raises(TypeError, match=r"unknown setting\(s\) 'max_step' \(did you mean 'max_steps'\?\)"):
        FinetuneConfig().replace(max_step=3)
    m = load("tiny-llama").model
    with pytest.raises(TypeError, match=r"finetune: unknown setting\(s\) 'epochs'.*FinetuneConfig has"):
        finetune(m, IDS[:600], IDS[600:], epochs=2)
    with pytest.raises(TypeError, match="config must be a FinetuneConfig"):
        finetune(m, IDS[:600], IDS[600:], 1e9)            # the old 4th positional argument (target_ppl)
    with pytest.raises(TypeError, match="config must be a FinetuneConfig"):
        finetune(m, IDS[:600], IDS[600:], ClassifierConfig())


def _lm(model, *a, **kw):
    torch.manual_seed(0)   # LoRA dropout draws from the global generator (as it always did)
    res = finetune(model, IDS[:600], IDS[600:], *a, verbose=False, **kw)
    return res.history, res.final_dev_ppl, {k: v.clone() for k, v in model.state_dict().items()}


def _prune(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "mlp" in n and p.dim() == 2:
                p[:, ::2] = 0


@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_config_and_keyword_paths_are_identical_and_keep_the_zeros(method):
    runs = []
    for how in ("config", "keywords", "config+keywords"):
        m = load("tiny-llama").model
        _prune(m)
        masks = SparsityMasks.capture(m)
        if how == "config":
            runs.append(_lm(m, FinetuneConfig(method=method, **LM)))
        elif how == "keywords":
            runs.append(_lm(m, method=method, **LM))
        else:
            runs.append(_lm(m, FinetuneConfig(method=method, **{**LM, "lr": 0.5}), lr=LM["lr"]))
        assert masks.lost(m) == {} and masks.report(m)["sparsity"] == pytest.approx(0.5, abs=0.01)
    (h0, f0, s0), *rest = runs
    for h, f, s in rest:
        assert h == h0 and f == f0 and s.keys() == s0.keys() and all(torch.equal(s[k], s0[k]) for k in s0)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_classifier_config_and_keyword_paths_are_identical(method, toy_sentiment):
    texts, labels = toy_sentiment(12)
    out = []
    for how in ("config", "keywords"):
        m, tok, _ = load("tiny-llama")
        kw = dict(method=method, batch_size=4, lr=1e-3, epochs=2)
        torch.manual_seed(0)
        args = (ClassifierConfig(**kw),) if how == "config" else ()
        model, head, info = finetune_classifier(m, tok, texts, labels, *args, verbose=False,
                                                **({} if how == "config" else kw))
        out.append((info["loss"], head.weight.clone(), {k: v.clone() for k, v in model.state_dict().items()}))
    (l0, h0, s0), (l1, h1, s1) = out
    assert l0 == l1 and torch.equal(h0, h1) and all(torch.equal(s0[k], s1[k]) for k in s0)


def test_classifier_refuses_a_method_as_its_fifth_positional_argument(toy_sentiment):
    m, tok, _ = load("tiny-llama")
    with pytest.raises(TypeError, match=r"config must be a ClassifierConfig.*method='lora'"):
        finetune_classifier(m, tok, *toy_sentiment(8), "lora")


def test_device_auto_means_what_it_means_everywhere(monkeypatch):
    """``finetune(device="auto")`` resolves like ``minilib.device`` (CUDA when present), None keeps the
    model's device."""
    import importlib
    ft = importlib.import_module("minilib.train.finetune")  # the module (the package exports the function)
    asked = []
    real = ft.resolve_device
    monkeypatch.setattr(ft, "resolve_device", lambda d: asked.append(d) or real(d))
    m, tok, _ = load("tiny-llama")
    ids = torch.randint(0, 1000, (4 * 32 * 2,), generator=torch.Generator().manual_seed(0))
    ft.finetune(m, ids, ids, seqlen=32, batch_size=2, max_steps=1, eval_every=1, dev_windows=2, verbose=False,
                device="auto")
    ft.finetune(m, ids, ids, seqlen=32, batch_size=2, max_steps=1, eval_every=1, dev_windows=2, verbose=False)
    assert asked == ["auto"]
