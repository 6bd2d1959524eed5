"""Tables of docs/anatomy.md and the README from ``results/<family>_anatomy.json``: dense accuracy
per protocol, and how much the choice of the decision vector matters."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from minilib.tables.common import maybe_load as _read_results, missing as _missing  # noqa: E402


def dense_table(results_dir: Path) -> str:
    """Dense test accuracy of the decision under each protocol (Wilson 95% intervals), with the
    fine-tuning that produced it."""
    from minilib.stats import format_ci
    lines = ["| model | protocol | test accuracy [95% CI] | n | majority class | decision head |",
             "|---|---|---|---|---|---|"]
    missing = []
    for fam in ("BERT", "GPT2"):
        res = _read_results(results_dir, f"{fam}_anatomy")
        if not res or "protocols" not in res.get("metrics", {}):
            missing.append(_missing(f"{fam}_anatomy"))
            continue
        model = res["parameters"]["model"]
        for proto, m in res["metrics"]["protocols"].items():
            ft = m.get("ft") or {}
            if proto == "head-only":
                how = f"logistic regression on the frozen model, {res['parameters']['n_train']} examples"
            else:
                how = (f"{ft.get('method')} fine-tuning, {ft.get('n_train')} examples x {ft.get('epochs')} epoch(s), "
                       f"head start: {ft.get('init')}")
            lines.append(f"| `{model}` | {proto} | {format_ci(m['acc'], m['ci95_low'], m['ci95_high'])} | {m['n']} | "
                         f"{m['majority']:.3f} | {how} |")
    return "\n".join((lines + [""] if len(lines) > 2 else []) + missing).strip()


def decision_vector_table(results_dir: Path) -> str:
    """How much the choice of the final decision vector matters: the cosine between the vector the
    head reads and the residual stream before the final norm (mean over the anatomy examples with its
    95% t-interval), and where the per-layer curves of the two disagree."""
    from minilib.stats import format_ci
    lines = ["| model | protocol | cos(head vector, residual vector) [95% CI] | layers whose block-output cosine "
             "changes sign | largest difference: layer, head / residual |", "|---|---|---|---|---|"]
    missing = []
    for fam in ("BERT", "GPT2"):
        res = _read_results(results_dir, f"{fam}_anatomy")
        if not res or "head_residual_cos" not in res.get("metrics", {}):
            missing.append(_missing(f"{fam}_anatomy"))
            continue
        import pandas as pd
        model = res["parameters"]["model"]
        rec = pd.DataFrame([r for r in res["records"] if r.get("kind") == "layer"])
        for proto, c in res["metrics"]["head_residual_cos"].items():
            g = rec[rec.protocol == proto]
            hd = g[g.decision_state == "head"].set_index("layer")["hidden_cos_mean"]
            rs = g[g.decision_state == "residual"].set_index("layer")["hidden_cos_mean"]
            flips = [int(l) for l in hd.index if np.sign(hd[l]) != np.sign(rs[l]) and max(abs(hd[l]), abs(rs[l])) > 0.05]
            diff = (hd - rs).abs()
            l = int(diff.idxmax())
            lines.append(f"| `{model}` | {proto} | {format_ci(c['mean'], c['low'], c['high'])} | "
                         f"{', '.join(map(str, flips)) if flips else 'none'} | {l}: {hd[l]:.2f} / {rs[l]:.2f} |")
    return "\n".join((lines + [""] if len(lines) > 2 else []) + missing).strip()


TABLES = {
    "anatomy_dense": lambda d: dense_table(Path(d)),
    "anatomy_decision_vectors": lambda d: decision_vector_table(Path(d)),
}
