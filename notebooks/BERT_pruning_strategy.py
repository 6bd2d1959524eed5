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
# # Anatomy-guided structured FFN pruning of an encoder
#
# The strategy prunes the FFN neurons with the **lowest anatomy score** (mean |projection| of the
# neuron's contribution `a_j W_down[:, j]` on the final decision vector at `[CLS]`), splits the budget
# across layers by the anatomy's **layer profile** (a layer's share is proportional to
# `profile ** -strength`, capped at `max_layer_ratio`), and **never removes preserved neurons** (the top
# `preserve_fraction` of each layer by mean |cos| with the decision vector).  The final decision vector
# is the one the head reads (`decision_state = "head"`, the default) or the residual stream before the
# final norm (`"residual"`).  The anatomy arrays of `BERT_anatomy` are reused when present (same key,
# which names the decision state) and recomputed otherwise; arrays that do not match the model or the
# state raise `AnatomyMismatchError`.
#
# **Protocols.** Under `head-only` the frozen model and its logistic head; under `finetuned` the model
# fine-tuned on the task with its own head (the anatomy is then that of the fine-tuned model).  No
# retraining after pruning.
#
# **Statistics.** Baselines (random over `random_seeds`; `neuron-norm`, `neuron-maxprod` and, in the
# test and paper profiles, the original study's `authors-random`) come from `BERT_pruning_baseline`
# when its parameters match, else they are run here.  Per protocol and ratio the strategy is compared
# with each baseline **on the same test examples**: against a single-run baseline by the exact McNemar
# test, against the mean of a seeded baseline's seeds by a paired t-test on the per-example
# differences, each with a paired-bootstrap 95% interval of the accuracy difference and Holm's
# correction over the ratios.  The uniform-budget ablation (`anatomy-uniform`: the anatomy score with
# the same budget in every layer) separates the two parts of the strategy: the strategy against it is
# the effect of the layer budget, it against `neuron-norm`/`neuron-maxprod` (also uniform budgets) the
# effect of the anatomy score.  The docs' verdict decides all of these as one family.
#
# **Models.** The default is the embedded `minilm-l6` (all-MiniLM-L6-v2, a real 6-layer BERT encoder), which runs offline.  `model = "bert-base-uncased"`
# reproduces the original setting for users who have the Hugging Face hub.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: minilm-l6, default: minilm-l6, paper: bert-base-uncased if the hub is reachable)
dataset = None                   # "sarcasm" (28,614 headlines), "sst2" (872) or a .jsonl with text,label; None: profile
template = "{text}"       # how a text is shown to the model
n_train = None                   # examples for the head-only head and the anatomy pass; None: profile
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
random_seeds = None              # seeds of the random baselines (when they are run here); None: profile
baselines = None                 # besides random: "neuron-norm", "neuron-maxprod", "authors-random"; None: profile
ppl_corpus = "wiki"              # perplexity (decoders only), test split
ppl_windows = None
ppl_seqlen = None
save_ratio = 0.3                 # ratio of the pruned model that is saved and reloaded
preserve_fraction = None         # per layer, the most decision-aligned neurons are never removed; None: profile
profile_strength = 0.5           # layer budget share ~ layer_profile^(-strength); 0 gives a uniform budget
max_layer_ratio = 0.8            # no layer loses more than this fraction
score_kind = "abs_proj"          # anatomy score: mean |projection of the contribution on the decision vector|
uniform_ablation = None          # also run the anatomy score with a uniform budget; None: profile
decision_state = None            # "head" (the vector the head reads) | "residual" (before the final norm); None: profile
anatomy_dir = ""                 # "": $MINILIB_CACHE/anatomy (written by BERT_anatomy)
baseline_path = ""               # "": results/BERT_pruning_baseline.json of the repository (reused when its parameters match)
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("BERT_pruning_strategy", globals(), *NOTEBOOKS["BERT_pruning_strategy"])   # recorded by write_results
globals().update(resolved)

# %%
import os, time
import numpy as np, pandas as pd, torch
from minilib.studies.anatomy import decision_setup
from minilib.studies.structured import paired_tests, reuse_baselines, seed_summary, split_correct, strategy_sweep
from minilib.prune import remove_neurons
from minilib.figures import draw, save_all
from minilib.params import ROOT
from minilib.results import write_results, read_results

t_start = time.perf_counter()
m, task, tag, ft, majority = decision_setup(resolved)   # load, task, fine-tuning options, majority class

# %% [markdown]
# ## Baselines: reused from `BERT_pruning_baseline` when they match

# %%
from minilib.data import corpus_splits
ppl_ids = corpus_splits(m.tokenizer, ppl_corpus)["test"] if m.adapter.is_decoder else None
kw = dict(batch_size=batch_size, max_length=max_length, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen)
params = dict(model=model, dataset=dataset, template=template, n_train=n_train, n_test=n_test, seed=seed, max_length=max_length,
              random_seeds=random_seeds, ft_method=ft_method, ft_n_train=ft_n_train, ft_epochs=ft_epochs, ft_batch_size=ft_batch_size,
              ft_lr=ft_lr, ft_init=ft_init, lora_r=lora_r)
baseline_file = baseline_path or str(ROOT / "results" / "BERT_pruning_baseline.json")
base = reuse_baselines(baseline_file, params, ratios, protocols, methods=["random", *baselines])
print("baselines reused from " + baseline_file if base is not None else "baselines: run here (no matching results file)")

# %% [markdown]
# ## Per protocol: anatomy, layer profile, budgets, preserved neurons, and the sweep

# %%
run = strategy_sweep(m, task, protocols, ratios, ft=ft, baselines=base, random_seeds=random_seeds,
                     baseline_names=["random", *baselines], ppl_ids=ppl_ids,
                     decision_state=decision_state, preserve_fraction=preserve_fraction, strength=profile_strength,
                     max_layer_ratio=max_layer_ratio, score_kind=score_kind, uniform_ablation=uniform_ablation,
                     anatomy_dir=anatomy_dir, **kw)
allm, budgets, strategies, lost = run["sweep"], run["budgets"], run["strategies"], run["preserved_removed"]
print("preserved neurons removed at the largest ratio:", lost)
budgets[protocols[0]].round(3)

# %% [markdown]
# ## Strategy against baselines: accuracy, and paired tests on the same test examples

# %%
summary = seed_summary(allm)
summary.pivot_table(index="ratio", columns=["protocol", "method"], values="acc").round(3)

# %%
tests = paired_tests(allm)
tests[["protocol", "ratio", "baseline", "acc_strategy", "acc_baseline", "diff", "diff_low", "diff_high", "p", "p_holm", "verdict"]].round(4) if len(tests) else tests

# %% [markdown]
# ## Saving the strategy's pruned model

# %%
import copy, tempfile
from minilib.eval.decision import decision_logits
from minilib.models import save_model, load_model
mp, head, strategy = strategies[protocols[0]]
pruned = copy.deepcopy(mp.model)
rep = remove_neurons(pruned, strategy(pruned, save_ratio), method="anatomy", target={"ratio": save_ratio})
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
records, correct = split_correct(allm)
write_results(results_path, {
    "notebook": "BERT_pruning_strategy",
    "metrics": {"majority": majority, "paired_tests": tests, "preserved_removed": lost, "reload_max_diff": float(diff),
                "baselines_reused": base is not None, "seconds": time.perf_counter() - t_start},
    "records": records,
    "correct": correct,
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Accuracy (95% intervals) and cost against the share of FFN neurons removed, drawn from the results
# just written by the same function as `python -m minilib.figures` (`minilib.figures`).

# %%
save_all(draw("BERT_pruning_strategy", read_results(results_path)), figures_dir)
