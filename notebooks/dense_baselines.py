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
# windows, exp of the mean NLL) and zero-shot MCQ accuracy (lm-evaluation-harness `acc`/`acc_norm`).
# Every pruning notebook compares against these numbers.

# %% tags=["parameters"]
model = "smollm2-135m"       # embedded decoder; "gpt2" or "facebook/opt-125m" with the hub
corpora = ["wiki", "c4", "tiny", "code", "technical"]
seqlen = 512
max_windows = 16                # evaluation windows per corpus (test split)
mcq_sets = ["sciq", "arc_easy", "piqa"]
mcq_n = 200                     # items per MCQ set (first n)
device = "cpu"
results_path = "../results/dense_baselines.json"

# %%
from minilib.models import load
from minilib.eval import model_report
from minilib.studies.dense import perplexity_table, mcq_table
from minilib.plotting import save_figure, plot_dense_baselines
from minilib.results import write_results

m = load(model, device=device)
print(m.adapter.family, sum(p.numel() for p in m.model.parameters()) / 1e6, "M parameters")

# %%
ppl = perplexity_table(m.model, m.tokenizer, corpora, seqlen, max_windows)
ppl

# %%
mcq = mcq_table(m.model, m.tokenizer, mcq_sets, mcq_n)
mcq

# %%
rep = model_report(m.model)
{k: v for k, v in rep.items() if k != "layers"}

# %%
fig = plot_dense_baselines(ppl, mcq, f"{model}: dense baselines")
save_figure(fig, f"dense_baselines_{model.replace('/', '_')}")

# %%
write_results(results_path, {
    "notebook": "dense_baselines", "parameters": {"model": model, "seqlen": seqlen, "max_windows": max_windows, "mcq_n": mcq_n},
    "metrics": {"params": rep["params"], "checkpoint_bytes": rep["checkpoint_bytes"], "tokens_per_s": rep["tokens_per_s"]},
    "records": [{"kind": "perplexity", **r} for r in ppl.to_dict("records")] + [{"kind": "mcq", **r} for r in mcq.to_dict("records")],
})
