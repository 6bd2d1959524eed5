"""Throughput of perplexity and MCQ evaluation, against a plain forward pass and against
lm-evaluation-harness on the same requests.

    python benchmarks/bench_eval.py [--model smollm2-135m] [--windows 8] [--items 30]
                                    [--tasks arc_easy,openbookqa,piqa,sciq,mmlu:anatomy] [--repeats 3]
                                    [--threads 1] [--device cpu]

Perplexity: tokens/s of ``perplexity`` and of a plain forward over the same windows (ratio < 1 is the
cost of the loss).  MCQ, per task: the same items scored by our two paths (``batched``: whole
question+choice sequences; ``shared``: each question once, KV cache shared by its choices), by
``method="auto"`` (what ``pick_method`` chooses), and by lm-eval's ``HFLM.loglikelihood`` on the same
``(context, continuation)`` requests (same model object, same batch size).  The runs of one repeat
are interleaved (batched, shared, auto, lm-eval, then again), so load on a shared machine hits all of
them alike; medians over repeats are printed, with each path's time relative to lm-eval's
(< 1: faster than lm-eval) and the token ratio (batched tokens / shared tokens) that ``pick_method``
uses on CPUs.
"""

import argparse
import statistics
import time

import torch

from minilib.data import corpus_splits, eval_windows, load_mcq
from minilib.eval import mcq_accuracy, mcq_requests, perplexity
from minilib.eval.mcq import pick_method, token_counts
from minilib.models import load


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--tasks", default="arc_easy,openbookqa,piqa,sciq,mmlu:anatomy")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-lmeval", action="store_true", help="skip lm-evaluation-harness")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = load(a.model, device=a.device)
    model, tok, dev = m.model, m.tokenizer, m.device
    print(f"model {a.model}, torch threads {torch.get_num_threads()}, device {dev}, medians of {a.repeats}")

    w = eval_windows(corpus_splits(tok, "wiki")["test"], a.seqlen, a.windows).to(dev)
    n_tok = w.numel()
    fwd, ppl = [], []
    for _ in range(a.repeats):
        fwd.append(timed(lambda: [model(input_ids=w[i:i + 4]) for i in range(0, len(w), 4)], dev))
        ppl.append(timed(lambda: perplexity(model, w, batch_size=4, progress=False), dev))
    t_fwd, t_ppl = statistics.median(fwd), statistics.median(ppl)
    print(f"perplexity: {n_tok} tokens  forward {n_tok / t_fwd:8.0f} tok/s  perplexity {n_tok / t_ppl:8.0f} tok/s"
          f"  ratio (ppl/forward throughput) {t_fwd / t_ppl:.2f}")

    lm = None
    if not a.no_lmeval:
        from minilib.eval.lmeval import hflm, loglikelihoods
        lm = hflm(m, batch_size=a.batch_size)
    print(f"{'task':<14}{'items':>6}{'tokens b/s':>12}{'ratio':>7}{'auto':>9}"
          f"{'batched s':>11}{'shared s':>10}{'auto s':>9}{'lm-eval s':>11}"
          f"{'batched/lm':>12}{'shared/lm':>11}{'auto/lm':>9}")
    for task in a.tasks.split(","):
        items = load_mcq(task, n=a.items, seed=0)
        reqs = mcq_requests(items)
        tc = token_counts(tok, items)
        runs = {"batched": [], "shared": [], "auto": [], "lm-eval": []}
        for _ in range(a.repeats):
            for meth in ("batched", "shared", "auto"):
                runs[meth].append(timed(lambda: mcq_accuracy(model, tok, items, batch_size=a.batch_size, method=meth,
                                                             progress=False), dev))
            if lm is not None:
                runs["lm-eval"].append(timed(lambda: loglikelihoods(m, reqs, lm=lm), dev))
        med = {k: statistics.median(v) if v else float("nan") for k, v in runs.items()}
        rel = {k: med[k] / med["lm-eval"] for k in ("batched", "shared", "auto")}
        print(f"{task:<14}{len(items):>6}{tc['batched']:>7}/{tc['shared']:<5}{tc['ratio']:>6.2f}"
              f"{pick_method(model, tok, items):>9}{med['batched']:>11.2f}{med['shared']:>10.2f}{med['auto']:>9.2f}"
              f"{med['lm-eval']:>11.2f}{rel['batched']:>12.2f}{rel['shared']:>11.2f}{rel['auto']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
