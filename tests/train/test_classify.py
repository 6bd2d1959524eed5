"""Task fine-tuning (full and LoRA) with a linear decision head: what changes, that it learns, the
cache, determinism and bad input.  Tiny models only (seconds)."""

import numpy as np
import pytest
import torch

from minilib.data.tasks import ClassificationSet
from minilib.eval.decision import decision_accuracy, decision_task
from minilib.models import load
from minilib.train.classify import finetune_classifier, finetuned_classifier, lora_targets

def _changed(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb), "the architecture changed"
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])   # tiny-gpt2: LoRA on Conv1D layers
def test_lora_changes_only_the_targets_and_leaves_the_input_model(name, toy_sentiment):
    m = load(name)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    texts, labels = toy_sentiment(16)
    model, head, info = finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", batch_size=8,
                                            verbose=False)
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items()), "the caller's model changed"
    changed = _changed(m.model, model)
    targets = lora_targets(m.model)
    assert changed and all(any(k.endswith(t + ".weight") for t in targets) for k in changed), changed
    assert not any("norm" in k or "embed" in k or "wte" in k for k in changed)
    assert info["steps"] == 2 and len(info["loss"]) == 2 and info["lora_targets"] == targets
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert not any("lora" in n for n, _ in model.named_modules()), "the adapter was not merged"


def test_full_finetuning_learns_a_separable_task(toy_sentiment):
    m = load("tiny-bert")
    texts, labels = toy_sentiment(64)
    task = decision_task(ClassificationSet(texts, labels, ("neg", "pos")), n_train=48, n_test=16, seed=0,
                         test_fraction=0.25)
    probe = decision_accuracy(m.model, m.tokenizer, torch.nn.Linear(64, 2), task, "train")
    model, head, info = finetune_classifier(m.model, m.tokenizer, task.texts("train"), task.train.labels, method="full",
                                            epochs=4, batch_size=8, lr=1e-3, head_lr=1e-2, verbose=False)
    acc = decision_accuracy(model, m.tokenizer, head, task, "train")
    assert acc["acc"] >= 0.95 and acc["acc"] > probe["acc"] + 0.2, (acc, probe)   # measured 1.0 vs 0.40
    assert decision_accuracy(model, m.tokenizer, head, task, "test")["acc"] >= 0.85  # held out; measured 1.0
    assert np.mean(info["loss"][-3:]) < 0.75 * np.mean(info["loss"][:3])          # measured 0.41 vs 0.67
    assert len(_changed(m.model, model)) > 10           # the whole body moved


def test_cache_round_trip_and_key(tmp_path):
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=16, n_test=8, seed=0, template="{text}\nok?")
    kw = dict(method="lora", batch_size=8, directory=tmp_path, verbose=False)
    ft, head, info = finetuned_classifier(m, task, **kw)
    assert not info["cached"] and (tmp_path / info["key"] / "model.safetensors").is_file()
    ft2, head2, info2 = finetuned_classifier(m, task, **kw)
    assert info2["cached"] and info2["key"] == info["key"] and info2["steps"] == info["steps"]
    a = decision_accuracy(ft.model, ft.tokenizer, head, task, return_correct=True)
    b = decision_accuracy(ft2.model, ft2.tokenizer, head2, task, return_correct=True)
    np.testing.assert_array_equal(a["correct"], b["correct"])
    torch.testing.assert_close(head.weight, head2.weight)
    assert ft.name != m.name and ft.name == ft2.name          # caches keyed by name never mix it with the base
    _, _, info3 = finetuned_classifier(m, task, lr=5e-4, **kw)  # other hyper-parameters: another key
    assert not info3["cached"] and info3["key"] != info["key"]


def test_seeded_and_deterministic(toy_sentiment):
    m = load("tiny-opt")
    texts, labels = toy_sentiment(16)
    a = finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", batch_size=8, seed=3, verbose=False)
    torch.rand(5)                              # the caller's own draws neither change the run nor are moved by it
    state = torch.get_rng_state()
    b = finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", batch_size=8, seed=3, verbose=False)
    assert torch.equal(torch.get_rng_state(), state)
    c = finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", batch_size=8, seed=4, verbose=False)
    assert not _changed(a[0], b[0]) and torch.equal(a[1].weight, b[1].weight)
    assert _changed(a[0], c[0])


def test_init_head_is_the_starting_point(toy_sentiment):
    m = load("tiny-gpt2")
    texts, labels = toy_sentiment(8)
    init = torch.nn.Linear(64, 2)
    _, head, info = finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", batch_size=8, lr=1e-12,
                                        head_lr=1e-12, init_head=init, warmup=0.0, verbose=False)
    torch.testing.assert_close(head.weight, init.weight, atol=1e-6, rtol=0)
    assert info["init_head"] == "given"
    with pytest.raises(ValueError, match="init_head has shape"):
        finetune_classifier(m.model, m.tokenizer, texts, labels, method="lora", init_head=torch.nn.Linear(32, 2),
                            verbose=False)


@pytest.mark.parametrize("kw,match", [({"method": "qlora"}, "method"), ({"epochs": 0}, "epochs"),
                                       ({"lr": -1.0}, "lr"), ({"batch_size": 0}, "batch_size"),
                                       ({"warmup": 1.5}, "warmup"), ({"lora_r": 0}, "lora_r"),
                                       ({"n_train": 1}, "n_train")])
def test_bad_hyper_parameters_fail_before_any_work(kw, match, tmp_path):
    m = load("tiny-llama")
    task = decision_task("sst2", n_train=8, n_test=4, seed=0)
    with pytest.raises(ValueError, match=match):
        finetuned_classifier(m, task, directory=tmp_path, verbose=False, **kw)
    assert not any(tmp_path.iterdir())
