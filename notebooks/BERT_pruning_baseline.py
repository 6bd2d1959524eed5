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
# # Structured FFN pruning of a encoder: baselines
#
# FFN neurons are removed **physically** (rows of up/gate with their biases, columns of down; the
# intermediate size shrinks), without retraining, by two baselines:
#
# * **random**: indices drawn independently for every layer from one seeded generator (the original
#   code reused the same indices in every layer);
# * **magnitude**: the L2 norm of the neuron's weights (its up/gate rows and its down column).
#
# For each ratio we measure task accuracy (Wilson 95% CI), perplexity (decoders), parameters,
# checkpoint bytes and CPU forward latency.  The head is the cached head-only classifier of
# `BERT_anatomy` (the same key), kept fixed while the model is pruned.
#
# **Decision task.** Sarcasm detection on the news-headlines set (28,614 labelled headlines),
# split into disjoint seeded train/test parts.  The decision is read at `[CLS]`: a linear head
# (logistic regression) is trained **head-only** on the frozen model's final hidden state there, and
# cached in `$MINILIB_CACHE/heads` as safetensors so that reruns do not retrain.  Accuracy is reported
# with its 95% Wilson interval.
#
# **Models.** The default is the embedded `minilm-l6` (all-MiniLM-L6-v2, a real 6-layer BERT encoder), which runs offline.  `model = "bert-base-uncased"` reproduces the original
# setting for users who have the Hugging Face hub.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: minilm-l6, default: minilm-l6, paper: bert-base-uncased if the hub is reachable)
dataset = None                   # "sarcasm" (28,614 headlines), "sst2" (872) or a .jsonl with text,label; None: profile
template = "{text}"       # how a text is shown to the model
n_train = None                   # examples for the head (and the anatomy pass); None: profile
n_test = None                    # held-out examples for accuracy; None: profile
seed = 0
batch_size = None
max_length = 128
ratios = None                    # fractions of FFN neurons removed; None: profile
ppl_corpus = "wiki"              # perplexity (decoders only), test split
ppl_windows = None
ppl_seqlen = None
save_ratio = 0.3                 # ratio of the pruned model that is saved and reloaded
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "" = a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "" = the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.studies.structured import NOTEBOOKS
globals().update(resolve("BERT_pruning_baseline", globals(), *NOTEBOOKS["BERT_pruning_baseline"]))

# %%
import json, os
import numpy as np, pandas as pd, torch
from minilib.models import load
from minilib.eval.decision import decision_task, decision_accuracy
from minilib.studies.anatomy import anatomy_for
from minilib.train.heads import trained_head
from minilib import plotting as plots
from minilib.plotting import save_figure
from minilib.results import write_results

m = load(model, device=device)
task = decision_task(dataset, n_train, n_test, seed, template=template)
tag = model.replace("/", "_")
print(m.adapter.family, f"{sum(p.numel() for p in m.model.parameters())/1e6:.1f}M params;", task.info)

# %%
from minilib.data import corpus_splits
from minilib.studies.structured import ratio_sweep, method_masks, baseline_methods
from minilib.prune import score_neurons_norm, mask_neurons, remove_neurons
from minilib.models import save_model, load_model
head, head_info = trained_head(m, task, batch_size, max_length)
ppl_ids = corpus_splits(m.tokenizer, ppl_corpus)["test"] if m.adapter.is_decoder else None
majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
kw = dict(batch_size=batch_size, max_length=max_length, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen)
print(head_info)

# %%
methods = baseline_methods(seed)
df = ratio_sweep(m, head, task, methods, ratios, ppl_ids, **kw)
df.round(4)

# %%
save_figure(plots.plot_accuracy_vs_pruned(df, f"{model} on {dataset}: baselines", majority), f"{tag}_pruning_baseline_accuracy", directory=figures_dir)
save_figure(plots.plot_cost(df, f"{model}: cost of FFN pruning"), f"{tag}_pruning_baseline_cost", directory=figures_dir)

# %% [markdown]
# ## Saving a pruned model: safetensors + JSON plan, reloaded with one function

# %%
import copy, tempfile
from minilib.eval.decision import decision_logits
pruned = copy.deepcopy(m.model)
rep = remove_neurons(pruned, mask_neurons(score_neurons_norm(pruned), save_ratio), method="magnitude", target={"ratio": save_ratio})
texts = task.texts("test")[:32]
with tempfile.TemporaryDirectory() as d:
    save_model(pruned, m.tokenizer, d, extra={"pruning": rep.as_dict()}, head=head, overwrite=True)
    saved_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    re = load_model(d, device=device)
    diff = np.abs(decision_logits(pruned, m.tokenizer, head, texts) - decision_logits(re.model, re.tokenizer, re.head, texts)).max()
print(f"saved {saved_bytes/1e6:.1f} MB (safetensors + plan + tokenizer); reloaded widths {re.plan['reshaped'] and sorted(set(rep.after['ffn_widths']))}; max |logit diff| = {diff:.2e}")
assert diff < 1e-4
del pruned, re

# %%
write_results(results_path, {
    "notebook": "BERT_pruning_baseline", "parameters": {"profile": profile, "model": model, "dataset": dataset, "template": template, "n_train": n_train,
                                         "n_test": n_test, "seed": seed, "max_length": max_length, "ratios": ratios},
    "metrics": {"dense_acc": float(df.loc[df.ratio == 0, "acc"].iloc[0]), "majority": majority, "reload_max_diff": float(diff),
                "n_test": int(df["n_test"].iloc[0])},
    "records": df.to_dict("records"),
})
