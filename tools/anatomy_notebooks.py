"""Cells of the six anatomy/pruning notebooks (BERT_* and GPT2_* differ only in their parameters).

Run ``python -m tools.nb_<stem>`` to (re)write one notebook."""

from tools.make_notebook import write_notebook

FAMILY = {
    "BERT": dict(model="minilm-l6", hub="bert-base-uncased", what="encoder", token="`[CLS]`",
                 template="{text}", n_train=1000, n_test=600, batch_size=64,
                 ratios="[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]",
                 embedded="the embedded `minilm-l6` (all-MiniLM-L6-v2, a real 6-layer BERT encoder)"),
    "GPT2": dict(model="smollm2-135m", hub="gpt2", what="decoder", token="the last token",
                 template="{text}\\nIs it sarcastic?", n_train=600, n_test=150, batch_size=32,
                 ratios="[0.0, 0.1, 0.3, 0.5, 0.7]",
                 embedded="the embedded `smollm2-135m` (SmolLM2-135M-Instruct, a real 30-layer Llama-family decoder)"),
}

DECISION_MD = """**Decision task.** Sarcasm detection on the news-headlines set (28,614 labelled headlines),
split into disjoint seeded train/test parts.  The decision is read at {token}: a linear head
(logistic regression) is trained **head-only** on the frozen model's final hidden state there, and
cached in `$MINILIB_CACHE/heads` as safetensors so that reruns do not retrain.  Accuracy is reported
with its 95% Wilson interval.

**Models.** The default is {embedded}, which runs offline.  `model = "{hub}"` reproduces the original
setting for users who have the Hugging Face hub."""


def _common_params(f, stem, extra=""):
    return f'''model = "{f['model']}"          # embedded {f['what']}; "{f['hub']}" reproduces the original setting (needs the hub)
dataset = "sarcasm"              # or "sst2" (872 examples) or a .jsonl with text,label
template = "{f['template']}"     # how a text is shown to the model
n_train = {f['n_train']}                   # examples for the head (and the anatomy pass)
n_test = {f['n_test']}                    # held-out examples for accuracy
seed = 0
batch_size = {f['batch_size']}
max_length = 128
device = "cpu"{extra}
results_path = "../results/{stem}.json\"'''


SETUP = """import json, os
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
print(m.adapter.family, f"{sum(p.numel() for p in m.model.parameters())/1e6:.1f}M params;", task.info)"""


def anatomy_notebook(fam: str) -> None:
    f, stem = FAMILY[fam], f"{fam}_anatomy"
    write_notebook(f"notebooks/{stem}.ipynb", [
        ("md", f"""# Anatomy of a {f['what']}: how information reaches {f['token']}

Per layer: the cosine between the decision token's hidden state after each layer and the final
decision vector (the residual stream after the last block), and the same for each layer's attention
output and FFN output (mean and spread over examples).  Per FFN neuron: the contribution vector
`a_j * W_down[:, j]` at the decision token (its activation, gate included, times its column of the
down projection), its cosine with the final decision vector, the projection on it, and activation
statistics.  All of it comes from **one pass with hooks** that are removed afterwards; the arrays
are stored (npz) under a key and reused by `{fam}_pruning_strategy`.

""" + DECISION_MD.format(**f)),
        ("params", _common_params(f, stem, '\nanatomy_dir = ""             # empty: $MINILIB_CACHE/anatomy')),
        ("code", SETUP),
        ("md", "## One hooked pass over the training examples"),
        ("code", """an, an_info = anatomy_for(m, task, batch_size, max_length, directory=anatomy_dir or None)
from minilib.hooks import count_hooks
assert count_hooks(m.model) == 0
print(an_info, {k: v.shape for k, v in an.arrays.items()})"""),
        ("md", "## The decision: head-only classifier, test accuracy"),
        ("code", """head, head_info = trained_head(m, task, batch_size, max_length, features=torch.as_tensor(an["features"]))
acc = decision_accuracy(m.model, m.tokenizer, head, task, "test", batch_size, max_length)
majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
print(head_info); print(acc, "majority class:", round(majority, 3))"""),
        ("md", "## Per layer"),
        ("code", """layers = an.layer_summary()
layers.round(3)"""),
        ("code", """save_figure(plots.plot_layer_curves(an, f"{model}: cosine with the final decision vector"), f"{tag}_anatomy_layers")
save_figure(plots.plot_neuron_heatmap(an, "neuron_cos", f"{model}: neuron contribution cos (sorted)"), f"{tag}_anatomy_heatmap")
save_figure(plots.plot_neuron_distribution(an, "neuron_cos", f"{model}: distribution of neuron cos"), f"{tag}_anatomy_neuron_hist")"""),
        ("md", "## Per neuron: the most decision-aligned neurons"),
        ("code", """L, W = an["neuron_cos"].shape
flat = pd.DataFrame({"layer": np.repeat(np.arange(L), W), "neuron": np.tile(np.arange(W), L),
                     **{k: an[k].ravel() for k in ["neuron_cos", "neuron_abs_cos", "neuron_abs_proj", "act_mean", "act_abs_mean", "act_std", "act_pos_frac"]}})
top = flat.sort_values("neuron_abs_cos", ascending=False).head(10)
top.round(3)"""),
        ("code", """write_results(results_path, {
    "notebook": "{stem}", "parameters": {"model": model, "dataset": dataset, "template": template, "n_train": n_train,
                                         "n_test": n_test, "seed": seed, "max_length": max_length},
    "metrics": {**{k: acc[k] for k in ["acc", "ci95_low", "ci95_high", "n"]}, "majority": majority,
                "head_cached": head_info["cached"], "anatomy_key": an_info["key"],
                "hidden_cos_first_layer": float(layers["hidden_cos_mean"].iloc[0]),
                "neuron_abs_cos_mean": float(an["neuron_abs_cos"].mean()),
                "neuron_abs_cos_max": float(an["neuron_abs_cos"].max())},
    "records": [{"kind": "layer", **r} for r in layers.to_dict("records")],
})""".replace("{stem}", stem)),
    ])


SWEEP_SETUP = """from minilib.data import corpus_splits
from minilib.studies.structured import ratio_sweep, method_masks, baseline_methods
from minilib.prune import score_neurons_norm, mask_neurons, remove_neurons
from minilib.models import save_model, load_model
head, head_info = trained_head(m, task, batch_size, max_length)
ppl_ids = corpus_splits(m.tokenizer, ppl_corpus)["test"] if m.adapter.is_decoder else None
majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
kw = dict(batch_size=batch_size, max_length=max_length, ppl_windows=ppl_windows, ppl_seqlen=ppl_seqlen)
print(head_info)"""

SAVE_CHECK = """import copy, tempfile
from minilib.eval.decision import decision_logits
pruned = copy.deepcopy(m.model)
rep = remove_neurons(pruned, {masks}, method="{method}", target={{"ratio": save_ratio}})
texts = task.texts("test")[:32]
with tempfile.TemporaryDirectory() as d:
    save_model(pruned, m.tokenizer, d, extra={{"pruning": rep.as_dict()}}, head=head, overwrite=True)
    saved_bytes = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    re = load_model(d, device=device)
    diff = np.abs(decision_logits(pruned, m.tokenizer, head, texts) - decision_logits(re.model, re.tokenizer, re.head, texts)).max()
print(f"saved {{saved_bytes/1e6:.1f}} MB (safetensors + plan + tokenizer); reloaded widths {{re.plan['reshaped'] and sorted(set(rep.after['ffn_widths']))}}; max |logit diff| = {{diff:.2e}}")
assert diff < 1e-4
del pruned, re"""


def _sweep_params(f, stem, extra=""):
    return _common_params(f, stem, f'''
ratios = {f['ratios']}   # fraction of FFN neurons removed
ppl_corpus = "wiki"              # perplexity (decoders only), test split
ppl_windows = 2
ppl_seqlen = 256
save_ratio = 0.3                 # ratio of the pruned model that is saved and reloaded''' + extra)


def baseline_notebook(fam: str) -> None:
    f, stem = FAMILY[fam], f"{fam}_pruning_baseline"
    write_notebook(f"notebooks/{stem}.ipynb", [
        ("md", f"""# Structured FFN pruning of a {f['what']}: baselines

FFN neurons are removed **physically** (rows of up/gate with their biases, columns of down; the
intermediate size shrinks), without retraining, by two baselines:

* **random**: indices drawn independently for every layer from one seeded generator (the original
  code reused the same indices in every layer);
* **magnitude**: the L2 norm of the neuron's weights (its up/gate rows and its down column).

For each ratio we measure task accuracy (Wilson 95% CI), perplexity (decoders), parameters,
checkpoint bytes and CPU forward latency.  The head is the cached head-only classifier of
`{fam}_anatomy` (the same key), kept fixed while the model is pruned.

""" + DECISION_MD.format(**f)),
        ("params", _sweep_params(f, stem)),
        ("code", SETUP),
        ("code", SWEEP_SETUP),
        ("code", """methods = baseline_methods(seed)
df = ratio_sweep(m, head, task, methods, ratios, ppl_ids, **kw)
df.round(4)"""),
        ("code", """save_figure(plots.plot_accuracy_vs_pruned(df, f"{model} on {dataset}: baselines", majority), f"{tag}_pruning_baseline_accuracy")
save_figure(plots.plot_cost(df, f"{model}: cost of FFN pruning"), f"{tag}_pruning_baseline_cost")"""),
        ("md", "## Saving a pruned model: safetensors + JSON plan, reloaded with one function"),
        ("code", SAVE_CHECK.format(masks="mask_neurons(score_neurons_norm(pruned), save_ratio)", method="magnitude")),
        ("code", """write_results(results_path, {
    "notebook": "{stem}", "parameters": {"model": model, "dataset": dataset, "template": template, "n_train": n_train,
                                         "n_test": n_test, "seed": seed, "max_length": max_length, "ratios": ratios},
    "metrics": {"dense_acc": float(df.loc[df.ratio == 0, "acc"].iloc[0]), "majority": majority, "reload_max_diff": float(diff),
                "n_test": int(df["n_test"].iloc[0])},
    "records": df.to_dict("records"),
})""".replace("{stem}", stem)),
    ])


def strategy_notebook(fam: str, uniform_ablation: bool) -> None:
    f, stem = FAMILY[fam], f"{fam}_pruning_strategy"
    extra = f'''
preserve_fraction = 0.01         # per layer, the most decision-aligned neurons are never removed
profile_strength = 0.5           # layer budget share ~ profile^(-strength); 0 gives a uniform budget
max_layer_ratio = 0.8            # no layer loses more than this fraction
score_kind = "abs_proj"          # anatomy score: mean |projection of the contribution on the decision vector|
uniform_ablation = {uniform_ablation}         # also run the anatomy score with a uniform budget
anatomy_dir = ""                 # empty: $MINILIB_CACHE/anatomy (written by {fam}_anatomy)
baseline_path = "../results/{fam}_pruning_baseline.json"   # reused when its parameters match'''
    write_notebook(f"notebooks/{stem}.ipynb", [
        ("md", f"""# Anatomy-guided structured FFN pruning of a {f['what']}

The strategy prunes the FFN neurons with the **lowest anatomy score** (mean |projection| of the
neuron's contribution `a_j W_down[:, j]` on the final decision vector at {f['token']}), splits the
budget across layers by the anatomy's **layer profile** (a layer's share is proportional to
`profile ** -strength`, capped at `max_layer_ratio`), and **never removes preserved neurons** (the
top `preserve_fraction` of each layer by mean |cos| with the decision vector; the original code
failed to protect them).  The anatomy arrays of `{fam}_anatomy` are reused when present (same
key) and recomputed otherwise; arrays that do not match the model raise `AnatomyMismatchError`.
Baselines come from `{fam}_pruning_baseline`'s results when their parameters match, else they are
run here.

""" + DECISION_MD.format(**f)),
        ("params", _sweep_params(f, stem, extra)),
        ("code", SETUP),
        ("code", """an, an_info = anatomy_for(m, task, batch_size, max_length, directory=anatomy_dir or None)
an.check(m.model)   # raises AnatomyMismatchError if the arrays belong to another model
print(an_info)"""),
        ("code", SWEEP_SETUP.replace("head, head_info = trained_head(m, task, batch_size, max_length)",
                                     'head, head_info = trained_head(m, task, batch_size, max_length, features=torch.as_tensor(an["features"]))')),
        ("md", "## Layer profile, budgets and preserved neurons"),
        ("code", """from minilib.studies.anatomy import layer_profile, preserved_neurons
from minilib.prune import layer_budgets, score_neurons_anatomy
profile = layer_profile(an)
preserved = preserved_neurons(an, preserve_fraction)
widths = [len(p) for p in preserved]
budget = pd.DataFrame({"layer": range(len(widths)), "profile": profile, "preserved": [int(p.sum()) for p in preserved],
                       **{f"removed@{r}": layer_budgets(widths, r, profile, profile_strength, max_layer_ratio, [int(p.sum()) for p in preserved])
                          for r in ratios if r > 0}})
budget.round(3)"""),
        ("code", """strategy = method_masks(lambda mod: score_neurons_anatomy(mod, an, score_kind), profile, preserved, profile_strength, max_layer_ratio)
top = max(ratios)
prune_masks = strategy(m.model, top)
lost = sum(int((p & k).sum()) for p, k in zip(preserved, prune_masks))
print(f"at ratio {top}: {lost} preserved neurons removed (must be 0)"); assert lost == 0"""),
        ("code", """def load_baselines():
    \"\"\"The baseline rows of {fam}_pruning_baseline when its parameters match ours, else None.\"\"\"
    if not os.path.isfile(baseline_path):
        return None
    b = json.load(open(baseline_path))
    same = all(b["parameters"].get(k) == v for k, v in dict(model=model, dataset=dataset, template=template, n_train=n_train,
                                                            n_test=n_test, seed=seed, max_length=max_length).items())
    if not (same and set(ratios) <= set(b["parameters"]["ratios"])):
        return None
    print("baselines reused from", baseline_path)
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
table.round(3)""".replace("{fam}", fam)),
        ("code", """save_figure(plots.plot_accuracy_vs_pruned(allm, f"{model} on {dataset}: strategy vs baselines", majority), f"{tag}_pruning_strategy_accuracy")
save_figure(plots.plot_cost(allm, f"{model}: cost of FFN pruning"), f"{tag}_pruning_strategy_cost")"""),
        ("md", "## Saving the strategy's pruned model"),
        ("code", SAVE_CHECK.format(masks="strategy(pruned, save_ratio)", method="anatomy")),
        ("code", """best_base = table.drop(columns=[c for c in table.columns if c.startswith("anatomy")]).max(axis=1)
write_results(results_path, {
    "notebook": "{stem}", "parameters": {"model": model, "dataset": dataset, "template": template, "n_train": n_train, "n_test": n_test,
                                         "seed": seed, "max_length": max_length, "ratios": ratios, "preserve_fraction": preserve_fraction,
                                         "profile_strength": profile_strength, "max_layer_ratio": max_layer_ratio, "score_kind": score_kind},
    "metrics": {"dense_acc": float(table.loc[0.0].iloc[0]) if 0.0 in table.index else None, "majority": majority,
                "ratios_strategy_beats_best_baseline": [float(r) for r in table.index if r > 0 and table.loc[r, "anatomy"] > best_base[r]],
                "preserved_removed": lost, "reload_max_diff": float(diff), "anatomy_cached": an_info["cached"]},
    "records": allm.to_dict("records"),
})""".replace("{stem}", stem)),
    ])
