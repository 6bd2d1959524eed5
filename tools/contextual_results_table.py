"""Print the docs/contextual.md RESULTS tables (markdown) from results/contextual_pruning.json."""
import sys
import json, pandas as pd
r = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "results/contextual_pruning.json"))
df = pd.DataFrame(r["records"])


def md(frame):  # a markdown table without the optional `tabulate` dependency
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in frame.values.tolist()]
    return "\n".join(lines)



print("seconds", r["metrics"]["seconds"])
print(r["parameters"])
cols = ["domain", "mcq", "eps", "stage", "size_pct", "vocab", "ffn_neurons_removed", "fallback_rate", "ppl", "acc", "acc_norm", "ft_steps", "best_step", "stopped"]
df = df[[c for c in cols if c in df.columns]]
df["eps"] = df["eps"].map(lambda e: "—" if pd.isna(e) else f"{e:g}")
for c in ["size_pct", "ppl"]: df[c] = df[c].map(lambda v: f"{v:.2f}")
for c in ["acc", "acc_norm", "fallback_rate"]: df[c] = df[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
print(md(df))
print(md(pd.DataFrame(r["best"])))
c = pd.DataFrame(r["curves"]); print(c[c.dev_ppl.notna()].to_string())
for d, s in r["stats_summary"].items(): print(d); print(md(pd.DataFrame(s)))
