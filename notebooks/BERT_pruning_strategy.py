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
# # Anatomy-guided structured FFN pruning of a encoder
#
# The strategy prunes the FFN neurons with the **lowest anatomy score** (mean |projection| of the
# neuron's contribution `a_j W_down[:, j]` on the final decision vector at `[CLS]`), splits the
# budget across layers by the anatomy's **layer profile** (a layer's share is proportional to
# `profile ** -strength`, capped at `max_layer_ratio`), and **never removes preserved neurons** (the
# top `preserve_fraction` of each layer by mean |cos| with the decision vector; the original code
# failed to protect them).  The anatomy arrays of `BERT_anatomy` are reused when present (same
# key) and recomputed otherwise; arrays that do not match the model raise `AnatomyMismatchError`.
# Baselines come from `BERT_pruning_baseline`'s results when their parameters match, else they are
# run here.
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
preserve_fraction = None         # per layer, the most decision-aligned neurons are never removed; None: profile
profile_strength = 0.5           # layer budget share ~ layer_profile^(-strength); 0 gives a uniform budget
max_layer_ratio = 0.8            # no layer loses more than this fraction
score_kind = "abs_proj"          # anatomy score: mean |projection of the contribution on the decision vector|
uniform_ablation = None          # also run the anatomy score with a uniform budget; None: profile
anatomy_dir = ""                 # "": $MINILIB_CACHE/anatomy (written by BERT_anatomy)
baseline_path = ""               # "": results/BERT_pruning_baseline.json of the repository (reused when its parameters match)
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "" = a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "" = the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.studies.structured import NOTEBOOKS
globals().update(resolve("BERT_pruning_strategy", globals(), *NOTEBOOKS["BERT_pruning_strategy"]))

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
an, an_info = anatomy_for(m, task, batch_size, max_length, directory=anatomy_dir or None)
an.check(m.model)   # raises AnatomyMismatchError if the arrays belong to another model
print(an_info)

# %%
from minilib.data import corpus_splits
from minilib.studies.structured import ratio_sweep, method_masks, baseline_methods
from minilib.prune import score_neurons_norm, mask_neurons, remove_neurons
from minilib.models import save_model, load_model
head, head_info = trained_head(m, task, batch_size, max_length, features=torch.as_tensor(an["features"]))
ppl_ids = corpus_splits(m.tokenizer, ppl_corpus)["test"] if m.adapter.is_decoder else None
majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
kw = dict(batch_size=batch_size, max_length=max_length, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen)
print(head_info)

# %% [markdown]
# ## Layer profile, budgets and preserved neurons

# %%
from minilib.studies.anatomy import layer_profile, preserved_neurons
from minilib.prune import layer_budgets, score_neurons_anatomy
profile = layer_profile(an)
preserved = preserved_neurons(an, preserve_fraction)
widths = [len(p) for p in preserved]
budget = pd.DataFrame({"layer": range(len(widths)), "profile": profile, "preserved": [int(p.sum()) for p in preserved],
                       **{f"removed@{r}": layer_budgets(widths, r, profile, profile_strength, max_layer_ratio, [int(p.sum()) for p in preserved])
                          for r in ratios if r > 0}})
budget.round(3)

# %%
strategy = method_masks(lambda mod: score_neurons_anatomy(mod, an, score_kind), profile, preserved, profile_strength, max_layer_ratio)
top = max(ratios)
prune_masks = strategy(m.model, top)
lost = sum(int((p & k).sum()) for p, k in zip(preserved, prune_masks))
print(f"at ratio {top}: {lost} preserved neurons removed (must be 0)"); assert lost == 0


# %%
from minilib.params import ROOT
baseline_file = baseline_path or str(ROOT / "results" / "BERT_pruning_baseline.json")


def load_baselines():
    """The baseline rows of BERT_pruning_baseline when its parameters match ours, else None."""
    if not os.path.isfile(baseline_file):
        return None
    b = json.load(open(baseline_file))
    same = all(b["parameters"].get(k) == v for k, v in dict(model=model, dataset=dataset, template=template, n_train=n_train,
                                                            n_test=n_test, seed=seed, max_length=max_length).items())
    if not (same and set(ratios) <= set(b["parameters"]["ratios"])):
        return None
    print("baselines reused from", baseline_file)
    return pd.DataFrame(b["records"]).query("ratio in @ratios")

base = load_baselines()
methods = {"anatomy": strategy}
if uniform_ablation:
    methods["anatomy-uniform"] = method_masks(lambda mod: score_neurons_anatomy(mod, an, score_kind))
dense = base[base.ratio == 0].iloc[0].to_dict() if base is not None and 0.0 in set(base.ratio) else None
df = ratio_sweep(m, head, task, methods, ratios, ppl_ids, dense=dense, **kw)
base = load_baselines() if base is None else base   # it may have finished meanwhile
if base is None:
    base = ratio_sweep(m, head, task, baseline_methods(seed), ratios, ppl_ids, **kw)
allm = pd.concat([df, base], ignore_index=True)
table = allm.pivot_table(index="ratio", columns="method", values="acc")
table.round(3)

# %%
save_figure(plots.plot_accuracy_vs_pruned(allm, f"{model} on {dataset}: strategy vs baselines", majority), f"{tag}_pruning_strategy_accuracy", directory=figures_dir)
save_figure(plots.plot_cost(allm, f"{model}: cost of FFN pruning"), f"{tag}_pruning_strategy_cost", directory=figures_dir)

# %% [markdown]
# ## Saving the strategy's pruned model

# %%
import copy, tempfile
from minilib.eval.decision import decision_logits
pruned = copy.deepcopy(m.model)
rep = remove_neurons(pruned, strategy(pruned, save_ratio), method="anatomy", target={"ratio": save_ratio})
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
best_base = table.drop(columns=[c for c in table.columns if c.startswith("anatomy")]).max(axis=1)
write_results(results_path, {
    "notebook": "BERT_pruning_strategy", "parameters": {"profile": profile, "model": model, "dataset": dataset, "template": template, "n_train": n_train, "n_test": n_test,
                                         "seed": seed, "max_length": max_length, "ratios": ratios, "preserve_fraction": preserve_fraction,
                                         "profile_strength": profile_strength, "max_layer_ratio": max_layer_ratio, "score_kind": score_kind},
    "metrics": {"dense_acc": float(table.loc[0.0].iloc[0]) if 0.0 in table.index else None, "majority": majority,
                "ratios_strategy_beats_best_baseline": [float(r) for r in table.index if r > 0 and table.loc[r, "anatomy"] > best_base[r]],
                "preserved_removed": lost, "reload_max_diff": float(diff), "anatomy_cached": an_info["cached"]},
    "records": allm.to_dict("records"),
})
