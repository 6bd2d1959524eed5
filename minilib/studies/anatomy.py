"""Anatomy of the decision: how information reaches the decision token, per layer and FFN neuron.

One hooked pass (``minilib.calib.feeding``) over labelled texts; at the decision token
(``adapter.decision_positions``: ``[CLS]`` for encoders, the last token for decoders):

* ``d``: the *final decision vector*.  By default (``decision_state="head"``) the vector the
  decision head reads -- for decoders the state **after** the final norm; per-layer states are
  compared through the final norm (logit lens) and contributions through its frozen-scale linear
  part.  ``decision_state="residual"`` uses the residual stream after the last block, before the
  final norm.  Encoders without a final norm give the same arrays for both;
* per layer ``l``: cosine of ``d`` with the block output, the attention output (``o`` projection)
  and the FFN output (``ffn.down``);
* per FFN neuron ``j`` of layer ``l`` (``minilib.calib.DecisionNeuronStats``): its activation ``a_j``
  (the input of ``down``, gate included) and its contribution ``c_j = a_j * W_down[:, j]``; we keep
  ``cos(c_j, d)``, the projection ``<c_j, d>/|d|`` and activation statistics, averaged over examples.

The result is an ``Anatomy`` (arrays + metadata, the decision state included), stored as ``.npz``
(no pickle) under a key that names the decision state, and checked against the model (and state) it
is used with.  ``decision_layer_profile`` and ``preserved_neurons`` read what the anatomy says about layers
and neurons for the anatomy-guided pruning strategy (``minilib.studies.structured``).

The decision itself is taken under one of two **protocols** (``decision_model``): ``"head-only"`` --
the frozen model with a logistic classifier (``minilib.train.heads``) -- or ``"finetuned"`` --
the model fine-tuned on the task (full, or a LoRA adapter; ``minilib.train.classify``, cached), whose
own linear head is the decision head, as in the original study.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from minilib import assets
from minilib.calib import DecisionNeuronStats, LastBatch, feeding, key, resolve
from minilib.device import model_device
from minilib.eval.decision import length_sorted_batches
from minilib.io import atomic_file
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi
from minilib.prune.masks import layer_profile as _profile
from minilib.prune.masks import preserve_top

LAYER_ARRAYS = ("layer_hidden_cos", "layer_attn_cos", "layer_ffn_cos")          # [n, L]
NEURON_ARRAYS = ("neuron_cos", "neuron_abs_cos", "neuron_proj", "neuron_abs_proj",
                 "act_mean", "act_abs_mean", "act_std", "act_pos_frac")          # [L, W]


class AnatomyMismatchError(ValueError):
    """Anatomy arrays that do not match the model they are used with."""


def model_signature(model) -> dict:
    """What anatomy arrays must agree with: family, blocks, hidden size, FFN widths, weights hash."""
    adapter = adapter_for(model)
    ffns = adapter.ffns(model)
    h = hashlib.sha1()
    for f in ffns:
        w = weight_oi(f.down)
        h.update(f"{tuple(w.shape)}:{float(w.double().sum()):.6e}:{float(w.double().abs().sum()):.6e};".encode())
    return {"family": adapter.family, "n_layers": len(ffns), "hidden": int(model.config.hidden_size),
            "widths": [f.width for f in ffns], "ffn_hash": h.hexdigest()[:16]}


@dataclass
class Anatomy:
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, k: str) -> np.ndarray:
        return self.arrays[k]

    @property
    def n_layers(self) -> int:
        return self.arrays["neuron_cos"].shape[0]

    @property
    def decision_state(self) -> str:
        """``"head"`` (the vector the head reads) or ``"residual"`` (before the final norm; arrays
        stored before the option existed were of this kind)."""
        return self.meta.get("decision_state", "residual")

    def check(self, model, strict_weights: bool = True, decision_state: str | None = None) -> None:
        """Raise ``AnatomyMismatchError`` unless these arrays were computed on ``model``'s architecture
        (and, with ``strict_weights``, on its FFN weights) and, when ``decision_state`` is given, for
        that decision state."""
        if decision_state is not None and decision_state != self.decision_state:
            raise AnatomyMismatchError(f"anatomy arrays (model {self.meta.get('model')!r}) were computed for the "
                                       f"decision state {self.decision_state!r}, not {decision_state!r}; recompute "
                                       f"them with collect_anatomy(..., decision_state={decision_state!r})")
        got, want = model_signature(model), self.meta.get("signature", {})
        keys = ["family", "n_layers", "hidden", "widths"] + (["ffn_hash"] if strict_weights else [])
        bad = [k for k in keys if got.get(k) != want.get(k)]
        if bad:
            detail = "; ".join(f"{k}: arrays {want.get(k)!r} vs model {got.get(k)!r}" for k in bad[:3])
            raise AnatomyMismatchError(f"anatomy arrays (model {self.meta.get('model')!r}) do not match the model "
                                       f"being used: {detail}. Recompute them with collect_anatomy on this model.")

    def layer_summary(self):
        """Per layer: mean and std over examples of the three layer cosines, and neuron-level means."""
        import pandas as pd
        rows = []
        for l in range(self.n_layers):
            r = {"layer": l}
            for k in LAYER_ARRAYS:
                v = self.arrays[k][:, l]
                r[k.replace("layer_", "") + "_mean"] = float(v.mean())
                r[k.replace("layer_", "") + "_std"] = float(v.std())
            for k in ("neuron_cos", "neuron_abs_proj", "act_abs_mean"):
                r[k + "_mean"] = float(self.arrays[k][l].mean())
            rows.append(r)
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(self.meta)), **self.arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Anatomy":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(arrays, meta)


DECISION_STATES = ("head", "residual")


def check_decision_state(decision_state: str) -> str:
    if decision_state not in DECISION_STATES:
        raise ValueError(f"decision_state must be one of {DECISION_STATES}, got {decision_state!r}")
    return decision_state


@torch.no_grad()
def collect_anatomies(model, tokenizer, texts: list[str], labels=None, batch_size: int = 16, max_length: int = 128,
                      meta: dict | None = None, states: tuple[str, ...] = DECISION_STATES) -> dict[str, Anatomy]:
    """One hooked pass over ``texts`` (already templated): the anatomy for each decision state in
    ``states`` (``{state: Anatomy}``).

    * ``"head"``: ``d`` is the vector the decision head reads, the output of ``adapter.base(model)`` at
      the decision token (for decoders: after the final norm).  Per-layer states go through the final
      norm before the cosine (logit-lens style, ``norm(h_l)``); attention/FFN outputs and neuron
      contributions ``c`` reach the head as ``gain(c) * scale`` with the norm's scale frozen at the
      final residual (``adapter.final_norm_parts``), as in direct logit attribution.
    * ``"residual"``: ``d`` is the residual stream after the last block (before the final norm), and
      everything is compared in the residual stream.

    Encoders without a final norm give the same arrays for both.  Also returns the decision features
    (what the head reads) for head training as ``arrays["features"]`` and, per example, the cosine of
    the two decision vectors (``arrays["head_residual_cos"]``)."""
    states = tuple(check_decision_state(s) for s in states)
    adapter = adapter_for(model)
    base = adapter.base(model)
    ffns = adapter.ffns(model)
    L = len(ffns)
    if len({f.width for f in ffns}) != 1:
        raise ValueError("collect_anatomy needs equal FFN widths in every block (run it on the dense model)")
    device = model_device(model)
    down = adapter.ffn_paths["down"]
    o = adapter.attn_paths["o"]
    H = int(model.config.hidden_size)
    norm = adapter.final_norm(model)
    gain = adapter.final_norm_parts(model, torch.zeros(1, H, device=device))
    gain = None if gain is None else gain[0]
    taps = {}
    for i in range(L):
        taps[key(i)] = LastBatch("output")
        taps[key(i, o)] = LastBatch("output")
        taps[key(i, down)] = [LastBatch("output"), LastBatch("input")]
    stats, layer = {}, {}
    for s in states:
        def w_of(f, s=s):
            w = weight_oi(f.down).float()                                       # (H, W): [out, in]
            return gain(w.t()).t() if (s == "head" and gain is not None) else w
        stats[s] = [DecisionNeuronStats(w_of(f)) for f in ffns]
        layer[s] = {k: torch.empty(len(texts), L) for k in LAYER_ARRAYS}
    feats = torch.empty(len(texts), H)
    hr_cos = torch.empty(len(texts))
    state: dict = {}

    def take(x):  # (B, T, ...) -> (B, ...) at the decision token, fp32
        x = adapter.tokens_3d(x, *state["bt"])
        return x[torch.arange(x.shape[0], device=x.device), state["pos"]].float()

    modules = {k: resolve(model, k, adapter) for k in taps}
    model.eval()
    with feeding(modules, taps, select=take):
        for idx, enc in length_sorted_batches(tokenizer, texts, batch_size, max_length):
            enc = enc.to(device)
            state["bt"] = tuple(enc["attention_mask"].shape)
            state["pos"] = adapter.decision_positions(enc["attention_mask"])
            h = take(base(**enc).last_hidden_state)                            # (B, H) what the head reads
            idx_t = torch.as_tensor(idx)
            feats[idx_t] = h.cpu()
            resid = taps[key(L - 1)].value                                      # (B, H) residual after the last block
            hr_cos[idx_t] = F.cosine_similarity(h, resid, dim=-1).cpu()
            through = gain is not None
            scale = adapter.final_norm_parts(model, resid)[1] if through else None
            for s in states:
                head_mode = s == "head"
                d = h if head_mode else resid
                lin = gain if (head_mode and through) else (lambda c: c)
                for i in range(L):
                    ffn_out, act = taps[key(i, down)]
                    hid = taps[key(i)].value
                    if head_mode and through:
                        hid = norm(hid.to(next(norm.parameters()).dtype)).float()  # logit lens
                    layer[s]["layer_hidden_cos"][idx_t, i] = F.cosine_similarity(hid, d, dim=-1).cpu()
                    layer[s]["layer_attn_cos"][idx_t, i] = F.cosine_similarity(lin(taps[key(i, o)].value), d, dim=-1).cpu()
                    layer[s]["layer_ffn_cos"][idx_t, i] = F.cosine_similarity(lin(ffn_out.value), d, dim=-1).cpu()
                    a = act.value if scale is None or not head_mode else act.value * scale[:, None]
                    stats[s][i].add_batch(a.cpu(), d.cpu())
    for a in taps.values():
        for x in (a if isinstance(a, list) else [a]):
            x.free()
    out = {}
    info = {"n_examples": len(texts), "max_length": max_length, "signature": model_signature(model),
            "final_norm": norm is not None}
    for s in states:
        per_neuron = [st.result() for st in stats[s]]
        arrays = {k: v.numpy() for k, v in layer[s].items()}
        for k in NEURON_ARRAYS:
            arrays[k] = torch.stack([p[k] for p in per_neuron]).float().numpy()
        arrays["features"] = feats.numpy()
        arrays["head_residual_cos"] = hr_cos.numpy()
        if labels is not None:
            arrays["labels"] = np.asarray(labels)
        out[s] = Anatomy(arrays, {**info, **(meta or {}), "decision_state": s})
    return out


def collect_anatomy(model, tokenizer, texts: list[str], labels=None, batch_size: int = 16, max_length: int = 128,
                    meta: dict | None = None, decision_state: str = "head") -> Anatomy:
    """The anatomy for one decision state (``"head"``: the vector the head reads, the default;
    ``"residual"``: the residual stream before the final norm); see ``collect_anatomies``."""
    check_decision_state(decision_state)
    return collect_anatomies(model, tokenizer, texts, labels, batch_size, max_length, meta, (decision_state,))[decision_state]


def anatomy_key(model_name: str, dataset: str, n_examples: int, seed: int, template: str, max_length: int,
                decision_state: str = "head") -> str:
    """The store key: model, data, template, length and the decision state (arrays of one state are
    never read as the other)."""
    check_decision_state(decision_state)
    spec = json.dumps({"model": model_name, "dataset": dataset, "n": n_examples, "seed": seed,
                       "template": template, "max_length": max_length, "decision_state": decision_state, "v": 2},
                      sort_keys=True)
    safe = model_name.replace("/", "_").replace(".", "_")
    return f"{safe}__{dataset}__{decision_state}__{hashlib.sha1(spec.encode()).hexdigest()[:10]}"


def anatomy_path(key: str, directory: str | Path | None = None) -> Path:
    """Where arrays with ``key`` live: ``directory`` or ``$MINILIB_CACHE/anatomy``."""
    d = Path(directory) if directory else assets.cache_dir() / "anatomy"
    return d / f"{key}.npz"


def anatomy_for(loaded, task, batch_size: int = 16, max_length: int = 128, directory: str | Path | None = None,
                recompute: bool = False, decision_state: str = "head") -> tuple[Anatomy, dict]:
    """The anatomy of ``loaded`` on ``task.train`` (the examples the head is trained on) for
    ``decision_state``: loaded from the store when present (and checked against the model and the
    state), else collected -- for both states in the same pass -- and stored."""
    check_decision_state(decision_state)
    keys = {s: anatomy_key(loaded.name, task.dataset, len(task.train), task.seed, task.template, max_length, s)
            for s in DECISION_STATES}
    path = anatomy_path(keys[decision_state], directory)
    if path.is_file() and not recompute:
        an = Anatomy.load(path)
        an.check(loaded.model, decision_state=decision_state)
        return an, {"cached": True, "path": str(path), "key": keys[decision_state]}
    ans = collect_anatomies(loaded.model, loaded.tokenizer, task.texts("train"), task.train.labels, batch_size,
                            max_length, meta={"model": loaded.name, "dataset": task.dataset})
    for s, an in ans.items():
        an.meta["key"] = keys[s]
        an.save(anatomy_path(keys[s], directory))
    return ans[decision_state], {"cached": False, "path": str(path), "key": keys[decision_state]}


def decision_layer_profile(anatomy: Anatomy, kind: str = "neuron_abs_proj") -> np.ndarray:
    """Importance of each layer for the decision: the mean anatomy score of its neurons, divided by
    the mean over layers (so 1 = average)."""
    return _profile(np.asarray(anatomy[kind], dtype=np.float64))


def preserved_neurons(anatomy: Anatomy, fraction: float = 0.01, kind: str = "neuron_abs_cos") -> list[torch.Tensor]:
    """The neurons the strategy preserves: per layer, the top ``fraction`` by mean |cos| with the
    decision vector (the most decision-aligned neurons).  Bool masks, True = preserved."""
    return preserve_top(np.asarray(anatomy[kind]), fraction)


# --- the two protocols of the decision --------------------------------------------------------

PROTOCOLS = ("head-only", "finetuned")


def decision_model(loaded, task, protocol: str, batch_size: int = 32, max_length: int = 128, features=None,
                   ft: dict | None = None, verbose: bool = True):
    """The model and decision head under ``protocol``: ``(loaded_p, head, info)``.

    * ``"head-only"``: the frozen ``loaded`` with its head-only logistic classifier
      (``minilib.train.trained_head``, cached; ``features`` of ``task.train`` skip its feature pass);
    * ``"finetuned"``: the model fine-tuned on ``task.train`` (``minilib.train.finetuned_classifier``,
      cached) with its own linear head.  ``ft``: its options (``method``, ``n_train``, ``epochs``,
      ``batch_size``, ``lr``, ``lora_r``, ``init``: ``"probe"`` starts the head from the head-only
      classifier (linear probing, then fine-tuning), ``"random"`` from a small random head).

    ``info["seconds"]`` is the wall time spent here (near zero when everything came from the cache)."""
    import time

    from minilib.train.classify import finetuned_classifier
    from minilib.train.heads import trained_head
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    t = time.perf_counter()
    probe, info = trained_head(loaded, task, batch_size, max_length, features=features)
    if protocol == "head-only":
        return loaded, probe, {**info, "protocol": protocol, "seconds": time.perf_counter() - t}
    ft = dict(ft or {})
    init = ft.pop("init", "probe")
    if init not in ("probe", "random"):
        raise ValueError(f"ft init must be 'probe' or 'random', got {init!r}")
    lora_r = ft.pop("lora_r", 8)
    out, head, finfo = finetuned_classifier(loaded, task, max_length=max_length, init_head=probe if init == "probe" else None,
                                            lora_r=lora_r, lora_alpha=2 * lora_r, verbose=verbose, **ft)
    finfo = {k: v for k, v in finfo.items() if k != "loss"} | {"final_loss": float(np.mean(finfo["loss"][-5:]))
                                                              if finfo.get("loss") else None}
    return out, head, {**finfo, "protocol": protocol, "init": init, "seconds": time.perf_counter() - t}


def ft_options(method: str, n_train: int, epochs: int, batch_size: int, lr: float, init: str, lora_r: int) -> dict:
    """The notebooks' fine-tuning parameters as ``decision_model``'s ``ft`` options."""
    return {"method": method, "n_train": n_train, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "init": init, "lora_r": lora_r}


class DecisionSetup(NamedTuple):
    """What the six decision notebooks (BERT/GPT2 anatomy, pruning baseline, pruning strategy) set up
    from their parameters: ``m, task, tag, ft, majority = decision_setup(resolved)``."""
    m: object            # the LoadedModel
    task: object         # the DecisionTask
    tag: str             # the model name as a file name part
    ft: dict             # decision_model's fine-tuning options
    majority: float      # the majority-class accuracy of the test part


def decision_setup(params, verbose: bool = True) -> DecisionSetup:
    """The decision notebooks' shared set-up from their resolved parameters (``params``: a mapping
    with ``model``, ``device``, ``dataset``, ``n_train``, ``n_test``, ``seed``, ``template`` and the
    fine-tuning ones ``ft_method``, ``ft_n_train``, ``ft_epochs``, ``ft_batch_size``, ``ft_lr``,
    ``ft_init``, ``lora_r``): the model loaded on ``device``, the decision task, the file tag of the
    model name, the ``ft`` options of ``decision_model`` and the majority-class test accuracy; with
    ``verbose`` one line names the family, the size and the task."""
    from minilib.eval.decision import decision_task
    from minilib.models import load
    p = params
    m = load(p["model"], device=p["device"])
    task = decision_task(p["dataset"], p["n_train"], p["n_test"], p["seed"], template=p["template"])
    ft = ft_options(p["ft_method"], p["ft_n_train"], p["ft_epochs"], p["ft_batch_size"], p["ft_lr"], p["ft_init"],
                    p["lora_r"])
    majority = float(max(task.test.labels.mean(), 1 - task.test.labels.mean()))
    if verbose:
        print(m.adapter.family, f"{sum(p.numel() for p in m.model.parameters())/1e6:.1f}M params;", task.info)
    return DecisionSetup(m, task, p["model"].replace("/", "_"), ft, majority)
