"""Print the markdown results tables of docs/anatomy.md from results/<stem>.json.

    python -m tools.anatomy_table
"""

import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def _load(stem):
    f = ROOT / "results" / f"{stem}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def main() -> None:
    for fam in ("BERT", "GPT2"):
        an = _load(f"{fam}_anatomy")
        if an:
            m, p = an["metrics"], an["parameters"]
            print(f"**{fam} ({p['model']}, {p['dataset']})**: dense head-only accuracy {m['acc']:.3f} "
                  f"[{m['ci95_low']:.3f}, {m['ci95_high']:.3f}] on n={m['n']} (majority {m['majority']:.3f})\n")
        st = _load(f"{fam}_pruning_strategy")
        if not st:
            continue
        df = pd.DataFrame(st["records"])
        acc = df.pivot_table(index="ratio", columns="method", values="acc")
        lo = df.pivot_table(index="ratio", columns="method", values="ci95_low")
        hi = df.pivot_table(index="ratio", columns="method", values="ci95_high")
        cols = [c for c in ["anatomy", "anatomy-uniform", "random", "magnitude"] if c in acc.columns]
        extra = "perplexity" if "perplexity" in df and df["perplexity"].notna().any() else None
        head = "| % FFN removed | " + " | ".join(cols) + (" | ppl anatomy / random / magnitude" if extra else "") + " | params (M) | checkpoint (MB) |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for r in acc.index:
            cells = [f"{acc.loc[r, c]:.3f} [{lo.loc[r, c]:.2f}, {hi.loc[r, c]:.2f}]" for c in cols]
            row = f"| {100 * r:.0f} | " + " | ".join(cells)
            if extra:
                pp = df[df.ratio == r].set_index("method")["perplexity"]
                row += " | " + " / ".join(f"{pp.get(c, float('nan')):.1f}" for c in ["anatomy", "random", "magnitude"])
            sub = df[(df.ratio == r) & (df.method == "anatomy")]
            row += f" | {sub['params'].iloc[0] / 1e6:.1f} | {sub['checkpoint_bytes'].iloc[0] / 1e6:.1f} |"
            print(row)
        print(f"\nstrategy beats the best baseline at ratios: {st['metrics']['ratios_strategy_beats_best_baseline']}\n")


if __name__ == "__main__":
    main()
