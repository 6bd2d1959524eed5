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
# # SparseGPT one-shot pruning, with magnitude and Wanda baselines
#
# One-shot post-training pruning as in *SparseGPT: Massive Language Models Can Be Accurately Pruned in
# One-Shot* (Frantar & Alistarh, 2023), against magnitude pruning and Wanda (Sun et al., 2023).
# Calibration windows come from the `calib` split of the C4 text; perplexity is measured on the held-out
# `test` split of the Wikipedia text (non-overlapping windows, 95% t-interval over windows),
# zero-shot MCQ accuracy with the lm-eval definitions (95% Wilson interval).  Layer-wise
# reconstruction errors are reported on the calibration inputs (in-sample: SparseGPT minimises exactly
# that) and on held-out windows of the calibration text's `dev` split.  A calibration-budget sweep
# (several seeds) compares SparseGPT and Wanda as the calibration set grows.  All logic is in
# `minilib.prune` and `minilib.studies.sparsegpt`; see `docs/sparsegpt.md`.

# %% tags=["parameters"]
profile = "default"              # "test" (seconds, tiny models) | "default" (embedded models, CPU) | "paper" (GPU, hub models)
model = None                     # None: from the profile (test: tiny-llama, default: smollm2-135m, paper: facebook/opt-125m if the hub is reachable)
calib_corpus = "c4"              # calibration text (calib split)
eval_corpus = "wiki"             # perplexity text (held-out test split)
nsamples = None                  # calibration windows (at least as many tokens as the widest layer input)
seqlen = None                    # tokens per calibration window
seed = 0                         # calibration seed of the detailed runs (MCQ, layer errors, composition); one of calib_seeds
calib_seeds = None               # calibration seeds over which SparseGPT and Wanda are compared; 3 or more for a verdict
methods = ["magnitude", "wanda", "sparsegpt"]  # one-shot methods compared (minilib.prune.methods.METHODS, e.g. "ria")
method = "sparsegpt"             # method of the detailed runs (per-layer error, quantization, composition); one of methods
sparsity = 0.5                   # sparsity of the detailed runs and of the budget sweep
nm = "2:4"                       # N:M pattern compared across methods ("" to skip)
wbits = 4                        # joint quantization bits of the detailed run, 16 for none
sweep_sparsities = None          # unstructured sparsities compared across methods
owl_sparsities = None            # target sparsities also pruned with OWL's per-block allocation ([]: none)
owl_methods = ["wanda", "sparsegpt"]  # methods run at OWL's allocation, each compared with its uniform run
owl_m = 5.0                      # OWL's outlier threshold M (a score above M x the block's mean is an outlier)
owl_lambda = 0.08                # OWL's lambda: block sparsities lie in target +- lambda
ffn_keep = 0.9                   # composition: fraction of FFN neurons kept before one-shot pruning
eval_seqlen = None
eval_windows = None              # perplexity windows of the test split (0: all)
mcq_set = None                   # MCQ set of the dense model and the detailed runs (test: sciq, default: arc_easy, paper: sciq)
mcq_n = None                     # MCQ items for the dense model and each method at `sparsity` (0: all)
heldout_windows = None           # held-out windows (dev split of calib_corpus, seqlen tokens) for the held-out layer error; 0: none
budget_corpus = None             # calibration text of the budget sweep (corpora joined by "+", e.g. "c4+wiki")
budget_seqlen = None             # tokens per calibration window in the budget sweep
budget_nsamples = None           # calibration budgets (windows) of the sweep; []: no sweep
budget_seeds = None              # calibration seeds of the sweep
recovery_steps = None            # recovery fine-tuning steps after one-shot pruning (0: none; default profile: none on CPU)
recovery_method = "full"         # "full" or "lora"; the pruned zeros are kept either way
recovery_allocation = "uniform"  # "uniform" or "owl": the recovered model at OWL's per-block sparsities
recovery_chunks = None           # held-out 1 kB chunks of eval_corpus's test split for bits per byte before/after
forward_dtype = "auto"           # block forwards: "auto" (bfloat16 on CUDA, else the model's dtype), "" (model's dtype), "bfloat16", "float16"
device = "auto"                  # "auto": CUDA when present, else CPU
results_path = ""                # "": a fresh run folder runs/<notebook>/...; make reproduce passes results/<notebook>.json
figures_dir = ""                 # "": the run folder; make reproduce passes figures/

# %%
# Check every parameter now (types, ranges, how they relate, a writable results_path) and fill in the profile's values.
from minilib.params import resolve
from minilib.profiles import NOTEBOOKS
resolved = resolve("SparseGPT_one_shot", globals(), *NOTEBOOKS["SparseGPT_one_shot"])   # recorded by write_results
globals().update(resolved)

# %%
import resource
import time
import pandas as pd
from minilib.models import load
from minilib.data import eval_windows as cut_windows, load_mcq
from minilib.prune import get_method
from minilib.studies import sparsegpt as study
from minilib.studies.sparsegpt import run_setting
from minilib.figures import draw, save_all
from minilib.results import write_results, read_results
from minilib.determinism import numerics_record

t_notebook = time.perf_counter()
tokenizer = load(model).tokenizer
pool = study.calibration_pool(tokenizer, calib_corpus, seqlen)       # every non-overlapping calib window
calib_of = {s_: study.budget_windows(pool, nsamples, s_) for s_ in calib_seeds}  # one draw per seed, checked now
calib = calib_of[seed]
test_ids = study.corpus_part(tokenizer, eval_corpus, "test")
heldout = cut_windows(study.corpus_part(tokenizer, calib_corpus, "dev"), seqlen, heldout_windows) if heldout_windows else None
mcq_items = load_mcq(mcq_set, n=mcq_n or None)
common = dict(test_ids=test_ids, calib=calib, eval_seqlen=eval_seqlen, eval_windows=eval_windows or None, device=device,
              forward_dtype=forward_dtype or None)
print(f"calibration {tuple(calib.shape)} from {calib_corpus} per draw, seeds {calib_seeds}; {len(test_ids)} test "
      f"tokens of {eval_corpus}; held-out {tuple(heldout.shape) if heldout is not None else None} from the dev split "
      f"of {calib_corpus}")

# %% [markdown]
# ## The methods across sparsities, over calibration seeds; uniform and OWL allocations
#
# Every run starts from a fresh copy of the model and is scored on the same evaluation windows.
# Each calibrated method (`methods`; `minilib.prune.methods` says which need calibration) runs once per
# calibration seed (`calib_seeds`: a calibration-based method's result depends on the draw); magnitude
# needs no calibration and runs once.  At `owl_sparsities` the `owl_methods` also run at OWL's
# per-block sparsities (Yin et al., 2024: a block with more outliers -- Wanda scores above `owl_m`
# times their mean on the dense model -- is pruned less, within `owl_lambda` of the target; the method
# is then named `<method>+owl`), on the same calibration draws as their uniform runs.  `achieved_sparsity` is what the
# pruning reported (zeros over the weights of every linear layer in the blocks); `ppl_low`/`ppl_high`
# the 95% t-interval over the windows of that one run.  The detailed runs (seed `seed`, at
# `sparsity`, unstructured) also measure every layer's reconstruction error, in-sample and held-out,
# and MCQ accuracy; the others do not (`mean_rel_error` is empty there).

# %%
rows, reports = [], {}
r, _ = run_setting(model, None, mcq_items=mcq_items, **common)
rows.append(r)
settings = [(s, "") for s in sorted(set(sweep_sparsities) | {sparsity})] + ([(0.5, nm)] if nm else [])
for s, pattern in settings:
    for meth in methods:
        for s_calib in (calib_seeds if get_method(meth).calibrated else [None]):
            detailed = s == sparsity and not pattern and s_calib in (seed, None)  # MCQ and per-layer errors only here
            # the other runs skip the layer errors (the X X^T products: ~15% of a SparseGPT prune)
            extra_kw = dict(measure_error=True, heldout=heldout) if detailed else dict(measure_error=False)
            r, rep = run_setting(model, meth, sparsity=s, nm=pattern, mcq_items=mcq_items if detailed else None,
                                 **{**common, "calib": calib_of[s_calib] if s_calib is not None else calib},
                                 **extra_kw)
            rows.append({**r, "seed": s_calib, "nsamples": nsamples})
            if detailed:
                reports[(meth, s, pattern)] = rep
for s in owl_sparsities:  # OWL's per-block allocation, on the same calibration draws as the uniform runs
    for meth in owl_methods:
        for s_calib in calib_seeds:
            r, _ = run_setting(model, meth, sparsity=s, allocation="owl", owl_m=owl_m, owl_lambda=owl_lambda,
                               **{**common, "calib": calib_of[s_calib]}, measure_error=False)
            rows.append({**r, "seed": s_calib, "nsamples": nsamples})
runs = pd.DataFrame(rows)
runs[["method", "seed", "sparsity", "nm", "achieved_sparsity", "perplexity", "ppl_low", "ppl_high", "mean_rel_error", "prune_s"] +
     [c for c in ("mean_heldout_rel_error", "acc", "acc_norm") if c in runs]].round(4)

# %% [markdown]
# Perplexity per method and setting over the calibration seeds (geometric mean, t-interval over
# seeds).  The verdicts (at the end) compare the methods at both levels of replication -- over
# calibration seeds and over evaluation windows -- in one multiple-comparison family.

# %%
summary = study.setting_summary(runs)
summary.round(4)

# %%
dense_ppl = runs.loc[runs.method == "dense", "perplexity"].item()

# %% [markdown]
# ## Reconstruction error per layer (unstructured, `sparsity`): in-sample and held-out
#
# SparseGPT minimises the error on the calibration inputs layer by layer, so its in-sample error
# favours it by construction; the held-out windows flowed through the same pruned blocks but chose
# nothing.  The table gives the mean over layers with a bootstrap interval over layers, and each
# method's error relative to SparseGPT's (geometric mean of per-layer ratios, paired over layers).

# %%
layers = pd.concat([reports[(m_, sparsity, "")].layers.assign(method=m_) for m_ in methods if (m_, sparsity, "") in reports])
layers["type"] = layers["layer"].str.split(".").str[-1]
errors = study.error_summary(layers, methods)
errors.round(4)

# %% [markdown]
# ## Calibration budget: SparseGPT and Wanda as the calibration set grows
#
# Both methods at `sparsity` with `budget_nsamples` windows of `budget_seqlen` tokens from
# `budget_corpus` (non-overlapping windows; for one seed a smaller budget is a subset of a larger one),
# for every seed in `budget_seeds`, scored on the same evaluation windows.  Perplexity is the geometric
# mean over seeds with its t-interval; SparseGPT / Wanda is paired within each seed, and the verdict
# comes from its t-interval over seeds.

# %%
if budget_nsamples:
    pool = study.calibration_pool(tokenizer, budget_corpus, budget_seqlen)
    same_pool = budget_corpus == calib_corpus and budget_seqlen == seqlen
    bpool = pool if same_pool else study.calibration_pool(tokenizer, budget_corpus, budget_seqlen)
    # the comparison's own unstructured runs at `sparsity` are the budget-`nsamples` runs of the same pool
    reuse = [{**r_, "budget": nsamples} for r_ in rows if same_pool and r_["method"] in ("sparsegpt", "wanda")
             and r_["sparsity"] == sparsity and not r_["nm"] and r_["seed"] in budget_seeds]
    budget = pd.DataFrame(study.budget_sweep(model, test_ids, bpool, budget_nsamples, budget_seeds, sparsity=sparsity,
                                             eval_seqlen=eval_seqlen, eval_windows=eval_windows or None, device=device,
                                             reuse=reuse, forward_dtype=forward_dtype or None))
    budget_table = study.budget_summary(budget)
else:
    budget, budget_table = pd.DataFrame(), pd.DataFrame()
budget_table.round(4)

# %% [markdown]
# ## Joint quantization, and composition with structured FFN pruning
#
# The detailed method runs jointly with `wbits`-bit per-channel quantization (inside the solver for
# SparseGPT).  Then the FFNs are first physically shrunk to `ffn_keep` of their neurons (magnitude
# score, `minilib.studies.sparsegpt.shrink_ffns`), and the shrunk model is pruned one-shot and
# quantized: the two compose, and the parameter and nonzero counts multiply down.

# %%
extra = []
r, rep_q = run_setting(model, method, sparsity=sparsity, wbits=wbits, measure_error=False, **common)
extra.append({**r, "setting": f"{method} {sparsity:.0%} + {wbits}-bit"})
r, _ = run_setting(model, None, ffn_keep=ffn_keep, **common)
extra.append({**r, "setting": f"FFN keep {ffn_keep:.0%}"})
r, rep_cq = run_setting(model, method, sparsity=sparsity, wbits=wbits, ffn_keep=ffn_keep, measure_error=False, **common)
extra.append({**r, "setting": f"FFN keep {ffn_keep:.0%} + {method} {sparsity:.0%} + {wbits}-bit"})
extra = pd.DataFrame(extra)
extra[["setting", "params", "nonzeros", "achieved_sparsity", "perplexity", "ppl_low", "ppl_high"]].round(4)


# %% [markdown]
# ## Recovery fine-tuning (when `recovery_steps` > 0)
#
# The detailed method at `sparsity` (calibration seed `seed`; with `recovery_allocation = "owl"` at OWL's
# per-block sparsities, `owl_m` and `owl_lambda`) is fine-tuned `recovery_steps` steps on
# the `train` split of `calib_corpus` (`recovery_method`: full or LoRA, `minilib.train.finetune` with
# every pruned zero kept: it raises if one is lost), and bits per byte are measured on the same
# `recovery_chunks` held-out chunks of `eval_corpus`'s test split before and after (95% bootstrap
# over chunks; the gain is paired).  One calibration draw and one fine-tuning seed.

# %%
if recovery_steps:
    from minilib.data import corpus_splits
    from minilib.eval.bytes import split_text, text_chunks
    sp_ = corpus_splits(tokenizer, calib_corpus)
    chunks_ = text_chunks(split_text(tokenizer, test_ids), 1024, recovery_chunks)
    recovery = pd.DataFrame([study.recover(model, method, calib, sp_["train"], sp_["dev"], chunks_, sparsity=sparsity,
                                           steps=recovery_steps, ft_method=recovery_method, seqlen=eval_seqlen,
                                           device=device, allocation=recovery_allocation, owl_m=owl_m, owl_lambda=owl_lambda,
                                           forward_dtype=forward_dtype or None)])
else:
    recovery = pd.DataFrame()
recovery.round(4)

# %% [markdown]
# ## Verdicts
#
# Every comparison above, decided as one multiple-comparison family (Holm over all of its tests): over
# calibration seeds (t over seeds of the log perplexity ratio) and over evaluation windows (paired t of
# the per-window NLL averaged over seeds); resolved only where both levels agree; below 3 seeds or 10
# windows a comparison is "too few to test".

# %%
block = study.verdict_block(runs, budget if len(budget) else None)
verdicts = pd.DataFrame([{"comparison": f"{e_['setting']}: {e_['a']} / {e_['b']}", "outcome": e_["outcome"],
                          "ratio (seeds)": e_["seeds"].estimate, "low": e_["seeds"].low, "high": e_["seeds"].high,
                          "Holm p (seeds)": e_["seeds"].p_adj, "ratio (windows)": e_["windows"].estimate,
                          "Holm p (windows)": e_["windows"].p_adj} for e_ in block])
verdicts.round(4)


# %%
def ppl(meth, s=sparsity, pattern=""):
    sel = summary[(summary.method == meth) & (summary.sparsity == s) & (summary.nm == pattern)]
    return float(sel.ppl.iloc[0]) if len(sel) else float("nan")

metrics = {"dense_ppl": dense_ppl, **{f"ppl_{m_}_{sparsity:g}": ppl(m_) for m_ in methods},
           **{f"{e_['a']}_vs_{e_['b']}_" + (f"budget_{e_['key']['budget']}" if e_["block"] == "budget" else
              (e_["key"]["nm"] or f"{e_['key']['sparsity']:g}")): e_["outcome"] for e_ in block},
           "notebook_s": time.perf_counter() - t_notebook,  # wall time (a shared machine inflates it)
           "notebook_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}  # CPU time of this kernel, all threads
if nm:
    metrics.update({f"ppl_{m_}_{nm}": ppl(m_, 0.5, nm) for m_ in methods})
if "acc" in runs:
    metrics.update({f"mcq_acc_{r_.method}": r_.acc for r_ in runs.itertuples() if r_.acc == r_.acc})
metrics.update({f"ppl_{s_}": p_ for s_, p_ in zip(extra.setting, extra.perplexity)})
metrics

# %%
write_results(results_path, {
    "notebook": "SparseGPT_one_shot",
    "metrics": metrics,
    "numerics": numerics_record(),  # the kernel pins and threads these numbers were computed with
    "records": [{"kind": "run", **r_} for r_ in runs.to_dict("records")]
               + [{"kind": "composition", **r_} for r_ in extra.to_dict("records")]
               + [{"kind": "layer", **r_} for r_ in layers.drop(columns=["group"], errors="ignore").to_dict("records")]
               + [{"kind": "budget", **r_} for r_ in budget.to_dict("records")]
               + [{"kind": "recovery", **r_} for r_ in recovery.to_dict("records")],
}, parameters=resolved)

# %% [markdown]
# ## Figures
#
# Perplexity against sparsity (95% intervals), the per-layer reconstruction error (in-sample and held-out)
# and the calibration budget, drawn from the results just written, by the same function as `python -m minilib.figures`
# (one home per figure: `minilib.figures`).

# %%
save_all(draw("SparseGPT_one_shot", read_results(results_path)), figures_dir)
