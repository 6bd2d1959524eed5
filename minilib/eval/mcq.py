"""Multiple-choice accuracy by log-likelihood, as lm-evaluation-harness defines it.

Each choice is scored by the summed log-probability of its tokens given the question (the choice
is appended after one space).  ``acc`` takes the choice with the highest log-likelihood;
``acc_norm`` divides each log-likelihood by the choice's length in characters first.  The
continuation's tokens are those of ``tokenize(question + " " + choice)`` beyond the tokens of the
question, so word boundaries tokenize as they do in running text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minilib.data.tasks import MCQItem, validate_mcq
from minilib.device import model_device
from minilib.models.adapters import adapter_for


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
                                 max_length: int | None = None) -> list[np.ndarray]:
    """Same numbers as ``choice_loglikelihoods``, computed faster: the question runs once per item and
    its KV cache is shared by all choices (which differ only in their continuation)."""
    adapter = adapter_for(model)
    if not adapter.is_decoder:
        raise ValueError(f"MCQ scoring needs a decoder language model; {adapter.family} is an encoder")
    validate_mcq(items)
    max_length = max_length or adapter.max_positions(model.config) or 2048
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    was_training = model.training
    model.eval()
    try:
        for it in tqdm(items, desc="mcq", disable=not (progress if progress is not None else len(items) > 50),
                       leave=False):
            pairs = [_encode_pair(tokenizer, it.question, " " + ch) for ch in it.choices]
            ctxs = {tuple(c) for c, _ in pairs}
            longest = max(len(c) + len(k) for c, k in pairs)
            if len(ctxs) != 1 or longest > max_length + 1 or any(not k for _, k in pairs):
                out.extend(choice_loglikelihoods(model, tokenizer, [it], batch_size=len(it.choices),
                                                 max_length=max_length, progress=False))
                continue
            ctx = torch.tensor(pairs[0][0], device=device)[None]
            res = model(input_ids=ctx, use_cache=True)
            first = F.log_softmax(res.logits[0, -1].float(), -1)
            cache = res.past_key_values
            n = len(pairs)
            cache.batch_repeat_interleave(n)
            conts = [k for _, k in pairs]
            Tc = max(len(k) for k in conts)
            x = torch.full((n, Tc), pad, dtype=torch.long, device=device)
            mask = torch.zeros((n, ctx.shape[1] + Tc), dtype=torch.long, device=device)
            mask[:, :ctx.shape[1]] = 1
            for j, k in enumerate(conts):
                x[j, :len(k)] = torch.tensor(k, device=device)
                mask[j, ctx.shape[1]:ctx.shape[1] + len(k)] = 1
            ll = np.zeros(n)
            if Tc > 1:
                logits = model(input_ids=x[:, :-1], attention_mask=mask[:, :-1], past_key_values=cache,
                               use_cache=True).logits
                logp = F.log_softmax(logits.float(), -1)
            for j, k in enumerate(conts):
                ll[j] = first[k[0]].item()
                if len(k) > 1:
                    ll[j] += logp[j, :len(k) - 1].gather(-1, x[j, 1:len(k), None]).sum().item()
            out.append(ll)
    finally:
        model.train(was_training)
    return out


def mcq_accuracy(model, tokenizer, items: list[MCQItem], batch_size: int = 16,
                 progress: bool | None = None, shared_prefix: bool = True) -> dict:
    """``{"acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"}`` on ``items``."""
    if shared_prefix:
        lls = choice_loglikelihoods_shared(model, tokenizer, items, progress=progress)
    else:
        lls = choice_loglikelihoods(model, tokenizer, items, batch_size=batch_size, progress=progress)
    gold = np.array([it.answer for it in items])
    pred = np.array([int(np.argmax(ll)) for ll in lls])
    pred_norm = np.array([int(np.argmax(ll / np.array([len(c) for c in it.choices], dtype=float)))
                          for ll, it in zip(lls, items)])
    acc, acc_norm = (pred == gold).astype(float), (pred_norm == gold).astype(float)
    n = len(items)
    se = lambda a: float(a.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    return {"acc": float(acc.mean()), "acc_norm": float(acc_norm.mean()), "acc_stderr": se(acc),
            "acc_norm_stderr": se(acc_norm), "n": n,
            "chance": float(np.mean([1 / len(it.choices) for it in items]))}
