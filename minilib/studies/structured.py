"""Structured FFN-neuron pruning without retraining: baselines and the anatomy-guided strategy.

A *method* maps ``(model, ratio)`` to prune masks (one per block, True = prune); ``method_masks``
builds one from a neuron score and the mask options.  ``ratio_sweep`` prunes a copy of the model per
method and ratio (physically, ``minilib.prune.remove_neurons``) and measures task accuracy (Wilson
95% interval, and the per-example correctness that paired tests need), perplexity (decoders) and,
once per FFN shape (they are the same for every model of that shape), parameters, checkpoint bytes
and forward latency: one tidy row each.  A method named ``"<name>@<seed>"``
(``baseline_methods(seeds=[0, 1, 2])``: ``random@0`` ...) gives rows with ``method=<name>`` and
``seed=<seed>``.

The baselines (``BASELINES``; each ranks the neurons *within* every layer and removes the same
fraction from every layer, the uniform budget):

* ``random``          -- seeded random scores drawn independently for every layer (several seeds);
* ``authors-random``  -- the original study's baseline: one random index set shared by every layer
  (``prune.scores.score_neurons_shared_random``; several seeds);
* ``neuron-norm``     -- the L2 norm of the weights the neuron owns (its up/gate row and down column,
  ``score_neurons_norm``);
* ``neuron-maxprod``  -- ``max|up_i| * max|down_:,i|`` (``* max|gate_i|``), ``score_neurons_maxprod``.

"magnitude" is not one of them: in ``minilib.prune`` it means ``|W|`` per weight (unstructured
one-shot pruning); results written before the rename call ``neuron-norm`` "magnitude" and are read
as ``neuron-norm`` (``canonical_methods``).

    methods = {**baseline_methods(seeds=[0, 1, 2]),
               "anatomy": anatomy_strategy(anatomy, preserve_fraction=0.01, strength=0.5)}

``paired_tests`` compares the strategy with each baseline per protocol and ratio on the same test
examples: against a single-run baseline (``neuron-norm``, ``neuron-maxprod``) by the exact McNemar
test, against the mean of a seeded baseline's seeds by a paired t-test on the per-example
differences, both with a paired-bootstrap 95% interval of the accuracy difference and Holm's
correction over the ratios.  The verdict block (``minilib.tables.structured``) decides every
comparison it prints as one family.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from minilib.eval.decision import decision_accuracy
from minilib.eval.perplexity import perplexity
from minilib.eval.report import checkpoint_bytes, count_parameters, forward_throughput
from minilib.models.surgery import ffn_widths
from minilib.prune.apply import remove_neurons
from minilib.prune.masks import check_ratio, mask_neurons
from minilib.prune.scores import (score_neurons_anatomy, score_neurons_maxprod, score_neurons_norm,
                                  score_neurons_random, score_neurons_shared_random)
from minilib.studies.anatomy import decision_layer_profile, preserved_neurons

# a method: (model, ratio) -> prune masks
MaskFn = Callable[[object, float], list]


def method_masks(scores: Callable, profile=None, preserved=None, strength: float = 1.0,
                 max_layer_ratio: float = 0.9) -> MaskFn:
    """A method from a score function ``scores(model) -> list[tensor]`` and the mask options."""
    def masks(model, ratio):
        return mask_neurons(scores(model), ratio, profile, preserved, strength, max_layer_ratio)
    return masks


# name -> (score function, seeded?).  Every baseline ranks neurons within each layer, uniform budget.
BASELINES: dict[str, tuple[Callable, bool]] = {
    "random": (score_neurons_random, True),
    "authors-random": (score_neurons_shared_random, True),
    "neuron-norm": (score_neurons_norm, False),
    "neuron-maxprod": (score_neurons_maxprod, False),
}
SEEDED = tuple(k for k, (_, seeded) in BASELINES.items() if seeded)
WEIGHT_BASELINES = tuple(k for k, (_, seeded) in BASELINES.items() if not seeded)
DEFAULT_BASELINES = ("random", "neuron-norm", "neuron-maxprod")
# method names of results written before the rename ("magnitude" meant the neuron L2 norm here)
LEGACY_METHODS = {"magnitude": "neuron-norm"}


def baseline_methods(seed: int = 0, seeds: list[int] | None = None,
                     names: tuple[str, ...] | list[str] = DEFAULT_BASELINES) -> dict[str, MaskFn]:
    """The baselines ``names`` (keys of ``BASELINES``; default: ``random``, ``neuron-norm``,
    ``neuron-maxprod``).  A seeded one (``random``, ``authors-random``) is drawn with ``seed``, or with
    ``seeds`` once per seed, named ``"<name>@<seed>"``."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
    if seeds is not None and (len(seeds) == 0 or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")

    def seeded(fn, s):
        return method_masks(lambda mod: fn(mod, s))
    out = {}
    for name in names:
        fn, is_seeded = BASELINES[name]
        if not is_seeded:
            out[name] = method_masks(fn)
        elif seeds is None:
            out[name] = seeded(fn, int(seed))
        else:
            out.update({f"{name}@{int(s)}": seeded(fn, int(s)) for s in seeds})
    return out


def canonical_methods(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the method names of older results renamed (``LEGACY_METHODS``: "magnitude" ->
    "neuron-norm"); the ``method`` and, in paired-test rows, the ``baseline`` column."""
    df = df.copy()
    for col in ("method", "baseline"):
        if col in df:
            df[col] = df[col].replace(LEGACY_METHODS)
    return df


def split_method(name: str) -> tuple[str, int | None]:
    """``"random@2"`` -> ``("random", 2)``; ``"neuron-norm"`` -> ``("neuron-norm", None)``."""
    base, sep, seed = name.partition("@")
    if not sep:
        return name, None
    try:
        return base, int(seed)
    except ValueError:
        raise ValueError(f"method name {name!r}: what follows '@' must be an integer seed") from None


def anatomy_strategy(anatomy, preserve_fraction: float = 0.01, strength: float = 1.0, max_layer_ratio: float = 0.9,
                     score_kind: str = "abs_proj", uniform: bool = False) -> MaskFn:
    """The anatomy-guided strategy: lowest anatomy score first, a per-layer budget from the anatomy's
    layer profile (or uniform), and the most decision-aligned neurons never pruned."""
    if uniform:
        return method_masks(lambda mod: score_neurons_anatomy(mod, anatomy, score_kind))
    return method_masks(lambda mod: score_neurons_anatomy(mod, anatomy, score_kind), decision_layer_profile(anatomy),
                        preserved_neurons(anatomy, preserve_fraction), strength, max_layer_ratio)


def measure(model, tokenizer, head, task, ppl_ids=None, ppl_seqlen: int = 256, ppl_windows: int = 4,
            batch_size: int = 32, max_length: int = 128, latency_seqlen: int = 64, latency_repeats: int = 3,
            shape_cache: dict | None = None) -> dict:
    """Accuracy (Wilson CI) and per-example correctness (``correct``), perplexity (if ``ppl_ids``),
    parameters, checkpoint bytes, latency.  The last three depend only on the model's shape: with
    ``shape_cache`` (a dict) they are measured once per tuple of FFN widths and copied to every
    model of that shape."""
    row = {}
    acc = decision_accuracy(model, tokenizer, head, task, "test", batch_size, max_length, return_correct=True)
    row.update({"acc": acc["acc"], "ci95_low": acc["ci95_low"], "ci95_high": acc["ci95_high"], "n_test": acc["n"],
                "correct": acc["correct"]})
    if ppl_ids is not None:
        row["perplexity"] = perplexity(model, ppl_ids, ppl_seqlen, max_windows=ppl_windows)
    shape = tuple(ffn_widths(model))
    cost = None if shape_cache is None else shape_cache.get(shape)
    if cost is None:
        cost = {"params": count_parameters(model)[0], "checkpoint_bytes": checkpoint_bytes(model),
                "latency_s": forward_throughput(model, latency_seqlen, 1, latency_repeats)["latency_s"]}
        if shape_cache is not None:
            shape_cache[shape] = cost
    row.update(cost)
    return row


def ratio_sweep(loaded, head, task, methods: dict[str, MaskFn], ratios: list[float], ppl_ids=None,
                verbose: bool = True, dense: dict | None = None, shape_cache: dict | None = None,
                **measure_kw) -> pd.DataFrame:
    """Rows ``method, seed, ratio, ffn_ratio (achieved), acc, ci95_*, correct, perplexity, params,
    checkpoint_bytes, latency_s``.  Ratio 0 is the dense model, measured once and shared by every
    method (or taken from ``dense``, a row measured before on the same model and task).  Parameters,
    checkpoint bytes and latency are measured once per FFN shape (``shape_cache``: pass one dict to
    share it between sweeps of models of one architecture)."""
    for r in ratios:
        check_ratio(r)
    names = {name: split_method(name) for name in methods}
    shape_cache = {} if shape_cache is None else shape_cache
    measure_kw = {**measure_kw, "shape_cache": shape_cache}
    rows = []
    if dense is not None:
        dense = {k: v for k, v in dense.items() if k not in ("method", "seed", "ratio", "ffn_ratio", "param_ratio",
                                                             "protocol")}
    for r in sorted(set(float(x) for x in ratios)):
        for name, masks_fn in methods.items():
            base, seed = names[name]
            t = time.perf_counter()
            if r == 0:
                if dense is None:
                    dense = measure(loaded.model, loaded.tokenizer, head, task, ppl_ids, **measure_kw)
                rows.append({"method": base, "seed": seed, "ratio": 0.0, "ffn_ratio": 0.0, "param_ratio": 0.0, **dense})
                continue
            model = copy.deepcopy(loaded.model)
            rep = remove_neurons(model, masks_fn(model, r), method=name, target={"ratio": r})
            row = measure(model, loaded.tokenizer, head, task, ppl_ids, **measure_kw)
            rows.append({"method": base, "seed": seed, "ratio": r, "ffn_ratio": rep.ffn_ratio,
                         "param_ratio": rep.param_ratio, **row})
            del model
            if verbose:
                print(f"[sweep] {name:>16s} ratio {r:.2f}: achieved FFN ratio {rep.ffn_ratio:.3f}, "
                      f"acc {row['acc']:.3f}" + (f", ppl {row['perplexity']:.2f}" if 'perplexity' in row else "")
                      + f" ({time.perf_counter() - t:.0f}s)", flush=True)
    return pd.DataFrame(rows)


def strategy_sweep(loaded, task, protocols: list[str], ratios: list[float], *, ft=None, baselines: pd.DataFrame | None = None,
                   random_seeds: list[int] = (0, 1, 2), baseline_names: tuple[str, ...] | list[str] = DEFAULT_BASELINES,
                   ppl_ids=None, decision_state: str = "head",
                   preserve_fraction: float = 0.01, strength: float = 1.0, max_layer_ratio: float = 0.9,
                   score_kind: str = "abs_proj", uniform_ablation: bool = False, anatomy_dir=None,
                   batch_size: int = 32, max_length: int = 128, verbose: bool = True, **measure_kw) -> dict:
    """The strategy notebooks' work, per protocol: the decision model (``anatomy.decision_model``), its
    anatomy (cached), the per-layer budgets, the anatomy strategy (plus its uniform-budget ablation,
    ``anatomy-uniform``), and the ratio sweep of the strategy beside the baselines -- taken from
    ``baselines`` (rows of the baseline notebook, e.g. ``reuse_baselines``) or measured here
    (``baseline_names`` over ``random_seeds``).

    Returns ``sweep`` (every row, all protocols), ``budgets`` (per protocol: profile, preserved and
    removed neurons per layer and ratio), ``strategies`` (per protocol: ``(model, head, mask function)``)
    and ``preserved_removed`` (per protocol; always 0, checked)."""
    from minilib.prune.masks import layer_budgets
    from minilib.studies.anatomy import anatomy_for, decision_model
    frames, budgets, strategies, lost = [], {}, {}, {}
    shape_cache: dict = {}
    sweep_kw = dict(batch_size=batch_size, max_length=max_length, verbose=verbose, shape_cache=shape_cache, **measure_kw)
    if baselines is not None:
        baselines = canonical_methods(baselines)
    for proto in protocols:
        mp, head, _ = decision_model(loaded, task, proto, batch_size, max_length, ft=ft)
        an, an_info = anatomy_for(mp, task, batch_size, max_length, directory=anatomy_dir or None,
                                  decision_state=decision_state)
        an.check(mp.model, decision_state=decision_state)  # AnatomyMismatchError for other weights or another state
        prof, preserved = decision_layer_profile(an), preserved_neurons(an, preserve_fraction)
        widths, kept = [len(p) for p in preserved], [int(p.sum()) for p in preserved]
        budgets[proto] = pd.DataFrame({"layer": range(len(widths)), "profile": prof, "preserved": kept,
                                       **{f"removed@{r}": layer_budgets(widths, r, prof, strength, max_layer_ratio, kept)
                                          for r in ratios if r > 0}})
        strategy = anatomy_strategy(an, preserve_fraction, strength, max_layer_ratio, score_kind)
        strategies[proto] = (mp, head, strategy)
        if max(ratios) > 0:
            top = strategy(mp.model, max(ratios))
            lost[proto] = sum(int((p & k).sum()) for p, k in zip(preserved, top))
            if lost[proto]:
                raise RuntimeError(f"{proto}: the strategy removed {lost[proto]} preserved neurons at ratio {max(ratios)}")
        else:
            lost[proto] = 0
        methods = {"anatomy": strategy}
        if uniform_ablation:
            methods["anatomy-uniform"] = anatomy_strategy(an, score_kind=score_kind, uniform=True)
        if verbose:
            print(f"{proto}: anatomy {'cached' if an_info['cached'] else 'computed'} ({an_info['key']})", flush=True)
        if baselines is None:
            b = ratio_sweep(mp, head, task, baseline_methods(seeds=list(random_seeds), names=baseline_names), ratios,
                            ppl_ids, **sweep_kw).assign(protocol=proto)
            frames.append(b)
        else:
            b = baselines[baselines.protocol == proto]
        dense = b[b.ratio == 0].iloc[0].to_dict() if (b.ratio == 0).any() else None
        frames.append(ratio_sweep(mp, head, task, methods, ratios, ppl_ids, dense=dense, **sweep_kw).assign(protocol=proto))
    if baselines is not None:
        frames.append(baselines)
    return {"sweep": pd.concat(frames, ignore_index=True), "budgets": budgets, "strategies": strategies,
            "preserved_removed": lost}


# --- paired statistics: strategy against the baselines on the same test examples ----------------

def pack_correct(correct) -> str:
    """Per-example correctness as a compact ``"0110..."`` string (for the results JSON)."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def unpack_correct(s: str) -> np.ndarray:
    if not isinstance(s, str) or set(s) - {"0", "1"}:
        raise ValueError("packed correctness must be a string of '0' and '1'")
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def row_id(protocol: str, method: str, seed, ratio: float) -> str:
    """The key of one row's correctness in the results JSON's ``correct`` map."""
    s = "" if seed is None or (isinstance(seed, float) and np.isnan(seed)) else int(seed)
    return f"{protocol}|{method}|{s}|{float(ratio):.4f}"


def split_correct(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """``(records without the correct column, {row_id: packed correctness})``; rows need a
    ``protocol`` column."""
    packed = {row_id(r.protocol, r.method, r.seed, r.ratio): pack_correct(r.correct)
              for r in df.itertuples() if isinstance(r.correct, (np.ndarray, list))}
    return df.drop(columns=["correct"]), packed


def attach_correct(df: pd.DataFrame, packed: dict[str, str]) -> pd.DataFrame:
    """The inverse of ``split_correct``: a ``correct`` column (bool arrays, None where absent)."""
    df = df.copy()
    df["correct"] = [unpack_correct(packed[k]) if k in packed else None
                     for k in (row_id(r.protocol, r.method, r.seed, r.ratio) for r in df.itertuples())]
    return df


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj


def paired_tests(df: pd.DataFrame, strategy: str = "anatomy", baselines: tuple[str, ...] = tuple(BASELINES),
                 alpha: float = 0.05, n_resamples: int = 10_000) -> pd.DataFrame:
    """Per protocol and ratio > 0: the strategy against each baseline on the same test examples
    (``baselines`` absent from ``df`` are skipped).

    ``df``: ``ratio_sweep`` rows with ``protocol``, ``method``, ``seed``, ``ratio`` and ``correct``.
    Against a single-run baseline (``neuron-norm``, ``neuron-maxprod``): the accuracy difference with its paired-bootstrap 95%
    interval and the exact McNemar p-value.  Against a seeded baseline (random, several seeds): the
    difference to the mean accuracy over seeds, with the paired-bootstrap interval of the per-example
    difference ``correct_strategy - mean_seeds(correct_random)`` and the p-value of a paired t-test on
    it, plus the seeds' spread (``baseline_sd``, ``baseline_min``/``baseline_max``, and the t-interval
    of their mean accuracy).  Holm's correction runs over the ratios of each protocol and comparison
    (``p_holm``); ``verdict`` is ``better``/``worse`` where ``p_holm < alpha`` and the interval excludes
    0 -- and, against a seeded baseline, whose per-example test is conditional on the seeds drawn, only
    where the strategy is above (below) every seed's accuracy -- else ``no difference``."""
    from scipy import stats as st

    from minilib.stats import bootstrap_ci, mcnemar, t_interval
    need = {"protocol", "method", "seed", "ratio", "correct"}
    if need - set(df.columns):
        raise ValueError(f"paired_tests needs columns {sorted(need)}, missing {sorted(need - set(df.columns))}")
    df = canonical_methods(df)
    rows = []
    for (proto, ratio), g in df[df.ratio > 0].groupby(["protocol", "ratio"], sort=True):
        s = g[g.method == strategy]
        if s.empty:
            continue
        cs = np.asarray(s.iloc[0].correct, dtype=float)
        for b in baselines:
            gb = g[(g.method == b) & g.correct.notna()]
            if gb.empty:
                continue
            cb = np.stack([np.asarray(c, dtype=float) for c in gb.correct])       # (runs, n)
            if cb.shape[1] != cs.shape[0]:
                raise ValueError(f"{b} at ratio {ratio} was measured on {cb.shape[1]} examples, the strategy on "
                                 f"{cs.shape[0]}: paired tests need the same test examples")
            mean_b = cb.mean(0)
            ci = bootstrap_ci(cs, np.mean, paired=mean_b, n_resamples=n_resamples)
            if len(cb) == 1:
                test = mcnemar(cs.astype(bool), cb[0].astype(bool))
                p, kind, extra = test.p_value, "McNemar (exact)", {"b": test.b, "c": test.c}
                spread = {"baseline_sd": float("nan"), "baseline_low": float("nan"), "baseline_high": float("nan")}
            else:
                diff = cs - mean_b
                p = 1.0 if np.allclose(diff, diff[0]) and diff[0] == 0 else float(st.ttest_1samp(diff, 0.0).pvalue)
                kind, extra = f"paired t on per-example differences (mean of {len(cb)} seeds)", {}
                accs = cb.mean(1)
                ti = t_interval(accs)
                spread = {"baseline_sd": float(accs.std(ddof=1)), "baseline_low": ti.low, "baseline_high": ti.high,
                          "baseline_min": float(accs.min()), "baseline_max": float(accs.max())}
            rows.append({"protocol": proto, "ratio": float(ratio), "strategy": strategy, "baseline": b,
                         "n": int(cs.shape[0]), "runs": int(len(cb)), "acc_strategy": float(cs.mean()),
                         "acc_baseline": float(mean_b.mean()), "diff": ci.estimate, "diff_low": ci.low,
                         "diff_high": ci.high, "p": float(p), "test": kind, **spread, **extra})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["protocol", "baseline"]).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())

    def verdict(r):
        seeded = r.runs > 1   # the paired test is conditional on the seeds drawn: also ask for all of them
        if r.p_holm < alpha and r.diff_low > 0 and (not seeded or r.acc_strategy > r.baseline_max):
            return "better"
        if r.p_holm < alpha and r.diff_high < 0 and (not seeded or r.acc_strategy < r.baseline_min):
            return "worse"
        return "no difference"
    out["verdict"] = [verdict(r) for r in out.itertuples()]
    return out


def seed_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per protocol, method and ratio: the accuracy (a single run: its Wilson interval;
    several seeds: their mean with the t-interval over seeds, and ``runs``), and the mean perplexity."""
    from minilib.stats import t_interval
    rows = []
    for (proto, method, ratio), g in df.groupby(["protocol", "method", "ratio"], sort=False):
        if len(g) == 1 or ratio == 0:
            r = g.iloc[0]
            lo, hi, runs = r.ci95_low, r.ci95_high, 1
            acc = float(r.acc)
        else:
            ti = t_interval(g["acc"].to_numpy(dtype=float))
            acc, lo, hi, runs = ti.estimate, ti.low, ti.high, len(g)
        row = {"protocol": proto, "method": method, "ratio": float(ratio), "acc": acc, "ci95_low": lo,
               "ci95_high": hi, "runs": runs, "acc_min": float(g["acc"].min()), "acc_max": float(g["acc"].max())}
        for k in ("perplexity", "latency_s", "params", "checkpoint_bytes", "ffn_ratio"):
            if k in g:
                row[k] = float(pd.to_numeric(g[k], errors="coerce").mean())
        rows.append(row)
    return pd.DataFrame(rows)


MATCH_KEYS = ("model", "dataset", "template", "n_train", "n_test", "seed", "max_length", "random_seeds", "ft_method",
              "ft_n_train", "ft_epochs", "ft_batch_size", "ft_lr", "ft_init", "lora_r")


def reuse_baselines(path, params: dict, ratios: list[float], protocols: list[str],
                    methods: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame | None:
    """The baseline rows (with their per-example correctness) of a ``<family>_pruning_baseline``
    results file, when it was run with the same model, data, split, fine-tuning and random seeds and
    covers ``ratios``, ``protocols`` and the baselines ``methods`` (names of ``BASELINES``; older
    files' "magnitude" counts as ``neuron-norm``; only their rows are returned); else None (the caller
    runs the baselines itself)."""
    from minilib.results import read_results
    path = Path(path)
    if not path.is_file():
        return None
    b = read_results(path, path.stem)  # a truncated or corrupt file is an error naming it, not a re-run
    bp = b.get("parameters", {})
    if "correct" not in b or any(bp.get(k) != params.get(k) for k in MATCH_KEYS if k in params):
        return None
    if not (set(ratios) <= set(bp.get("ratios", [])) and set(protocols) <= set(bp.get("protocols", []))):
        return None
    df = pd.DataFrame(b["records"])
    df = df[df.ratio.isin(ratios) & df.protocol.isin(protocols)]
    df["seed"] = [None if v is None or v != v else int(v) for v in df["seed"]]
    df = attach_correct(df, b["correct"])
    df = canonical_methods(df)
    if methods is not None:
        if not set(methods) <= set(df.method):
            return None
        df = df[df.method.isin(methods)]
    return None if df.correct.isna().any() else df.reset_index(drop=True)
