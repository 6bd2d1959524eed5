"""Fine-tuning: the loss goes down, early stopping at the target, the best checkpoint kept."""


import torch

from minilib.eval import lm_nll
from minilib.models import (adapter_for, load,
                            load_model, save_model)
from minilib.prune import mask_threshold, score_neurons_l1
from minilib.train import finetune


TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 16


def mask_ffn_neurons(model, st, eps, criterion="any"):
    return mask_threshold(score_neurons_l1(model, st, criterion), eps)


def lm_loss(model, x):
    return lm_nll(model, x)


def save_pruned(model, tok, path, extra=None):
    return save_model(model, tok, path, extra=extra)


def load_remapped_tokenizer(path, model):
    tok = load_model(path).tokenizer
    tok.check_model(model)
    return tok


def windows(tok, n=8, seqlen=32):
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    return ids[: n * seqlen].view(n, seqlen)


def logits(model, x):
    with torch.no_grad():
        return model(input_ids=x).logits


def zero_neurons(model, layer, idx):
    """Make FFN neurons ``idx`` of block ``layer`` output exactly zero (zero their up/gate rows)."""
    ffn = adapter_for(model).ffn(adapter_for(model).blocks(model)[layer])
    from minilib.models.linear import weight_oi
    with torch.no_grad():
        for part in ("up", "gate"):
            lin = getattr(ffn, part)
            if lin is not None:
                weight_oi(lin)[idx] = 0
                if lin.bias is not None:
                    lin.bias.data[idx] = 0


def test_finetune_lowers_training_loss():
    torch.manual_seed(0)
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    x = ids[: 4 * 32].view(4, 32)
    with torch.no_grad():
        before = float(lm_loss(model, x))
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=None, seqlen=32, batch_size=4, lr=3e-3,
                   max_epochs=20, max_steps=20, eval_every=10, verbose=False)
    with torch.no_grad():
        after = float(lm_loss(model, x))
    assert res.steps == 20 and after < before - 0.5
    assert res.best_dev_ppl == min(h["dev_ppl"] for h in res.history if h["dev_ppl"] is not None)


def test_finetune_stops_early_at_target_and_keeps_best():
    model, tok, _ = load("tiny-llama")
    ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
    res = finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=1e9, seqlen=32, batch_size=4, verbose=False)
    assert res.steps == 0 and "before training" in res.stopped

