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



def test_a_seed_fixes_dropout_and_leaves_the_callers_generator_alone(tiny_text):
    """Dropout draws follow ``seed`` (tiny-gpt2 has dropout 0.1, LoRA 0.05): two fine-tunings with one
    seed end with the same weights whatever the caller drew before, another seed does not, and the
    caller's global generator is where it was."""
    def run(method, seed, draws):
        model, tok, _ = load("tiny-gpt2")
        ids = torch.tensor(tok(tiny_text, add_special_tokens=False)["input_ids"])
        torch.manual_seed(1234)
        torch.rand(draws)                     # the caller's own use of the global generator
        state = torch.get_rng_state()
        finetune(model, ids[: 8 * 32], ids[: 4 * 32], target_ppl=None, seqlen=32, batch_size=4, lr=3e-3,
                 max_steps=4, eval_every=4, method=method, seed=seed, verbose=False)
        assert torch.equal(torch.get_rng_state(), state)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    for method in ("full", "lora"):
        a, b, c = run(method, 0, 1), run(method, 0, 7), run(method, 1, 1)
        assert torch.equal(a, b), method
        assert not torch.equal(a, c), method
