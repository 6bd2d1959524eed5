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
# # Anatomy of an encoder: how information reaches `[CLS]`
#
# Per layer: the cosine between the decision token's hidden state after each layer and the **final
# decision vector**, and the same for each layer's attention output and FFN output (mean and spread
# over examples).  Per FFN neuron: the contribution vector `a_j * W_down[:, j]` at the decision token
# (its activation, gate included, times its column of the down projection), its cosine with the final
# decision vector, the projection on it, and activation statistics.  All of it comes from **one pass
# with hooks** that are removed afterwards; the arrays are stored (npz) under a key and reused by
# `BERT_pruning_strategy`.
#
# **The final decision vector** (`decision_state`) is by default the vector the decision head reads
# (`"head"`: for decoders the state *after* the final norm; per-layer states are compared through the
# final norm, logit-lens style, and contributions through its linear part with the scale frozen);
# `"residual"` is the residual stream before the final norm.  The same pass gives both; the notebook
# shows how far apart they are (for encoders without a final norm they coincide).
#
# **Two protocols for the decision.**  `head-only`: the frozen model with a logistic-regression head
# on the decision token (cached).  `finetuned`: the model fine-tuned on the task (`ft_method`: full or a
# LoRA adapter, merged afterwards; cached), whose own linear head is the decision head -- the original
# study fine-tuned the whole model before its anatomy.  Accuracy is reported with its 95% Wilson
# interval.
#
# **Decision task.** Sarcasm detection on the news-headlines set (28,614 labelled headlines), split into
# disjoint seeded train/test parts.
#
# **Models.** The default is the embedded `minilm-l6` (all-MiniLM-L6-v2, a real 6-layer BERT encoder), which runs offline.  `model = "bert-base-uncased"`
# reproduces the original setting for users who have the Hugging Face hub (the `paper` profile picks it
# when the hub is reachable).

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: minilm-l6, default: minilm-l6, paper: bert-base-uncased if the hub is reachable)
dataset = None                   # "sarcasm" (28,614 headlines), "sst2" (872) or a .jsonl with text,label; None: profile
template = "{text}"       # how a text is shown to the model
n_train = None                   # examples for the head-only head and the anatomy pass; None: profile
n_test = None                    # held-out examples for accuracy; None: profile
seed = 0
batch_size = None
max_length = 128
protocols = None                 # ["head-only", "finetuned"]; None: profile
decision_state = "head"          # "head": the vector the head reads (after the final norm) | "residual": before it
ft_method = None                 # "full" | "lora"; None: profile
ft_n_train = None                # examples for fine-tuning (first ones of the train part); None: profile
ft_epochs = None
ft_batch_size = None
ft_lr = None                     # learning rate of the fine-tuned body (the head's is 1e-3)
ft_init = None                   # "probe": start from the head-only head (LP-FT) | "random"; None: profile
lora_r = None                    # LoRA rank (alpha 2r) when ft_method is "lora"
anatomy_dir = ""                 # "": $MINILIB_CACHE/anatomy
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("BERT_anatomy", globals(), *NOTEBOOKS["BERT_anatomy"])   # recorded by write_results
globals().update(resolved)

# %%
import time
import numpy as np, pandas as pd, torch
from minilib.eval.decision import decision_accuracy
from minilib.hooks import count_hooks
from minilib.stats import bootstrap_ci
from minilib.studies.anatomy import anatomy_for, decision_model, decision_setup, DECISION_STATES
from minilib.plotting import neuron_summary
from minilib.figures import draw, save_all
from minilib.results import write_results, read_results

t_start = time.perf_counter()
m, task, tag, ft, majority = decision_setup(resolved)   # load, task, fine-tuning options, majority class

# %% [markdown]
# ## Each protocol: the decision model, one hooked pass, test accuracy

# %%
per_protocol, anatomies, layer_rows = {}, {}, []
for proto in protocols:
    t = time.perf_counter()
    if proto == "head-only":   # the anatomy pass also gives the head's training features
        an_m = m
        ans = {s: anatomy_for(m, task, batch_size, max_length, directory=anatomy_dir or None, decision_state=s) for s in DECISION_STATES}
        mp, head, info = decision_model(m, task, proto, batch_size, max_length, features=torch.as_tensor(ans[decision_state][0]["features"]))
    else:
        mp, head, info = decision_model(m, task, proto, batch_size, max_length, ft=ft)
        ans = {s: anatomy_for(mp, task, batch_size, max_length, directory=anatomy_dir or None, decision_state=s) for s in DECISION_STATES}
    assert count_hooks(mp.model) == 0
    acc = decision_accuracy(mp.model, mp.tokenizer, head, task, "test", batch_size, max_length)
    hr = bootstrap_ci(ans[decision_state][0]["head_residual_cos"])
    per_protocol[proto] = {**{k: acc[k] for k in ["acc", "ci95_low", "ci95_high", "n"]}, "majority": majority,
                           "anatomy_key": ans[decision_state][1]["key"], "anatomy_cached": ans[decision_state][1]["cached"],
                           "head_residual_cos": {"mean": hr.estimate, "low": hr.low, "high": hr.high},
                           "seconds": time.perf_counter() - t,
                           "ft": None if proto == "head-only" else {k: info.get(k) for k in ["method", "n_train", "epochs", "lr", "init", "cached", "seconds", "final_loss", "key"]}}
    anatomies[proto] = {s: a for s, (a, _) in ans.items()}
    for s, (a, _) in ans.items():
        layer_rows += [{"kind": "layer", "protocol": proto, "decision_state": s, **r} for r in a.layer_summary().to_dict("records")]
    print(f"{proto}: accuracy {acc['acc']:.3f} [{acc['ci95_low']:.3f}, {acc['ci95_high']:.3f}] (n = {acc['n']}, majority {majority:.3f}); "
          f"cos(head vector, residual vector) {hr.estimate:.3f} [{hr.low:.3f}, {hr.high:.3f}]; {per_protocol[proto]['seconds']:.0f}s", flush=True)
pd.DataFrame(per_protocol).T.drop(columns=["ft"]).round(3)

# %% [markdown]
# ## Per layer, for both decision vectors

# %%
layers = pd.DataFrame(layer_rows)
layers.pivot_table(index="layer", columns=["protocol", "decision_state"], values="hidden_cos_mean").round(3)

# %% [markdown]
# ## Per neuron: the most decision-aligned neurons (first protocol, chosen decision vector)

# %%
an = anatomies[protocols[0]][decision_state]
L, W = an["neuron_cos"].shape
flat = pd.DataFrame({"layer": np.repeat(np.arange(L), W), "neuron": np.tile(np.arange(W), L),
                     **{k: an[k].ravel() for k in ["neuron_cos", "neuron_abs_cos", "neuron_abs_proj", "act_mean", "act_abs_mean", "act_std", "act_pos_frac"]}})
flat.sort_values("neuron_abs_cos", ascending=False).head(10).round(3)

# %%
write_results(results_path, {
    "notebook": "BERT_anatomy",
    "metrics": {"protocols": per_protocol, "majority": majority,
                "head_residual_cos": {p: v["head_residual_cos"] for p, v in per_protocol.items()},
                "neuron_abs_cos_mean": float(an["neuron_abs_cos"].mean()), "neuron_abs_cos_max": float(an["neuron_abs_cos"].max()),
                "seconds": time.perf_counter() - t_start},
    "records": layer_rows,
    # what the heatmap and histogram need (per protocol, the chosen decision vector): each layer's neuron
    # cosines as sorted quantiles and as counts on shared bins (minilib.plotting.neuron_summary)
    "neurons": {p: neuron_summary(by_state[decision_state]["neuron_cos"]) for p, by_state in anatomies.items()},
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Drawn from the results just written, by the same function as `python -m minilib.figures` (one home
# per figure: `minilib.figures`): per layer, for both decision vectors; the neuron heatmap and histogram.

# %%
save_all(draw("BERT_anatomy", read_results(results_path)), figures_dir)
