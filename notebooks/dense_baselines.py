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
# # Dense baselines of the embedded models
#
# Perplexity on the held-out test split of each embedded corpus (SparseGPT protocol: non-overlapping
# windows, exp of the mean NLL), with a 95% t-interval over windows, and zero-shot MCQ accuracy
# (lm-evaluation-harness prompts and `acc`/`acc_norm`) with 95% Wilson intervals over items.
# Every pruning notebook compares against these numbers.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (smollm2-135m; paper: facebook/opt-125m if the hub is reachable)
corpora = None                   # embedded corpora (test split of each); None: profile
seqlen = None                    # tokens per evaluation window
max_windows = None               # evaluation windows per corpus (0: every window of the test split)
mcq_sets = None                  # zero-shot MCQ tasks
mcq_n = None                     # at most this many items per MCQ set, seeded random subset (0: the whole set)
mcq_method = None                # MCQ scoring path: "auto" (by device and lengths) | "batched" | "shared"
seed = None                      # seed of the MCQ subsets (0: the subset every notebook scores)
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("dense_baselines", globals(), *NOTEBOOKS["dense_baselines"])   # recorded by write_results
globals().update(resolved)

# %%
from minilib.models import load
from minilib.eval import model_report
from minilib.studies.dense import perplexity_table, mcq_table
from minilib.figures import draw, save_all
from minilib.results import write_results, read_results

m = load(model, device=device)
print(m.adapter.family, sum(p.numel() for p in m.model.parameters()) / 1e6, "M parameters")

# %%
ppl = perplexity_table(m.model, m.tokenizer, corpora, seqlen, max_windows or None)
ppl.drop(columns="nll")

# %%
mcq = mcq_table(m.model, m.tokenizer, mcq_sets, mcq_n or None, seed=seed, method=mcq_method)
mcq

# %%
rep = model_report(m.model)
{k: v for k, v in rep.items() if k != "layers"}

# %%
write_results(results_path, {
    "metrics": {"params": rep["params"], "checkpoint_bytes": rep["checkpoint_bytes"], "tokens_per_s": rep["tokens_per_s"]},
    "records": [{"kind": "perplexity", **r} for r in ppl.to_dict("records")] + [{"kind": "mcq", **r} for r in mcq.to_dict("records")],
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Perplexity per corpus and MCQ accuracy against chance, with their 95% intervals, drawn from the results just written, by the same function as `python -m minilib.figures`
# (one home per figure: `minilib.figures`).

# %%
save_all(draw("dense_baselines", read_results(results_path)), figures_dir)
