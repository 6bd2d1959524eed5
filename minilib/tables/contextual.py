"""Tables of docs/contextual.md and the README from ``results/contextual_pruning.json``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from minilib.stats import format_ci, format_p
from minilib.tables.common import ResultsMissing, load, or_missing
from minilib.studies.contextual import AUTHORS_THRESHOLDS, NOTEBOOK, PROTOCOLS, SCALE_LABELS, SETTINGS


def _load(results_dir: Path) -> dict:
    """The results JSON: ``<results_dir>/contextual_pruning.json``, or ``results_dir`` itself when it is a file."""
    return load(results_dir, NOTEBOOK)


def _records(res: dict, need=("bpb", "d_bpb_low", "d_bpb_high")) -> pd.DataFrame:
    """The records as a frame; results of the notebook before the decomposition (no ``protocol`` /
    ``setting`` / ``key``) are read as ours, every ε > 0 pruning the vocabulary too."""
    df = pd.DataFrame(res.get("records", []))
    if not len(df) or any(c not in df for c in need):
        raise ResultsMissing(f"{NOTEBOOK}.json was written by an older notebook")
    vocab = bool(res.get("parameters", {}).get("prune_embeddings", True))
    if "protocol" not in df:
        df["protocol"] = "ours"
    if "setting" not in df:
        df["setting"] = [("dense" if st in ("dense", "dense-finetuned") else "both" if e and e > 0 and vocab
                          else "vocab" if vocab else "neurons") for st, e in zip(df.stage, df.eps)]
    if "key" not in df:
        df["key"] = ["dense" if st == "dense" else f"{e:g}/{st}" for st, e in zip(df.stage, df.eps)]
    return df


_table = or_missing(NOTEBOOK)  # a table prints the 'no results' sentence when they are absent or old


def _eps(e) -> str:
    return "—" if e is None or (isinstance(e, float) and math.isnan(e)) else f"{e:g}"


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


PROTOCOL_LABELS = {"ours": "ours", "authors": "authors'"}
STAGE_ORDER = {"dense": 0, "dense-finetuned": 1, "pruned": 2, "finetuned": 3}


def _setting(r) -> str:
    """``neurons only ε = 0.05, fine-tuned`` and the like."""
    if r["stage"] == "dense":
        return "dense"
    if r["stage"] == "dense-finetuned":
        return "dense fine-tuned"
    eps = f" ε = {r['eps']:g}" if r["setting"] != "vocab" else ""
    return f"{SETTINGS.get(r['setting'], r['setting'])}{eps}"


def _same(r) -> bool:
    """A record of a model identical to dense (a neuron-only ε that removes nothing): never tested."""
    v = r.get("identical_to")
    return isinstance(v, str) and bool(v)


@_table
def table_results(results_dir: Path) -> str:
    """Every domain x protocol x setting x stage: size, vocabulary, FFN removed, bits per byte on the
    same test text with its interval, Δ vs dense (paired interval), share of test tokens spelt in
    bytes, MCQ accuracy."""
    df = _records(_load(results_dir))
    lines = ["| domain | protocol | setting | stage | size % | vocab | FFN removed % | bits/byte [95% CI] | "
             "Δ vs dense [paired 95% CI] | bytes-spelt test tokens | MCQ acc [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        acc = format_ci(r["acc"], r["acc_low"], r["acc_high"]) if _ok(r.get("acc")) else ""
        d = ("0" if r["stage"] == "dense" else "= dense (removes nothing)" if _same(r)
             else format_ci(r["d_bpb"], r["d_bpb_low"], r["d_bpb_high"], 4))
        lines.append(f"| {r['domain']} | {PROTOCOL_LABELS.get(r['protocol'], r['protocol'])} | {_setting(r)} | "
                     f"{r['stage']} | {_pct(r['size_pct'])} | {int(r['vocab']):,} | {_pct(r['ffn_removed_pct'])} | "
                     f"{format_ci(r['bpb'], r['bpb_low'], r['bpb_high'], 4)} | {d} | {100 * r['fallback_rate']:.1f}% | "
                     f"{acc} |")
    return "\n".join(lines)


@_table
def table_tokens(results_dir: Path) -> str:
    """Token perplexities that are comparable: per base-tokenizer token over the same text, and over
    the positions where the pruned and dense tokenizations agree (paired ratio)."""
    df = _records(_load(results_dir), ("ppl_base", "agree_ratio"))
    lines = ["| domain | protocol | setting | stage | perplexity per base token [95% CI] | where tokenizations agree: "
             "model / dense [paired 95% CI] | share of tokens |", "|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        ag = (f"{r['ppl_agree']:.2f} / {r['dense_ppl_agree']:.2f} = "
              f"{format_ci(r['agree_ratio'], r['agree_ratio_low'], r['agree_ratio_high'])}"
              if _ok(r.get("agree_ratio")) else "")
        share = f"{100 * r['agree_share']:.1f}%" if _ok(r.get("agree_share")) else ""
        lines.append(f"| {r['domain']} | {PROTOCOL_LABELS.get(r['protocol'], r['protocol'])} | {_setting(r)} | "
                     f"{r['stage']} | {format_ci(r['ppl_base'], r['ppl_base_low'], r['ppl_base_high'], 2)} | {ag} | "
                     f"{share} |")
    return "\n".join(lines)


@_table
def table_recovery(results_dir: Path) -> str:
    """Fine-tuning: dev bits per byte before and at the best step against the dense target (the
    dense control runs its whole budget: it starts at the target)."""
    df = _records(_load(results_dir), ("best_dev_bpb",))
    df = df[df.stage.isin(["finetuned", "dense-finetuned"]) & ~df.apply(_same, axis=1)]
    lines = ["| domain | protocol | setting | train tokens spelt in bytes | dev bits/byte: start -> best (step) | "
             "early-stopping target | steps | stopped |", "|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        target = f"{r['target_dev_bpb']:.4f}" if _ok(r.get("target_dev_bpb")) else "none (whole budget)"
        fb = f"{100 * r['train_fallback_rate']:.1f}%" if _ok(r.get("train_fallback_rate")) else ""
        lines.append(f"| {r['domain']} | {PROTOCOL_LABELS.get(r['protocol'], r['protocol'])} | {_setting(r)} | {fb} | "
                     f"{r['dev_bpb_start']:.4f} -> {r['best_dev_bpb']:.4f} ({int(r['best_step'])}) | {target} | "
                     f"{int(r['ft_steps'])} | {r['stopped']} |")
    return "\n".join(lines)


@_table
def table_coverage(results_dir: Path) -> str:
    """The kept vocabulary against calibration text (prefixes of the calib split) and ``min_count``:
    kept tokens, model size, share of the test text's tokens spelt in bytes, and where the
    vocabulary-only model was scored (no fine-tuning) its bits per byte against dense; the authors'
    protocol (token counts from the test text itself) for comparison."""
    res = _load(results_dir)
    cov = pd.DataFrame(res.get("coverage", []))
    if not len(cov) or "test_fallback_rate" not in cov:
        raise ResultsMissing(f"{NOTEBOOK}.json has no vocabulary coverage curve")
    df = _records(res)
    lines = ["| domain | calibration text | min_count | kept vocab | size % | test tokens spelt in bytes | "
             "bits/byte [95% CI] | Δ vs dense [paired 95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for d in dict.fromkeys(cov.domain):
        c = cov[cov.domain == d].sort_values(["min_count", "calib_tokens"])
        for r in c.to_dict("records"):
            scored = bool(r.get("scored")) and _ok(r.get("bpb"))
            what = f"{int(r['calib_tokens']):,} calib tokens" + (" (whole split)" if r.get("whole_split") else "")
            lines.append(f"| {d} | {what} | {int(r['min_count'])} | {int(r['vocab']):,} | {_pct(r['size_pct'])} | "
                         f"{100 * r['test_fallback_rate']:.1f}% | "
                         + (f"{format_ci(r['bpb'], r['bpb_low'], r['bpb_high'], 4)} | "
                            f"{format_ci(r['d_bpb'], r['d_bpb_low'], r['d_bpb_high'], 4)} |" if scored else " |  |"))
        for r in df[(df.domain == d) & (df.setting == "vocab") & (df.stage == "pruned")].to_dict("records"):
            what = ("the test text itself (authors' protocol)" if r["protocol"] == "authors"
                    else "whole calib split (the vocabulary-only setting)")
            lines.append(f"| {d} | {what} | {int(res.get('parameters', {}).get('min_count') or 1)} | "
                         f"{int(r['vocab']):,} | {_pct(r['size_pct'])} | {100 * r['fallback_rate']:.1f}% | "
                         f"{format_ci(r['bpb'], r['bpb_low'], r['bpb_high'], 4)} | "
                         f"{format_ci(r['d_bpb'], r['d_bpb_low'], r['d_bpb_high'], 4)} |")
    return "\n".join(lines)


@_table
def table_layers(results_dir: Path) -> str:
    """Share of FFN neurons removed per group of blocks, for each ε (authors' absolute rule) and for
    the median-normalized rule at the ε that removes as many neurons in total (first domain)."""
    res = _load(results_dir)
    lay = pd.DataFrame(res.get("layers", []))
    if not len(lay) or "fraction" not in lay:
        raise ResultsMissing(f"{NOTEBOOK}.json has no 'layers' table")
    lay = lay[lay.domain == lay.domain.iloc[0]]
    nb = int(lay.block.max()) + 1
    size = max(1, math.ceil(nb / 6))
    groups = [(a, min(nb, a + size) - 1) for a in range(0, nb, size)]
    head = "| rule | ε | total | " + " | ".join(f"blocks {a}-{b}" if b > a else f"block {a}" for a, b in groups) + " |"
    lines = [f"Domain `{lay.domain.iloc[0]}`; % of FFN neurons removed.", "", head, "|" + "---|" * (3 + len(groups))]
    for (rule, eps), g in lay.groupby(["rule", "eps"], sort=False):
        cells = []
        for a, b in groups:
            s = g[(g.block >= a) & (g.block <= b)]
            cells.append(f"{100 * s.removed.sum() / s.width.sum():.1f}")
        label = f"{eps:g}" if rule == lay.rule.iloc[0] else f"matched to {eps:g} (threshold {g.threshold.iloc[0]:.3g})"
        lines.append(f"| {SCALE_LABELS.get(rule, rule)} | {label} | {100 * g.total_fraction.iloc[0]:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _chunk_bpb(res: dict, domain: str, key: str):
    import numpy as np
    ch = res.get("chunks", {}).get(domain, {})
    if key not in ch or "bytes" not in ch:
        return None
    return np.asarray(ch[key], float) / (np.asarray(ch["bytes"], float) * math.log(2))


def verdict_tests(res: dict) -> list[dict]:
    """Every comparison the contextual verdict prints, decided as one family (Holm): per domain and
    protocol, every scored model -- neurons only, vocabulary only and both, before and after
    fine-tuning, the dense model fine-tuned with the same recipe, the vocabulary-only model at every
    scored point of the coverage curve -- against dense, and every fine-tuned setting against the
    dense-finetuned control of its protocol, paired over the same test text chunks (t over chunks of
    the per-chunk bits-per-byte difference); the MCQ change of every fine-tuned model (exact McNemar
    over items, as recorded).  Models identical to dense (an ε that removes nothing) are not tested.

    Entries: ``{"domain", "protocol", "row", "what", "vs", "test"}``; ``what``: the record's stage,
    ``"coverage"`` or ``"mcq"``; ``vs``: ``"dense"`` or ``"dense-finetuned"``."""
    from minilib.stats import Test, decide, paired_difference
    entries = []
    df = _records(res)
    recs = df.to_dict("records")
    cov = [c for c in res.get("coverage", []) if c.get("scored") and c.get("key")]
    how = "paired t"
    for d in dict.fromkeys(r["domain"] for r in recs):
        dense = _chunk_bpb(res, d, "dense")
        if dense is None:
            continue
        rs = [r for r in recs if r["domain"] == d]
        dense_rec = next(r for r in rs if r["stage"] == "dense")
        controls = {r["protocol"]: r for r in rs if r["stage"] == "dense-finetuned"}

        def add(r, what, vs, key, ref, ref_key):
            mine, other = _chunk_bpb(res, d, key), _chunk_bpb(res, d, ref_key)
            if mine is None or other is None or len(mine) != len(other):
                return
            label = f"{d} {r['protocol']}: {_setting(r)} {r['stage'] if what != 'coverage' else ''} vs {vs}"
            entries.append({"domain": d, "protocol": r["protocol"], "row": r, "what": what, "vs": vs,
                            "test": paired_difference(mine, other, unit="text chunks", label=label, what=how)})

        for r in rs:
            if r["stage"] == "dense" or _same(r):
                continue
            add(r, r["stage"], "dense", r["key"], dense_rec, "dense")
            ctl = controls.get(r["protocol"])
            if r["stage"] == "finetuned" and ctl is not None:
                add(r, r["stage"], "dense-finetuned", r["key"], ctl, ctl["key"])
            if r["stage"] in ("finetuned", "dense-finetuned") and _ok(r.get("mcq_p")) and _ok(dense_rec.get("acc")):
                n = int(r["mcq_n"])
                entries.append({"domain": d, "protocol": r["protocol"], "row": r, "what": "mcq", "vs": "dense",
                                "test": Test(label=f"{d} {_setting(r)} MCQ", estimate=r["acc"] - dense_rec["acc"],
                                             low=float("nan"), high=float("nan"), p=float(r["mcq_p"]), n=n,
                                             unit="items", test=f"exact McNemar over {n} {r['mcq']} items")})
        for c in cov:
            if c["domain"] == d:
                row = {**c, "protocol": "ours", "setting": "vocab", "stage": "pruned", "eps": 0.0}
                add(row, "coverage", "dense", c["key"], dense_rec, "dense")
    for e, t in zip(entries, decide([e["test"] for e in entries])):
        e["test"] = t
    return entries


def _protocol_gaps(res: dict) -> list[str]:
    """What the run does not decompose or control, read from its records and parameters."""
    p = res.get("parameters", {})
    df = _records(res)
    dense_vocab = int(df[df.stage == "dense"].vocab.max())
    pruned = df[df.stage.isin(["pruned", "finetuned"])]
    neuron_only = pruned[(pruned.vocab == dense_vocab) & (pruned.ffn_removed_pct > 0)]
    gaps = []
    if neuron_only.empty:
        gaps.append("no setting prunes neurons alone (every setting that removes neurons also prunes the vocabulary, "
                    "or none removes any), so the neurons' effect is not separated from the vocabulary's")
    if not (df.stage == "dense-finetuned").any():
        gaps.append("no dense model is fine-tuned with the same recipe, so recovery is not separated from "
                    "fine-tuning on the domain")
    eps = set(float(e) for e in df.eps.dropna())
    small = [e for e in AUTHORS_THRESHOLDS if e < max(AUTHORS_THRESHOLDS)]
    if not any(any(math.isclose(e, s) for e in eps) for s in small):
        gaps.append(f"the authors' small thresholds (ε = {', '.join(f'{e:g}' for e in small)}) are not run")
    cov = res.get("coverage") or []
    if p.get("prune_embeddings", True) and (df.setting != "neurons").any():
        if not cov:
            gaps.append("the kept vocabulary comes from one calibration size (the calib split, min_count = "
                        f"{p.get('min_count')}); its coverage against calibration size is not measured, so the "
                        "byte-fallback cost holds at that size only")
        else:
            top = max(int(c["calib_tokens"]) for c in cov)
            gaps.append(f"calibration text beyond the calib split ({top:,} tokens) is not measured"
                        + ("" if any(c.get("scored") for c in cov) else
                           "; the coverage curve is counted only (no model scored along it)"))
    if not (df.protocol == "authors").any():
        gaps.append("the authors' protocol (the same text for calibration, fine-tuning and test) is not run")
    else:
        doms = list(dict.fromkeys(df[df.protocol == "authors"].domain))
        rest = [d for d in dict.fromkeys(df.domain) if d not in doms]
        if rest:
            gaps.append(f"the authors' protocol runs on {', '.join(doms)} only (not on {', '.join(rest)})")
    model = str(p.get("model") or "")
    if model and "phi" not in model.lower():
        gaps.append(f"the paper's models (Phi-1.5, OPT-1.3B, Sheared-LLaMA-1.3B) are not run: {model}")
    return gaps


def _word(t) -> str:
    return {"a higher": "**worse**", "a lower": "**better**", "not resolved": "not resolved",
            "too few to test": "too few to test"}.get(t.outcome, t.outcome)


def _claim(entries, protocol: str) -> str:
    """The smallest fine-tuned model of ``protocol`` that is not resolved worse than dense, in words."""
    from minilib.stats import describe
    ok = [e for e in entries if e["protocol"] == protocol and e["what"] == "finetuned" and e["vs"] == "dense"
          and e["test"].outcome in ("a lower", "not resolved")]
    tested = [e for e in entries if e["protocol"] == protocol and e["what"] == "finetuned" and e["vs"] == "dense"]
    if not tested:
        return "not run"
    if not ok:
        return f"every one of the {len(tested)} fine-tuned settings is worse than dense"
    e = min(ok, key=lambda e: e["row"]["size_pct"])
    r = e["row"]
    status = ("**better than dense**" if e["test"].outcome == "a lower" else
              "not resolved from dense (which is not evidence of equal quality)")
    return (f"the smallest fine-tuned model not resolved worse than dense is {r['domain']} {_setting(r)}, "
            f"{100 - r['size_pct']:.1f}% smaller: Δ bits/byte {describe(e['test'])}, {status}")


@_table
def table_verdict(results_dir: Path) -> str:
    """The conclusions the evidence supports: one family over every test printed (per domain and
    protocol: neurons only, vocabulary only and both, before and after fine-tuning, against dense and
    against the dense model fine-tuned with the same recipe; the coverage curve; MCQ), what the run
    does not decompose, and which protocol supports what of the paper's claim."""
    from minilib.stats import describe
    res = _load(results_dir)
    entries = verdict_tests(res)
    p = res.get("parameters", {})
    df = _records(res)
    fam = entries[0]["test"].family if entries else 0
    doms = list(dict.fromkeys(df.domain))
    out = [f"Domains: {', '.join(doms)} (nothing is concluded about other domains). Protocols (each record says "
           "which): "
           f"**ours**, {PROTOCOLS['ours']}; **the authors'**, {PROTOCOLS['authors'].split(': ', 1)[1]}"
           + (f" (run on {', '.join(dict.fromkeys(df[df.protocol == 'authors'].domain))})"
              if (df.protocol == "authors").any() else " (not run)")
           + f". One multiple-comparison family: the {fam} tests below (Holm); the unit is the test text chunk "
           f"({p.get('test_chunks')} chunks of {p.get('chunk_bytes')} bytes per domain) for bits per byte and the "
           "item for MCQ (paired t: over chunks of the per-chunk bits-per-byte difference)."
           + (f" Recovery: at most {p['ft_steps']} steps of {p.get('ft_batch')} x {p.get('ft_seqlen')} tokens for "
              "every model, the dense control included." if p.get("ft_steps") else "")]

    def find(d, proto, key, vs="dense"):
        return next((e for e in entries if e["domain"] == d and e["protocol"] == proto and e["row"].get("key") == key
                     and e["vs"] == vs and e["what"] != "mcq"), None)

    def stage_text(d, proto, r):
        """``before fine-tuning Δ ...; after: Δ ... vs dense, Δ ... vs the dense-finetuned control``."""
        parts = []
        pre = find(d, proto, r["key"])
        if pre:
            parts.append(f"before fine-tuning Δ {describe(pre['test'])} ({_word(pre['test'])})")
        ft_key = r["key"].replace("/pruned", "/finetuned")
        post, ctl = find(d, proto, ft_key), find(d, proto, ft_key, "dense-finetuned")
        if post:
            parts.append(f"after fine-tuning Δ {describe(post['test'])} vs dense ({_word(post['test'])})")
        if ctl:
            parts.append(f"Δ {describe(ctl['test'])} vs the dense model fine-tuned the same way "
                         f"({_word(ctl['test'])})")
        return "; ".join(parts)

    for d in doms:
        for proto in ("ours", "authors"):
            rs = df[(df.domain == d) & (df.protocol == proto)].to_dict("records")
            if not rs:
                continue
            out.append(f"* **{d}, {'our protocol' if proto == 'ours' else 'the authors protocol'}**:".replace(
                "authors protocol", "authors' protocol"))
            ctl = next((r for r in rs if r["stage"] == "dense-finetuned"), None)
            if ctl is not None:
                e = find(d, proto, ctl["key"])
                if e:
                    out.append(f"  Dense fine-tuned with the same recipe ({int(ctl['ft_steps'])} steps, best at "
                               f"{int(ctl['best_step'])}): Δ bits/byte {describe(e['test'])} vs dense "
                               f"({_word(e['test'])}).")
            for kind in ("neurons", "vocab", "both"):
                pr = [r for r in rs if r["setting"] == kind and r["stage"] == "pruned"]
                if not pr:
                    continue
                same = [r for r in pr if _same(r)]
                line = f"  {SETTINGS[kind][0].upper() + SETTINGS[kind][1:]}"
                line += " (vocabulary untouched): " if kind == "neurons" else ": "
                bits = []
                if same:
                    eps_same = ", ".join(f"{r['eps']:g}" for r in same)
                    bits.append(f"ε = {eps_same} remove{'s' if len(same) == 1 else ''} no FFN neuron: the dense "
                                "model, nothing to test")
                for r in [r for r in pr if not _same(r)]:
                    what = (f"ε = {r['eps']:g}: " if kind != "vocab" else "") + (
                        f"{r['ffn_removed_pct']:.1f}% of the FFN neurons, " if kind != "vocab" else "") + (
                        f"{int(r['vocab']):,} tokens kept ({100 * r['fallback_rate']:.1f}% of the test tokens spelt "
                        "in bytes), " if kind != "neurons" else "") + f"{r['size_pct']:.1f}% of the parameters: "
                    bits.append(what + stage_text(d, proto, r))
                out.append(line + "; ".join(bits) + ".")
            for e in [e for e in entries if e["domain"] == d and e["protocol"] == proto and e["what"] == "mcq"]:
                r, t = e["row"], e["test"]
                out.append(f"  MCQ ({r['mcq']}, n = {t.n}) after fine-tuning, {_setting(r)}: acc {r['acc']:.3f} "
                           f"against dense {r['acc'] - t.estimate:.3f}, {t.test}, Holm p {format_p(t.p_adj)}: "
                           + ("resolved." if t.resolved else "not resolved."))
            if proto == "ours":
                out.extend(_coverage_lines(res, d, entries))
    out.append("* The paper reports up to 41.88% smaller models at maintained perplexity (Phi-1.5, its own protocol). "
               f"On the authors' protocol here, {_claim(entries, 'authors')}; on ours, {_claim(entries, 'ours')}. "
               "Only the held-out protocol measures a model on text it was not calibrated, pruned or fine-tuned on.")
    out.append("* Not decomposed, so not concluded: " + "; ".join(_protocol_gaps(res) or ["nothing listed"]) + ".")
    return "\n".join(out)


def _coverage_lines(res: dict, d: str, entries) -> list[str]:
    """The coverage curve of domain ``d`` in words: kept vocabulary and byte-spelt test tokens at the
    smallest and largest calibration text (``min_count`` = 1), the scored points."""
    from minilib.stats import describe
    cov = [c for c in res.get("coverage", []) if c["domain"] == d]
    low = min((c["min_count"] for c in cov), default=1)
    one = sorted((c for c in cov if c["min_count"] == low), key=lambda c: c["calib_tokens"])
    if len(one) < 2:
        return []
    a, b = one[0], one[-1]
    line = (f"  Vocabulary coverage (min_count = {a['min_count']}): from {a['calib_tokens']:,} to "
            f"{b['calib_tokens']:,} calib tokens the kept vocabulary grows from {a['vocab']:,} to {b['vocab']:,} "
            f"tokens ({a['size_pct']:.1f}% "
            f"-> {b['size_pct']:.1f}% of the parameters) and the test tokens spelt in bytes fall from "
            f"{100 * a['test_fallback_rate']:.1f}% to {100 * b['test_fallback_rate']:.1f}%")
    scored = [e for e in entries if e["domain"] == d and e["what"] == "coverage"]
    if scored:
        line += "; vocabulary only, no fine-tuning: " + "; ".join(
            f"from {e['row']['calib_tokens']:,} tokens Δ bits/byte {describe(e['test'])} ({_word(e['test'])})"
            for e in sorted(scored, key=lambda e: e["row"]["calib_tokens"]))
    return [line + "."]


TABLES = {"contextual_results": table_results, "contextual_tokens": table_tokens,
          "contextual_recovery": table_recovery, "contextual_coverage": table_coverage,
          "contextual_layers": table_layers, "contextual_verdict": table_verdict}
