# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (minilib)
#     language: python
#     name: minilib
# ---

# %% [markdown]
# # Structured FFN pruning of an encoder: baselines
#
# FFN neurons are removed **physically** (rows of the up/gate projections and their biases, columns of
# the down projection; the intermediate size shrinks) at several ratios, chosen by baselines that rank
# the neurons within every layer and remove the same fraction from every layer:
#
# * **random**: seeded, independently in every layer, repeated over `random_seeds` (>= 3) so that its
#   spread is known;
# * **neuron-norm**: the L2 norm of the neuron's up (and gate) row and down column;
# * **neuron-maxprod**: `max|up row| * max|down column|` (times `max|gate row|`), which keeps the few
#   neurons with one outsized weight;
# * **authors-random** (`baselines`, test and paper profiles): the original study's baseline, one random
#   index set removed from every layer (over `random_seeds`).
#
# None of them is called "magnitude": in `minilib.prune` that word means `|W|` per weight (unstructured
# pruning).  The original study had no weight-based baseline at all, only random pruning
# (docs/anatomy.md).
#
# No retraining after pruning: the decision head stays fixed.  Both **protocols** are measured:
# `head-only` (the frozen model's logistic head from `BERT_anatomy`, cached) and `finetuned` (the
# model fine-tuned on the task with its own head, cached by `BERT_anatomy`).  Every row keeps the
# per-example correctness on the test set, so `BERT_pruning_strategy` can compare the strategy with
# these baselines by paired tests on the same examples.
#
# **Decision task.** Sarcasm detection on the news-headlines set (28,614 labelled headlines), split into
# disjoint seeded train/test parts; the decision is read at `[CLS]`.  Accuracy with its 95% Wilson
# interval.
#
# **Models.** The default is the embedded `minilm-l6` (all-MiniLM-L6-v2, a real 6-layer BERT encoder), which runs offline.  `model = "bert-base-uncased"`
# reproduces the original setting for users who have the Hugging Face hub.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: minilm-l6, default: minilm-l6, paper: bert-base-uncased if the hub is reachable)
dataset = None                   # "sarcasm" (28,614 headlines), "sst2" (872) or a .jsonl with text,label; None: profile
template = "{text}"       # how a text is shown to the model
n_train = None                   # examples for the head-only head; None: profile
n_test = None                    # held-out examples for accuracy; None: profile
seed = 0                         # the train/test split
batch_size = None
max_length = 128
protocols = None                 # ["head-only", "finetuned"]; None: profile
ft_method = None                 # "full" | "lora"; None: profile (the same fine-tuning as BERT_anatomy, reused from the cache)
ft_n_train = None
ft_epochs = None
ft_batch_size = None
ft_lr = None
ft_init = None
lora_r = None
ratios = None                    # fractions of FFN neurons removed; None: profile
random_seeds = None              # seeds of the random baselines; None: profile
baselines = None                 # besides random: "neuron-norm", "neuron-maxprod", "authors-random"; None: profile
ppl_corpus = "wiki"              # perplexity (decoders only), test split
ppl_windows = None
ppl_seqlen = None
save_ratio = 0.3                 # ratio of the pruned model that is saved and reloaded
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("BERT_pruning_baseline", globals(), *NOTEBOOKS["BERT_pruning_baseline"])   # recorded by write_results
globals().update(resolved)

# %%
import os, time
import numpy as np, pandas as pd, torch
from minilib.studies.anatomy import decision_model, decision_setup
from minilib.studies.structured import ratio_sweep, baseline_methods, seed_summary, split_correct
from minilib.figures import draw, save_all
from minilib.results import write_results, read_results

t_start = time.perf_counter()
m, task, tag, ft, majority = decision_setup(resolved)   # load, task, fine-tuning options, majority class

# %%
from minilib.data import corpus_splits
ppl_ids = corpus_splits(m.tokenizer, ppl_corpus)["test"] if m.adapter.is_decoder else None
kw = dict(batch_size=batch_size, max_length=max_length, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen)
frames, models = [], {}
for proto in protocols:
    mp, head, info = decision_model(m, task, proto, batch_size, max_length, ft=ft)
    models[proto] = (mp, head)
    print(f"{proto}: decision model ready ({'cached' if info.get('cached') else 'trained'}, {info['seconds']:.0f}s)", flush=True)
    frames.append(ratio_sweep(mp, head, task, baseline_methods(seeds=random_seeds, names=["random", *baselines]), ratios, ppl_ids, **kw).assign(protocol=proto))
df = pd.concat(frames, ignore_index=True)
summary = seed_summary(df)
summary.pivot_table(index="ratio", columns=["protocol", "method"], values="acc").round(3)

# %% [markdown]
# ## Saving a pruned model: safetensors + JSON plan, reloaded with one function

# %%
import copy, tempfile
from minilib.eval.decision import decision_logits
from minilib.models import save_model, load_model
from minilib.prune import score_neurons_maxprod, mask_neurons, remove_neurons
mp, head = models[protocols[0]]
pruned = copy.deepcopy(mp.model)
rep = remove_neurons(pruned, mask_neurons(score_neurons_maxprod(pruned), save_ratio), method="neuron-maxprod", target={"ratio": save_ratio})
texts = task.texts("test")[:32]
with tempfile.TemporaryDirectory() as d:
    save_model(pruned, mp.tokenizer, d, extra={"pruning": rep.as_dict()}, head=head, overwrite=True)
    saved_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    re = load_model(d, device=device)
    diff = np.abs(decision_logits(pruned, mp.tokenizer, head, texts) - decision_logits(re.model, re.tokenizer, re.head, texts)).max()
print(f"saved {saved_bytes/1e6:.1f} MB (safetensors + plan + tokenizer); reloaded widths {re.plan['reshaped'] and sorted(set(rep.after['ffn_widths']))}; max |logit diff| = {diff:.2e}")
assert diff < 1e-4
del pruned, re

# %%
records, correct = split_correct(df)
write_results(results_path, {
    "notebook": "BERT_pruning_baseline",
    "metrics": {"dense_acc": {p: float(df[(df.protocol == p) & (df.ratio == 0)]["acc"].iloc[0]) for p in protocols} if 0.0 in ratios else None,
                "majority": majority, "reload_max_diff": float(diff), "n_test": int(df["n_test"].iloc[0]),
                "seconds": time.perf_counter() - t_start},
    "records": records,
    "correct": correct,
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Accuracy (95% intervals) and cost against the share of FFN neurons removed, drawn from the results
# just written by the same function as `python -m minilib.figures` (`minilib.figures`).

# %%
save_all(draw("BERT_pruning_baseline", read_results(results_path)), figures_dir)
