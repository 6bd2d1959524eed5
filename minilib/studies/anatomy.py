"""Anatomy of the decision: how information reaches the decision token, per layer and FFN neuron.

One hooked pass (``minilib.calib.feeding``) over labelled texts; at the decision token
(``adapter.decision_positions``: ``[CLS]`` for encoders, the last token for decoders):

* ``d``: the *final decision vector*, the residual stream after the last block;
* per layer ``l``: cosine of ``d`` with the block output, the attention output (``o`` projection)
  and the FFN output (``ffn.down``);
* per FFN neuron ``j`` of layer ``l`` (``minilib.calib.DecisionNeuronStats``): its activation ``a_j``
  (the input of ``down``, gate included) and its contribution ``c_j = a_j * W_down[:, j]``; we keep
  ``cos(c_j, d)``, the projection ``<c_j, d>/|d|`` and activation statistics, averaged over examples.

The result is an ``Anatomy`` (arrays + metadata), stored as ``.npz`` (no pickle) and checked against
the model it is used with.  ``layer_profile`` and ``preserved_neurons`` read what the anatomy says
about layers and neurons for the anatomy-guided pruning strategy (``minilib.studies.structured``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

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
from minilib.prune.masks import protect_top

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

    def check(self, model, strict_weights: bool = True) -> None:
        """Raise ``AnatomyMismatchError`` unless these arrays were computed on ``model``'s architecture
        (and, with ``strict_weights``, on its FFN weights)."""
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


@torch.no_grad()
def collect_anatomy(model, tokenizer, texts: list[str], labels=None, batch_size: int = 16, max_length: int = 128,
                    meta: dict | None = None) -> Anatomy:
    """One pass over ``texts`` (already templated) with hooks on every block, attention output, FFN
    down projection (input and output).  Also returns the decision features (final hidden state of
    ``base(model)`` at the decision token) for head training, as ``arrays["features"]``."""
    adapter = adapter_for(model)
    base = adapter.base(model)
    ffns = adapter.ffns(model)
    L = len(ffns)
    if len({f.width for f in ffns}) != 1:
        raise ValueError("collect_anatomy needs equal FFN widths in every block (run it on the dense model)")
    device = model_device(model)
    down = adapter.ffn_paths["down"]
    o = adapter.attn_paths["o"]
    taps = {}
    for i in range(L):
        taps[key(i)] = LastBatch("output")
        taps[key(i, o)] = LastBatch("output")
        taps[key(i, down)] = [LastBatch("output"), LastBatch("input")]
    stats = [DecisionNeuronStats(weight_oi(f.down).float()) for f in ffns]
    layer = {k: torch.empty(len(texts), L) for k in LAYER_ARRAYS}
    feats = torch.empty(len(texts), model.config.hidden_size)
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
            h = base(**enc).last_hidden_state
            idx_t = torch.as_tensor(idx)
            feats[idx_t] = take(h).cpu()
            d = taps[key(L - 1)].value                                          # (B, H) final decision vector
            for i in range(L):
                ffn_out, act = taps[key(i, down)]
                layer["layer_hidden_cos"][idx_t, i] = F.cosine_similarity(taps[key(i)].value, d, dim=-1).cpu()
                layer["layer_attn_cos"][idx_t, i] = F.cosine_similarity(taps[key(i, o)].value, d, dim=-1).cpu()
                layer["layer_ffn_cos"][idx_t, i] = F.cosine_similarity(ffn_out.value, d, dim=-1).cpu()
                stats[i].add_batch(act.value.cpu(), d.cpu())
    for a in taps.values():
        for x in (a if isinstance(a, list) else [a]):
            x.free()
    per_neuron = [s.result() for s in stats]
    arrays = {k: v.numpy() for k, v in layer.items()}
    for k in NEURON_ARRAYS:
        arrays[k] = torch.stack([p[k] for p in per_neuron]).float().numpy()
    arrays["features"] = feats.numpy()
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    info = {"n_examples": len(texts), "max_length": max_length, "signature": model_signature(model)}
    return Anatomy(arrays, {**info, **(meta or {})})


def anatomy_key(model_name: str, dataset: str, n_examples: int, seed: int, template: str, max_length: int) -> str:
    spec = json.dumps({"model": model_name, "dataset": dataset, "n": n_examples, "seed": seed,
                       "template": template, "max_length": max_length, "v": 1}, sort_keys=True)
    safe = model_name.replace("/", "_").replace(".", "_")
    return f"{safe}__{dataset}__{hashlib.sha1(spec.encode()).hexdigest()[:10]}"


def anatomy_path(key: str, directory: str | Path | None = None) -> Path:
    """Where arrays with ``key`` live: ``directory`` or ``$MINILIB_CACHE/anatomy``."""
    d = Path(directory) if directory else assets.cache_dir() / "anatomy"
    return d / f"{key}.npz"


def anatomy_for(loaded, task, batch_size: int = 16, max_length: int = 128, directory: str | Path | None = None,
                recompute: bool = False) -> tuple[Anatomy, dict]:
    """The anatomy of ``loaded`` on ``task.train`` (the examples the head is trained on): loaded from
    the store when present (and checked against the model), else collected and stored."""
    k = anatomy_key(loaded.name, task.dataset, len(task.train), task.seed, task.template, max_length)
    path = anatomy_path(k, directory)
    if path.is_file() and not recompute:
        an = Anatomy.load(path)
        an.check(loaded.model)
        return an, {"cached": True, "path": str(path), "key": k}
    an = collect_anatomy(loaded.model, loaded.tokenizer, task.texts("train"), task.train.labels, batch_size,
                         max_length, meta={"model": loaded.name, "dataset": task.dataset, "key": k})
    an.save(path)
    return an, {"cached": False, "path": str(path), "key": k}


def layer_profile(anatomy: Anatomy, kind: str = "neuron_abs_proj") -> np.ndarray:
    """Importance of each layer for the decision: the mean anatomy score of its neurons, divided by
    the mean over layers (so 1 = average)."""
    return _profile(np.asarray(anatomy[kind], dtype=np.float64))


def preserved_neurons(anatomy: Anatomy, fraction: float = 0.01, kind: str = "neuron_abs_cos") -> list[torch.Tensor]:
    """The neurons the strategy protects: per layer, the top ``fraction`` by mean |cos| with the
    decision vector (the most decision-aligned neurons).  Bool masks, True = preserved."""
    return protect_top(np.asarray(anatomy[kind]), fraction)


# --- the notebooks' parameters and profiles (minilib.params) ----------------------------------

from minilib.params import HubOr, Int, Str  # noqa: E402


def _check_template(v):
    from minilib.params import ParameterError
    if "{text}" not in v:
        raise ParameterError(f"parameter 'template' = {v!r}: must contain '{{text}}'")


TASK_SPEC = {
    "model": Str(),
    "dataset": Str(help="'sarcasm', 'sst2' or a .jsonl with text,label"),
    "template": Str(check=_check_template),
    "n_train": Int(2),
    "n_test": Int(1),
    "seed": Int(0),
    "batch_size": Int(1),
    "max_length": Int(8),
}
SPEC = {**TASK_SPEC, "anatomy_dir": Str(help="'' = $MINILIB_CACHE/anatomy")}

TASK_PROFILES = {
    "BERT": {
        "test": dict(model="minilm-l6", dataset="sst2", n_train=64, n_test=64, batch_size=32),
        "default": dict(model="minilm-l6", dataset="sarcasm", n_train=1000, n_test=600, batch_size=64),
        "paper": dict(model=HubOr("bert-base-uncased", "minilm-l6"), dataset="sarcasm", n_train=20000, n_test=2000,
                      batch_size=64),
    },
    "GPT2": {
        "test": dict(model="tiny-gpt2", dataset="sst2", n_train=64, n_test=64, batch_size=32),
        "default": dict(model="smollm2-135m", dataset="sarcasm", n_train=600, n_test=150, batch_size=32),
        "paper": dict(model=HubOr("gpt2", "smollm2-135m"), dataset="sarcasm", n_train=20000, n_test=2000,
                      batch_size=32),
    },
}
NOTEBOOKS = {f"{fam}_anatomy": (SPEC, TASK_PROFILES[fam]) for fam in ("BERT", "GPT2")}
