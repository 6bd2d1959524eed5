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
# # Anatomy of a encoder: how information reaches `[CLS]`
#
# Per layer: the cosine between the decision token's hidden state after each layer and the final
# decision vector (the residual stream after the last block), and the same for each layer's attention
# output and FFN output (mean and spread over examples).  Per FFN neuron: the contribution vector
# `a_j * W_down[:, j]` at the decision token (its activation, gate included, times its column of the
# down projection), its cosine with the final decision vector, the projection on it, and activation
# statistics.  All of it comes from **one pass with hooks** that are removed afterwards; the arrays
# are stored (npz) under a key and reused by `BERT_pruning_strategy`.
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
anatomy_dir = ""                 # "": $MINILIB_CACHE/anatomy
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "" = a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "" = the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.studies.anatomy import NOTEBOOKS
globals().update(resolve("BERT_anatomy", globals(), *NOTEBOOKS["BERT_anatomy"]))

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

# %% [markdown]
# ## One hooked pass over the training examples

# %%
an, an_info = anatomy_for(m, task, batch_size, max_length, directory=anatomy_dir or None)
from minilib.hooks import count_hooks
assert count_hooks(m.model) == 0
print(an_info, {k: v.shape for k, v in an.arrays.items()})

# %% [markdown]
# ## The decision: head-only classifier, test accuracy

# %%
head, head_info = trained_head(m, task, batch_size, max_length, features=torch.as_tensor(an["features"]))
acc = decision_accuracy(m.model, m.tokenizer, head, task, "test", batch_size, max_length)
majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
print(head_info); print(acc, "majority class:", round(majority, 3))

# %% [markdown]
# ## Per layer

# %%
layers = an.layer_summary()
layers.round(3)

# %%
save_figure(plots.plot_layer_curves(an, f"{model}: cosine with the final decision vector"), f"{tag}_anatomy_layers", directory=figures_dir)
save_figure(plots.plot_neuron_heatmap(an, "neuron_cos", f"{model}: neuron contribution cos (sorted)"), f"{tag}_anatomy_heatmap", directory=figures_dir)
save_figure(plots.plot_neuron_distribution(an, "neuron_cos", f"{model}: distribution of neuron cos"), f"{tag}_anatomy_neuron_hist", directory=figures_dir)

# %% [markdown]
# ## Per neuron: the most decision-aligned neurons

# %%
L, W = an["neuron_cos"].shape
flat = pd.DataFrame({"layer": np.repeat(np.arange(L), W), "neuron": np.tile(np.arange(W), L),
                     **{k: an[k].ravel() for k in ["neuron_cos", "neuron_abs_cos", "neuron_abs_proj", "act_mean", "act_abs_mean", "act_std", "act_pos_frac"]}})
top = flat.sort_values("neuron_abs_cos", ascending=False).head(10)
top.round(3)

# %%
write_results(results_path, {
    "notebook": "BERT_anatomy", "parameters": {"profile": profile, "model": model, "dataset": dataset, "template": template, "n_train": n_train,
                                         "n_test": n_test, "seed": seed, "max_length": max_length},
    "metrics": {**{k: acc[k] for k in ["acc", "ci95_low", "ci95_high", "n"]}, "majority": majority,
                "head_cached": head_info["cached"], "anatomy_key": an_info["key"],
                "hidden_cos_first_layer": float(layers["hidden_cos_mean"].iloc[0]),
                "neuron_abs_cos_mean": float(an["neuron_abs_cos"].mean()),
                "neuron_abs_cos_max": float(an["neuron_abs_cos"].max())},
    "records": [{"kind": "layer", **r} for r in layers.to_dict("records")],
})
