"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness defines it.

Each choice is scored by the summed log-probability of its tokens given the question (the choice
is appended after one space): the request is ``(question, " " + choice)``, exactly what lm-eval's
``loglikelihood`` receives for the same item (``mcq_requests``; tested against lm-eval's HF model
wrapper in tests/eval/test_lmeval.py).  ``acc`` takes the choice with the highest log-likelihood;
``acc_norm`` divides each log-likelihood by the choice's length in characters first.  The
continuation's tokens are those of ``tokenize(question + " " + choice)`` beyond the tokens of the
question, so word boundaries tokenize as they do in running text.

Two ways to compute the same numbers: ``batched`` (whole question+choice sequences, batched, as
lm-eval does) and ``shared`` (questions batched once each, their KV cache shared by their choices).
``method="auto"`` picks by device and lengths (``pick_method``, measured in
benchmarks/bench_eval.py): on CPUs shared where the batched path would compute at least twice its
tokens (long questions, short choices: ARC, SciQ, OpenBookQA, MMLU), batched otherwise (PIQA);
batched on GPUs and other accelerators.
Accuracies come with 95% Wilson intervals over items (``minilib.stats``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minilib.data.tasks import MCQItem, validate_mcq
from minilib.device import model_device
from minilib.models.adapters import adapter_for
from minilib.stats import wilson_interval


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    n_space = len(context) - len(context.rstrip())
    if n_space:  # lm-eval moves trailing spaces of the context onto the continuation
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not ctx:  # an empty context: condition on the end-of-text / BOS token
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [bos], whole
    return ctx, whole[len(ctx):]


@torch.no_grad()
def choice_loglikelihoods(model, tokenizer, items: list[MCQItem], batch_size: int = 16,
                          max_length: int | None = None, progress: bool | None = None) -> list[np.ndarray]:
    """Summed log-likelihood of every choice of every item (a list of arrays, one per item)."""
    adapter = adapter_for(model)
    if not adapter.is_decoder:
        raise ValueError(f"MCQ scoring needs a decoder language model; {adapter.family} is an encoder")
    validate_mcq(items)
    max_length = max_length or adapter.max_positions(model.config) or 2048
    reqs = []  # (item, choice, tokens, n_continuation)
    for i, it in enumerate(items):
        for j, ch in enumerate(it.choices):
            ctx, cont = _encode_pair(tokenizer, it.question, " " + ch)
            if not cont:
                raise ValueError(f"item {i} choice {j} tokenizes to nothing")
            toks = (ctx + cont)[-(max_length + 1):]  # lm-eval truncates from the left
            reqs.append((i, j, toks, len(cont)))
    order = sorted(range(len(reqs)), key=lambda r: -len(reqs[r][2]))  # long first: fail fast on memory
    out = [np.zeros(len(it.choices)) for it in items]
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = range(0, len(order), batch_size)
    show = progress if progress is not None else len(batches) > 8
    was_training = model.training
    model.eval()
    try:
        for b in tqdm(batches, desc="mcq", disable=not show, leave=False):
            chunk = [reqs[r] for r in order[b:b + batch_size]]
            inp = [r[2][:-1] for r in chunk]  # the last token is only predicted
            T = max(len(x) for x in inp)
            x = torch.full((len(chunk), T), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for k, s in enumerate(inp):
                x[k, :len(s)] = torch.tensor(s)
                mask[k, :len(s)] = 1
            hidden = adapter.base(model)(input_ids=x.to(device), attention_mask=mask.to(device)).last_hidden_state
            rows, cols, targets = [], [], []
            for k, (_, _, toks, n_cont) in enumerate(chunk):
                L = len(toks) - 1
                rows += [k] * n_cont
                cols += list(range(L - n_cont, L))
                targets += toks[-n_cont:]
            # the LM head only where a continuation token is predicted (not over every position)
            logp = F.log_softmax(adapter.lm_logits(model, hidden[rows, cols]).float(), -1)
            tok_ll = logp.gather(-1, torch.tensor(targets, device=device)[:, None]).squeeze(-1).cpu()
            start = 0
            for (i, j, _, n_cont) in chunk:
                out[i][j] = tok_ll[start:start + n_cont].sum().item()
                start += n_cont
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def choice_loglikelihoods_shared(model, tokenizer, items: list[MCQItem], progress: bool | None = None,
                                 max_length: int | None = None, batch_items: int = 8) -> list[np.ndarray]:
    """Same numbers as ``choice_loglikelihoods``, computing fewer tokens: each question runs once and
    its KV cache is shared by all its choices (which differ only in their continuation).

    ``batch_items`` questions run together (sorted by length, right-padded), then every choice of
    those questions runs on a copy of its question's cache rows, with explicit positions and a mask
    that hides the padding between the question and the choice.  Items that do not fit
    ``max_length`` fall back to the batched path (which truncates from the left, as lm-eval does), and
    so do items longer than half a sliding attention window (``config.sliding_window``): the window
    counts cache slots, padding included, so only sequences that fit it whole score as unpadded."""
    adapter = adapter_for(model)
    if not adapter.is_decoder:
        raise ValueError(f"MCQ scoring needs a decoder language model; {adapter.family} is an encoder")
    validate_mcq(items)
    if isinstance(batch_items, bool) or not isinstance(batch_items, int) or batch_items < 1:
        raise ValueError(f"batch_items must be an integer >= 1, got {batch_items!r}")
    max_length = max_length or adapter.max_positions(model.config) or 2048
    device = model_device(model)
    base = adapter.base(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    window = getattr(model.config, "sliding_window", None)
    out: list[np.ndarray | None] = [None] * len(items)
    pairs = [[_encode_pair(tokenizer, it.question, " " + ch) for ch in it.choices] for it in items]
    fits = []
    for i, p in enumerate(pairs):
        for j, (_, k) in enumerate(p):
            if not k:
                raise ValueError(f"item {i} choice {j} tokenizes to nothing")
        longest = max(len(c) + len(k) for c, k in p)
        if longest > max_length + 1 or (window and longest > window // 2):  # see the docstring
            out[i] = choice_loglikelihoods(model, tokenizer, [items[i]], batch_size=len(p),
                                           max_length=max_length, progress=False)[0]
        else:
            fits.append(i)
    fits.sort(key=lambda i: -len(pairs[i][0][0]))  # long first (fail fast on memory), little padding
    batches = range(0, len(fits), batch_items)
    show = progress if progress is not None else len(batches) > 8
    was_training = model.training
    model.eval()
    try:
        for b in tqdm(batches, desc="mcq", disable=not show, leave=False):
            idx = fits[b:b + batch_items]
            ctxs = [pairs[i][0][0] for i in idx]
            B, T = len(idx), max(len(c) for c in ctxs)
            x = torch.full((B, T), pad, dtype=torch.long)
            mask = torch.zeros((B, T), dtype=torch.long)
            for r, c in enumerate(ctxs):
                x[r, :len(c)] = torch.tensor(c)
                mask[r, :len(c)] = 1
            res = base(input_ids=x.to(device), attention_mask=mask.to(device), use_cache=True)
            last = torch.tensor([len(c) - 1 for c in ctxs], device=device)
            first = F.log_softmax(adapter.lm_logits(model, res.last_hidden_state[torch.arange(B, device=device), last])
                                  .float(), -1).cpu()
            owner = [r for r, i in enumerate(idx) for _ in pairs[i]]        # the question row of every choice
            conts = [k for i in idx for _, k in pairs[i]]
            lls = np.array([first[r, k[0]].item() for r, k in zip(owner, conts)])
            Tc = max(len(k) for k in conts) - 1                            # continuation tokens fed to the model
            if Tc > 0:
                cache = res.past_key_values
                cache.batch_select_indices(torch.tensor(owner, device=device))
                R = len(conts)
                y = torch.full((R, Tc), pad, dtype=torch.long)
                m2 = torch.zeros((R, T + Tc), dtype=torch.long)
                pos = torch.zeros((R, Tc), dtype=torch.long)
                rows, cols, targets = [], [], []
                for q, (r, k) in enumerate(zip(owner, conts)):
                    L = len(ctxs[r])
                    y[q, :len(k) - 1] = torch.tensor(k[:-1], dtype=torch.long)
                    m2[q, :L] = 1
                    m2[q, T:T + len(k) - 1] = 1
                    pos[q] = L + torch.arange(Tc)
                    rows += [q] * (len(k) - 1)
                    cols += list(range(len(k) - 1))
                    targets += k[1:]
                h = base(input_ids=y.to(device), attention_mask=m2.to(device), position_ids=pos.to(device),
                         past_key_values=cache, use_cache=True).last_hidden_state
                if rows:
                    logp = F.log_softmax(adapter.lm_logits(model, h[rows, cols]).float(), -1)
                    tok_ll = logp.gather(-1, torch.tensor(targets, device=device)[:, None]).squeeze(-1).cpu()
                    np.add.at(lls, rows, tok_ll.double().numpy())
                del cache
            s = 0
            for i in idx:
                out[i] = lls[s:s + len(pairs[i])]
                s += len(pairs[i])
    finally:
        model.train(was_training)
    return out


# The CPU rule of ``pick_method``: per computed token the shared-prefix path costs 1.3-1.9x the batched
# one (benchmarks/bench_eval.py, SmolLM2-135M, at 1 and 2 threads), so it is faster once the batched
# path would compute at least about twice as many tokens (every choice with its own copy of the
# context).  GPUs keep the batched path: the shared one is not measured there.
SHARED_MIN_RATIO = 2.0
METHODS = ("auto", "batched", "shared")


def mcq_requests(items: list[MCQItem]) -> list[tuple[str, str]]:
    """The ``(context, continuation)`` strings scored for ``items``, item by item and choice by
    choice: what lm-evaluation-harness's ``loglikelihood`` receives for the same task."""
    validate_mcq(items)
    return [(it.question, " " + ch) for it in items for ch in it.choices]


def token_counts(tokenizer, items: list[MCQItem]) -> dict:
    """Tokens the two methods compute: ``batched`` (question + choice, for every choice) and
    ``shared`` (each question once, plus every choice), and their ratio."""
    batched = shared = 0
    for it in items:
        pairs = [_encode_pair(tokenizer, it.question, " " + ch) for ch in it.choices]
        batched += sum(len(c) + len(k) for c, k in pairs)
        shared += len(pairs[0][0]) + sum(len(k) for _, k in pairs)
    return {"batched": batched, "shared": shared, "ratio": batched / max(shared, 1)}


def pick_method(model, tokenizer, items: list[MCQItem]) -> str:
    """``"batched"`` on CUDA and other accelerators; on CPU ``"shared"`` where the batched path would
    compute at least ``SHARED_MIN_RATIO`` times the shared path's tokens, else ``"batched"``."""
    if model_device(model).type != "cpu":
        return "batched"
    return "shared" if token_counts(tokenizer, items)["ratio"] >= SHARED_MIN_RATIO else "batched"


def mcq_accuracy(model, tokenizer, items: list[MCQItem], batch_size: int = 16,
                 progress: bool | None = None, shared_prefix: bool | None = None, method: str = "auto",
                 details: bool = False) -> dict:
    """Accuracy on ``items`` with 95% Wilson intervals.

    Returns ``{"acc", "acc_ci95_low", "acc_ci95_high", "acc_norm", "acc_norm_ci95_low",
    "acc_norm_ci95_high", "n", "chance", "method", "acc_stderr", "acc_norm_stderr"}`` (the standard
    errors are lm-eval's one-standard-error numbers, kept for comparison; report the intervals).
    ``details=True`` adds per-item ``correct`` / ``correct_norm`` (booleans, for paired tests such as
    ``minilib.stats.mcnemar``) and ``loglikelihoods``.  ``method``: ``"auto"`` (``pick_method``),
    ``"batched"`` or ``"shared"``; ``shared_prefix`` (True/False) is the older spelling of the last two."""
    if shared_prefix is not None:
        method = "shared" if shared_prefix else "batched"
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    validate_mcq(items)
    if method == "auto":
        method = pick_method(model, tokenizer, items)
    if method == "shared":
        lls = choice_loglikelihoods_shared(model, tokenizer, items, progress=progress)
    else:
        lls = choice_loglikelihoods(model, tokenizer, items, batch_size=batch_size, progress=progress)
    gold = np.array([it.answer for it in items])
    pred = np.array([int(np.argmax(ll)) for ll in lls])
    pred_norm = np.array([int(np.argmax(ll / np.array([len(c) for c in it.choices], dtype=float)))
                          for ll, it in zip(lls, items)])
    correct, correct_norm = pred == gold, pred_norm == gold
    n = len(items)
    se = lambda a: float(a.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    out = {"n": n, "chance": float(np.mean([1 / len(it.choices) for it in items])), "method": method}
    for key, c in (("acc", correct), ("acc_norm", correct_norm)):
        lo, hi = wilson_interval(int(c.sum()), n)
        out.update({key: float(c.mean()), f"{key}_ci95_low": lo, f"{key}_ci95_high": hi,
                    f"{key}_stderr": se(c.astype(float))})
    if details:
        out.update({"correct": correct.tolist(), "correct_norm": correct_norm.tolist(),
                    "loglikelihoods": [ll.tolist() for ll in lls]})
    return out
