from tools.make_notebook import write_notebook

write_notebook("notebooks/dense_baselines.ipynb", [
    ("md", """# Dense baselines of the embedded models

Perplexity on the held-out test split of each embedded corpus (SparseGPT protocol: non-overlapping
windows, exp of the mean NLL) and zero-shot MCQ accuracy (lm-evaluation-harness `acc`/`acc_norm`).
Every pruning notebook compares against these numbers."""),
    ("params", """model = "smollm2-135m"       # embedded decoder; "gpt2" or "facebook/opt-125m" with the hub
corpora = ["wiki", "c4", "tiny", "code", "technical"]
seqlen = 512
max_windows = 16                # evaluation windows per corpus (test split)
mcq_sets = ["sciq", "arc_easy", "piqa"]
mcq_n = 200                     # items per MCQ set (first n)
device = "cpu"
results_path = "../results/dense_baselines.json\""""),
    ("code", """import pandas as pd
import matplotlib.pyplot as plt
from minilib.models import load
from minilib.data import corpus_splits, load_mcq
from minilib.eval import perplexity, mcq_accuracy, model_report
from minilib.plotting import save_figure
from minilib.results import write_results

m = load(model, device=device)
print(m.adapter.family, sum(p.numel() for p in m.model.parameters()) / 1e6, "M parameters")"""),
    ("code", """ppl = []
for c in corpora:
    sp = corpus_splits(m.tokenizer, c)
    ppl.append({"corpus": c, "test_tokens": len(sp["test"]),
                "perplexity": perplexity(m.model, sp["test"], seqlen, max_windows=max_windows)})
ppl = pd.DataFrame(ppl)
ppl"""),
    ("code", """mcq = pd.DataFrame([{"task": t, **mcq_accuracy(m.model, m.tokenizer, load_mcq(t, n=mcq_n))} for t in mcq_sets])
mcq"""),
    ("code", """rep = model_report(m.model)
{k: v for k, v in rep.items() if k != "layers"}"""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].bar(ppl["corpus"], ppl["perplexity"]); axes[0].set_ylabel("perplexity (test split)"); axes[0].set_yscale("log")
axes[1].bar(mcq["task"], mcq["acc"], label="acc"); axes[1].scatter(mcq["task"], mcq["chance"], color="k", marker="_", s=400, label="chance")
axes[1].set_ylabel("accuracy"); axes[1].legend()
fig.suptitle(f"{model}: dense baselines")
save_figure(fig, f"dense_baselines_{model.replace('/', '_')}")"""),
    ("code", """write_results(results_path, {
    "notebook": "dense_baselines", "parameters": {"model": model, "seqlen": seqlen, "max_windows": max_windows, "mcq_n": mcq_n},
    "metrics": {"params": rep["params"], "checkpoint_bytes": rep["checkpoint_bytes"], "tokens_per_s": rep["tokens_per_s"]},
    "records": [{"kind": "perplexity", **r} for r in ppl.to_dict("records")] + [{"kind": "mcq", **r} for r in mcq.to_dict("records")],
})"""),
])
