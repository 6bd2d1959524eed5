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
# # Contextual pruning (Mini-GPTs)
#
# A general model made smaller for one domain (Valicenti et al., *Mini-GPTs: Efficient Large Language
# Models through Contextual Pruning*).  For each domain corpus:
#
# 1. a calibration pass (on the *calib* split) gives the normalized L1 norm of every neuron's outputs
#    (`minilib.studies.contextual`);
# 2. FFN neurons under a threshold ε are **removed** (up/gate rows, down columns); attention rows are
#    skipped (shape constraints, see `docs/contextual.md`);
# 3. with `prune_embeddings`, the vocabulary is cut to the tokens seen in *calib + train*: the
#    embedding and the (tied) LM head shrink, and a remapped tokenizer reads and writes text as before;
# 4. the pruned model is fine-tuned on *train* (AdamW, cosine), stopping once *dev* perplexity is at the
#    dense model's level, keeping the best checkpoint;
# 5. perplexity on *test* and MCQ accuracy are measured before pruning, after pruning and after
#    fine-tuning.  Calib/train/dev/test are disjoint token ranges of the corpus.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: tiny-llama, default: smollm2-135m, paper: microsoft/phi-1_5 if the hub is reachable)
domains = None                   # embedded domain corpora
mcq_sets = None                  # MCQ set per domain (None for a domain: skip)
thresholds = None                # ε on the normalized L1 norm (paper grid: 1e-5, 1e-3, 1e-1)
prune_embeddings = True          # vocabulary pruning by token frequency on/off
min_count = 1                    # keep tokens seen at least this often in calib + train
mcq_n = None                     # MCQ items per domain (0 = the whole set)
calib_windows = None             # calibration windows of `seqlen` tokens
seqlen = None                    # calibration / evaluation window length
eval_windows = None              # test and dev windows for perplexity
epochs = 1                       # maximum fine-tuning epochs
ft_steps = None                  # maximum fine-tuning steps
ft_seqlen = None
ft_batch = None
ft_lr = 5e-5
ft_eval_every = None             # dev evaluation every n steps (early stopping)
seed = 0
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "" = a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "" = the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.studies.contextual import NOTEBOOKS
globals().update(resolve("contextual_pruning", globals(), *NOTEBOOKS["contextual_pruning"]))

# %%
import time
import pandas as pd
import torch
from minilib.models import load
from minilib.studies.contextual import run_domain, best_reduction
from minilib.plotting import plot_recovery, plot_size_vs_perplexity, save_figure
from minilib.results import write_results

torch.manual_seed(seed)
t0 = time.time()
m = load(model, device=device)
print(m.adapter.family, sum(p.numel() for p in m.model.parameters()) / 1e6, "M parameters")

# %%
runs = {}
for d in domains:
    runs[d] = run_domain(m.model, m.tokenizer, d, mcq_sets.get(d), eps_grid=thresholds, prune_embeddings=prune_embeddings,
                         min_count=min_count, mcq_n=mcq_n or None, calib_windows=calib_windows, seqlen=seqlen,
                         eval_windows=eval_windows, ft_steps=ft_steps, ft_epochs=epochs, ft_seqlen=ft_seqlen,
                         ft_batch=ft_batch, ft_lr=ft_lr, ft_eval_every=ft_eval_every, seed=seed, device=device,
                         verbose=False)
records = pd.DataFrame([r for d in domains for r in runs[d]["records"]])
curves = pd.DataFrame([c for d in domains for c in runs[d]["curves"]])
print({d: round(runs[d]["seconds"]) for d in domains}, "seconds per domain")

# %% [markdown]
# ## Neurons under each threshold
#
# Share of neurons whose normalized L1 norm is under ε, per layer kind (first domain).  The norm is
# relative to the layer's most active neuron, so ε = 1e-5 and 1e-3 select almost nothing in a trained
# model: no neuron is silent on a whole domain.

# %%
runs[domains[0]]["stats_summary"]

# %% [markdown]
# ## Size-reduction table
#
# Threshold × stage → % of dense size, test perplexity, MCQ accuracy (acc / acc_norm).

# %%
cols = ["domain", "eps", "stage", "size_pct", "vocab", "ffn_neurons_removed", "fallback_rate", "ppl", "acc", "acc_norm"]
table = records[[c for c in cols if c in records.columns]].copy()
table["eps"] = table["eps"].map(lambda e: "dense" if pd.isna(e) else f"{e:g}")
table.round(4)

# %% [markdown]
# ## Largest reduction at or below dense perplexity (after fine-tuning)

# %%
best = {d: best_reduction(records.to_dict("records"), d) for d in domains}
summary = pd.DataFrame([{"domain": d, "dense_ppl": records[(records.domain == d) & (records.stage == "dense")]["ppl"].iloc[0],
                         "best_eps": b["eps"] if b else None, "size_pct": b["size_pct"] if b else None,
                         "reduction_pct": 100 - b["size_pct"] if b else 0.0, "ppl": b["ppl"] if b else None}
                        for d, b in best.items()])
summary.round(3)

# %%
tag = model.replace("/", "_")
save_figure(plot_size_vs_perplexity(records), f"contextual_size_vs_ppl_{tag}", directory=figures_dir)
if len(curves):
    save_figure(plot_recovery(curves, records), f"contextual_recovery_{tag}", directory=figures_dir)

# %%
write_results(results_path, {
    "notebook": "contextual_pruning",
    "parameters": {"profile": profile, "model": model, "domains": domains, "mcq_sets": mcq_sets, "thresholds": thresholds,
                   "prune_embeddings": prune_embeddings, "min_count": min_count, "mcq_n": mcq_n,
                   "calib_windows": calib_windows, "seqlen": seqlen, "eval_windows": eval_windows, "epochs": epochs,
                   "ft_steps": ft_steps, "ft_seqlen": ft_seqlen, "ft_batch": ft_batch, "ft_lr": ft_lr, "seed": seed},
    "metrics": {**{f"{r['domain']}_best_reduction_pct": r["reduction_pct"] for r in summary.to_dict("records")},
                "seconds": time.time() - t0},
    "records": records.to_dict("records"),
    "curves": curves.to_dict("records"),
    "best": summary.to_dict("records"),
    "splits": {d: runs[d]["splits"] for d in domains},
    "stats_summary": {d: runs[d]["stats_summary"].to_dict("records") for d in domains},
})
