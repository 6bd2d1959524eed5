"""Fine-tuning: the loss goes down, early stopping at the target, the best checkpoint kept."""


import torch

from minilib.eval import lm_nll
from minilib.models import load
from minilib.train import finetune


def test_finetune_lowers_training_loss(tiny_text):
    torch.manual_seed(0)
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(tiny_text, add_special_tokens=False)["input_ids"])
    x = ids[: 4 * 32].view(4, 32)
    with torch.no_grad():
        before = float(lm_nll(model, x))
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=None, seqlen=32, batch_size=4, lr=3e-3,
                   max_epochs=20, max_steps=20, eval_every=10, verbose=False)
    with torch.no_grad():
        after = float(lm_nll(model, x))
    assert res.steps == 20 and after < before - 0.5
    assert res.best_dev_ppl == min(h["dev_ppl"] for h in res.history if h["dev_ppl"] is not None)


def test_finetune_stops_early_at_target_and_keeps_best(tiny_text):
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(tiny_text, add_special_tokens=False)["input_ids"])
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=1e9, seqlen=32, batch_size=4, verbose=False)
    assert res.steps == 0 and "before training" in res.stopped

