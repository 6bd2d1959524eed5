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
# Models through Contextual Pruning*).  For each domain corpus, cut once into disjoint
# calib/train/dev/test token ranges:
#
# 1. a calibration pass on *calib* gives every neuron's mean absolute output per token; by the
#    authors' rule (`scale="absolute"`) a neuron is scored on that absolute scale (the normalized
#    variant `scale="median"` divides each layer by its median neuron and leaves out the first
#    position of each window);
# 2. FFN neurons scoring under ε are **removed** (up/gate rows, down columns); attention rows are
#    skipped (shape constraints, see `docs/contextual.md`);
# 3. the vocabulary can be cut to the tokens seen in *calib*: embedding and (tied) LM head shrink,
#    and a remapped tokenizer spells every other token in byte tokens (lossless);
# 4. every pruned model is fine-tuned on *train*, stopping once its bits per byte on the *dev* text
#    reach the dense model's, keeping the best checkpoint; the **dense model is fine-tuned with the
#    same recipe** (its whole budget) as the control;
# 5. every model is scored on **the same test text** in bits per byte, with 95% bootstrap intervals
#    over text chunks (paired between models), and on MCQ (Wilson intervals; McNemar against dense).
#
# The changes are taken apart: **neurons only** (`neuron_thresholds`, the authors' ε 1e-5, 1e-3 and
# 1e-1 by default; vocabulary untouched), **vocabulary only** (ε = 0 in `thresholds`) and **both**
# (ε > 0 in `thresholds`), each before and after fine-tuning; a **vocabulary coverage curve**
# (kept vocabulary and byte-spelt test tokens against the calibration text and `min_count`, the
# vocabulary-only model scored at `coverage_eval_tokens`); and on `authors_domains` the **authors'
# protocol** beside ours: calibration, token counts, fine-tuning and early stopping on the test text
# itself.  Where this differs from the paper is in `docs/contextual.md`.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: tiny-llama, default: smollm2-135m, paper: microsoft/phi-1_5 if the hub is reachable)
domains = None                   # embedded domain corpora
mcq_sets = None                  # MCQ set per domain (None for a domain: skip)
thresholds = None                # ε of the settings that also prune the vocabulary (0: vocabulary only; > 0: neurons and vocabulary)
neuron_thresholds = None         # ε of the neuron-only settings (vocabulary untouched; default: the authors' 1e-5, 1e-3, 1e-1)
dense_finetune = None            # fine-tune the dense model with the same recipe (the recovery control)
scale = None                     # "absolute": mean |output| per token (the authors' rule) | "median": / layer median, first position excluded
prune_embeddings = True          # vocabulary pruning by token frequency on/off (off: `thresholds` prune neurons only)
ffn_widths = "threshold"         # "threshold": every FFN neuron under ε goes (the authors' rule; widths differ per layer) | "equal": as many go, one width for every layer (the shrink survives an HF export)
min_count = 1                    # keep tokens seen at least this often in calib
mcq_n = None                     # MCQ items per domain (0: the whole set)
calib_windows = None             # calibration windows of `seqlen` tokens (calib split)
seqlen = None                    # calibration window length
test_chunks = None               # test text: this many consecutive chunks of `chunk_bytes` bytes
dev_chunks = None                # dev text for early stopping, same chunking
chunk_bytes = None               # bytes per chunk (the unit of every test)
eval_seqlen = None               # longest window the scoring runs (longer chunks are scored in several windows)
epochs = 1                       # maximum fine-tuning epochs
ft_steps = None                  # maximum fine-tuning steps
ft_seqlen = None
ft_batch = None
ft_lr = 5e-5
ft_eval_every = None             # dev evaluation every n steps (early stopping)
coverage_tokens = None           # coverage curve: prefixes of the calib split of these many tokens (clipped to the split)
coverage_min_counts = None       # coverage curve: min_count values
coverage_eval_tokens = None      # coverage curve: prefixes where the vocabulary-only model is scored (min_count above)
authors_domains = None           # domains that also run the authors' protocol (the same text for everything)
authors_thresholds = None        # ε of the authors'-protocol settings (as `thresholds`)
n_resamples = None               # bootstrap resamples of every reported interval
seed = 0
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("contextual_pruning", globals(), *NOTEBOOKS["contextual_pruning"])   # recorded by write_results
globals().update(resolved)

# %%
import time
import pandas as pd
import torch
from IPython.display import Markdown, display
from minilib.models import load
from minilib.studies import contextual as study
from minilib.figures import draw, save_all
from minilib.results import write_results, read_results

torch.manual_seed(seed)
t0 = time.time()
m = load(model, device=device)
print(m.adapter.family, sum(p.numel() for p in m.model.parameters()) / 1e6, "M parameters")

# %%
config = study.ContextualConfig.from_params(globals())
runs = {}
for d in domains:
    runs[d] = study.run_domain(m.model, m.tokenizer, d, mcq_sets.get(d), config, authors=d in authors_domains,
                               device=device, verbose=False)
records = pd.DataFrame([r for d in domains for r in runs[d]["records"]])
curves = pd.DataFrame([c for d in domains for c in runs[d]["curves"]])
layers = pd.DataFrame([x for d in domains for x in runs[d]["layers"]])
coverage = pd.DataFrame([c for d in domains for c in runs[d]["coverage"]])
print({d: round(runs[d]["seconds"]) for d in domains}, "seconds per domain")

# %% [markdown]
# ## Which neurons each rule removes
#
# Share of FFN neurons under each ε, per block (figure `contextual_layers_*`, drawn with the others at the end).  Left: the authors' rule on the absolute scale.
# Right: the median-normalized rule (first position of each window left out) at the threshold that
# removes as many neurons in total, so the two can be compared layer by layer at an equal budget.

# %%
tag = model.replace("/", "_")
runs[domains[0]]["stats_summary"]

# %% [markdown]
# ## Every model on the same test text
#
# Bits per byte (total NLL of the test text over its UTF-8 bytes, in bits) with its 95% bootstrap
# interval over text chunks; Δ vs dense is paired on the same chunks.  `protocol`: `ours` (held out)
# or `authors` (calibration, token counts and fine-tuning on the test text itself); `setting`:
# `neurons`, `vocab`, `both` or `dense` (stage `dense-finetuned`: the control); `identical_to`: an ε
# that removes no neuron is the dense model.  `fallback_rate`: share of the test text's tokens that
# the pruned vocabulary spells in byte tokens.

# %%
cols = ["domain", "protocol", "setting", "eps", "stage", "identical_to", "size_pct", "vocab", "ffn_removed_pct",
        "fallback_rate", "bpb", "bpb_low", "bpb_high", "d_bpb", "d_bpb_low", "d_bpb_high", "ppl_base", "agree_ratio",
        "acc", "acc_low", "acc_high", "mcq_p"]
table = records[[c for c in cols if c in records.columns]].copy()
table["eps"] = table["eps"].map(lambda e: "—" if pd.isna(e) else f"{e:g}")
table.round(4)

# %% [markdown]
# ## Vocabulary coverage against calibration text
#
# Kept vocabulary and the share of the test text's tokens it spells in bytes, for prefixes of the
# calib split and several `min_count`; bits per byte of the vocabulary-only model (no fine-tuning)
# where it was scored.

# %%
cov_cols = ["domain", "calib_tokens", "min_count", "vocab", "size_pct", "test_fallback_rate", "bpb", "d_bpb",
            "d_bpb_low", "d_bpb_high"]
coverage[[c for c in cov_cols if c in coverage.columns]].round(4)

# %%
ours = records[records.protocol == "ours"].to_dict("records")
best = {d: study.best_reduction(ours, d) for d in domains}
write_results(results_path, {
    "notebook": "contextual_pruning",
    "metrics": {**{f"{d}_best_reduction_pct": (100 - b["size_pct"]) if b else 0.0 for d, b in best.items()},
                "seconds": time.time() - t0},
    "records": records.to_dict("records"),
    "curves": curves.to_dict("records"),
    "layers": layers.to_dict("records"),
    "coverage": coverage.to_dict("records"),
    "chunks": {d: runs[d]["chunks"] for d in domains},
    "text": {d: runs[d]["text"] for d in domains},
    "splits": {d: runs[d]["splits"] for d in domains},
    "stats_summary": {d: runs[d]["stats_summary"].to_dict("records") for d in domains},
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Neurons removed per block, size against bits per byte and the recovery curves, drawn from the
# results just written by the same function as `python -m minilib.figures` (`minilib.figures`; they
# show our protocol's vocabulary settings, ε = 0 and the `thresholds`; every model is in the tables).

# %%
save_all(draw("contextual_pruning", read_results(results_path)), figures_dir)

# %% [markdown]
# ## What the intervals support
#
# The same generated text as in `docs/contextual.md` (`minilib.tables.contextual.TABLES`, read
# back from the results just written).

# %%
from minilib.tables.contextual import TABLES
for name in ("contextual_verdict", "contextual_coverage", "contextual_recovery"):
    display(Markdown(TABLES[name](results_path)))
