"""Throughput of perplexity and MCQ evaluation, as a ratio to a plain forward pass over the same tokens.

    python benchmarks/bench_eval.py [--model smollm2-135m] [--windows 8] [--items 40] [--repeats 3]

Prints medians over repeats (these machines are noisy).  A ratio above 1 means the evaluation is
faster than a plain forward over the tokens it scores (MCQ shares each question's KV cache across
its choices); below 1 is the overhead of the loss computation.
"""

import argparse
import statistics
import time

import torch

from minilib.data import corpus_splits, eval_windows, load_mcq
from minilib.eval import mcq_accuracy, perplexity
from minilib.eval.mcq import _encode_pair
from minilib.models import load


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--mcq", default="arc_easy")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    m = load(a.model, device=a.device or "cpu")
    model, tok = m.model, m.tokenizer
    print(f"model {a.model}, torch threads {torch.get_num_threads()}, device {m.device}")

    w = eval_windows(corpus_splits(tok, "wiki")["test"], a.seqlen, a.windows).to(m.device)
    n_tok = w.numel()
    t_fwd = timed(lambda: [model(input_ids=w[i:i + 4]) for i in range(0, len(w), 4)], a.repeats)
    t_ppl = timed(lambda: perplexity(model, w, a.seqlen, batch_size=4, progress=False), a.repeats)
    print(f"perplexity: {n_tok} tokens  forward {n_tok / t_fwd:8.0f} tok/s  perplexity {n_tok / t_ppl:8.0f} tok/s"
          f"  ratio (ppl/forward throughput) {t_fwd / t_ppl:.2f}")

    items = load_mcq(a.mcq, n=a.items)
    seqs = []
    for it in items:
        for ch in it.choices:
            c, k = _encode_pair(tok, it.question, " " + ch)
            seqs.append(torch.tensor(c + k))
    n_tok = sum(len(s) for s in seqs)

    def plain():
        for s in sorted(seqs, key=len):
            model(input_ids=s[None].to(m.device))

    t_plain = timed(plain, a.repeats)
    t_shared = timed(lambda: mcq_accuracy(model, tok, items, progress=False), a.repeats)
    t_naive = timed(lambda: mcq_accuracy(model, tok, items, shared_prefix=False, progress=False), a.repeats)
    print(f"mcq ({a.mcq}, {len(items)} items, {len(seqs)} choice sequences, {n_tok} tokens):")
    print(f"  plain forward of every (question + choice): {t_plain:.2f} s")
    print(f"  mcq_accuracy, shared question KV cache:   {t_shared:.2f} s  ratio to forward {t_plain / t_shared:.2f}x")
    print(f"  mcq_accuracy, batched full sequences:     {t_naive:.2f} s  ratio to forward {t_plain / t_naive:.2f}x")


if __name__ == "__main__":
    main()
