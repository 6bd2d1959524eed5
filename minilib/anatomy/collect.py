"""One hooked pass: how information reaches the decision token, per layer and per FFN neuron.

For each example, at the decision token (``adapter.decision_positions``):

* ``d``: the *final decision vector*, the residual stream after the last block;
* per layer ``l``: cosine of ``d`` with the block output, the attention output (``o`` projection)
  and the FFN output (``ffn.down``);
* per FFN neuron ``j`` of layer ``l``: its activation ``a_j`` (the input of ``ffn.down``, gate
  included) and its contribution vector ``c_j = a_j * W_down[:, j]``; we keep
  ``cos(c_j, d) = sign(a_j) cos(W_down[:, j], d)`` and the projection ``<c_j, d>/|d|``.

Per-neuron numbers are averaged over examples by a small accumulator (``NeuronStats.add_batch``);
the hooks only stash decision-token slices.  Hooks live in one ``with`` block and are always removed.
The result is an ``Anatomy`` (arrays + metadata), saved as ``.npz``.
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
from minilib.hooks import forward_hooks, forward_pre_hooks
from minilib.models.adapters import adapter_for
from minilib.models.linear import weight_oi

LAYER_ARRAYS = ("layer_hidden_cos", "layer_attn_cos", "layer_ffn_cos")          # [n, L]
NEURON_ARRAYS = ("neuron_cos", "neuron_abs_cos", "neuron_proj", "neuron_abs_proj",
                 "act_mean", "act_abs_mean", "act_std", "act_pos_frac")          # [L, W]


class AnatomyMismatchError(ValueError):
    """Anatomy arrays that do not match the model they are used with."""


class NeuronStats:
    """Running per-neuron sums for one layer; ``add_batch`` takes decision-token slices."""

    def __init__(self, width: int):
        self.n = 0
        self.sums = {k: torch.zeros(width, dtype=torch.float64) for k in
                     ("cos", "abs_cos", "proj", "abs_proj", "act", "abs_act", "act2", "pos")}

    def add_batch(self, acts: torch.Tensor, w_down: torch.Tensor, d: torch.Tensor) -> None:
        """``acts`` (B, W) neuron activations, ``w_down`` (H, W) as [out, in], ``d`` (B, H)."""
        a, w, d = acts.double(), w_down.double(), d.double()
        wd = d @ w                                                     # (B, W): <W[:, j], d>
        dn = d.norm(dim=1, keepdim=True).clamp_min(1e-12)              # (B, 1)
        wn = w.norm(dim=0).clamp_min(1e-12)                            # (W,)
        cos = torch.sign(a) * wd / (wn * dn)                           # cos(a_j W[:, j], d); 0 if a_j = 0
        proj = a * wd / dn
        s = self.sums
        s["cos"] += cos.sum(0); s["abs_cos"] += cos.abs().sum(0)
        s["proj"] += proj.sum(0); s["abs_proj"] += proj.abs().sum(0)
        s["act"] += a.sum(0); s["abs_act"] += a.abs().sum(0); s["act2"] += (a * a).sum(0)
        s["pos"] += (a > 0).double().sum(0)
        self.n += a.shape[0]

    def result(self) -> dict[str, np.ndarray]:
        n, s = max(self.n, 1), self.sums
        mean = s["act"] / n
        return {"neuron_cos": s["cos"] / n, "neuron_abs_cos": s["abs_cos"] / n, "neuron_proj": s["proj"] / n,
                "neuron_abs_proj": s["abs_proj"] / n, "act_mean": mean, "act_abs_mean": s["abs_act"] / n,
                "act_std": (s["act2"] / n - mean * mean).clamp_min(0).sqrt(), "act_pos_frac": s["pos"] / n}


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.array(json.dumps(self.meta)), **self.arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Anatomy":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(arrays, meta)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def collect_anatomy(model, tokenizer, texts: list[str], labels=None, batch_size: int = 16, max_length: int = 128,
                    meta: dict | None = None) -> Anatomy:
    """One pass over ``texts`` (already templated) with hooks on every block, attention output, FFN
    down projection (input and output).  Also returns the decision features (final hidden state of
    ``base(model)`` at the decision token) for head training, as ``arrays["features"]``."""
    from minilib.anatomy.decision import _batches
    adapter = adapter_for(model)
    base = adapter.base(model)
    blocks = adapter.blocks(model)
    ffns = adapter.ffns(model)
    L = len(blocks)
    device = next(model.parameters()).device
    w_down = [weight_oi(f.down).detach() for f in ffns]                         # (H, W) each
    stats = [NeuronStats(f.width) for f in ffns]
    layer = {k: torch.empty(len(texts), L) for k in LAYER_ARRAYS}
    feats = torch.empty(len(texts), model.config.hidden_size)
    stash: dict = {}

    def take(x):  # (B, T, ...) -> (B, ...) at the decision token
        B, T = stash["bt"]
        if x.dim() == 2 and x.shape[0] == B * T:  # some families (OPT) flatten tokens inside the FFN
            x = x.view(B, T, -1)
        return x[torch.arange(x.shape[0], device=x.device), stash["pos"]].float()

    def on_block(i):
        return lambda m, args, out: stash.__setitem__(("block", i), take(_first(out)))

    def on_attn(i):
        return lambda m, args, out: stash.__setitem__(("attn", i), take(_first(out)))

    def on_ffn_out(i):
        return lambda m, args, out: stash.__setitem__(("ffn", i), take(_first(out)))

    def on_ffn_in(i):
        return lambda m, args: stash.__setitem__(("act", i), take(args[0]))

    post = {}
    for i, b in enumerate(blocks):
        post[b] = on_block(i)
        post[adapter.attention_output_module(b)] = on_attn(i)
        post[ffns[i].down] = on_ffn_out(i)
    pre = {f.down: on_ffn_in(i) for i, f in enumerate(ffns)}
    model.eval()
    with forward_hooks(post), forward_pre_hooks(pre):
        for idx, enc in _batches(tokenizer, texts, batch_size, max_length):
            enc = enc.to(device)
            stash.clear()
            stash["bt"] = tuple(enc["attention_mask"].shape)
            stash["pos"] = adapter.decision_positions(enc["attention_mask"])
            h = base(**enc).last_hidden_state
            idx_t = torch.as_tensor(idx)
            feats[idx_t] = take(h).cpu()
            d = stash[("block", L - 1)]                                           # (B, H) final decision vector
            for i in range(L):
                layer["layer_hidden_cos"][idx_t, i] = F.cosine_similarity(stash[("block", i)], d, dim=-1).cpu()
                layer["layer_attn_cos"][idx_t, i] = F.cosine_similarity(stash[("attn", i)], d, dim=-1).cpu()
                layer["layer_ffn_cos"][idx_t, i] = F.cosine_similarity(stash[("ffn", i)], d, dim=-1).cpu()
                stats[i].add_batch(stash[("act", i)].cpu(), w_down[i].float().cpu(), d.cpu())
            stash.clear()
    per_neuron = [s.result() for s in stats]
    arrays = {k: v.numpy() for k, v in layer.items()}
    widths = {len(p["neuron_cos"]) for p in per_neuron}
    if len(widths) != 1:
        raise ValueError("collect_anatomy needs equal FFN widths in every block (run it on the dense model)")
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
    key = anatomy_key(loaded.name, task.dataset, len(task.train), task.seed, task.template, max_length)
    path = anatomy_path(key, directory)
    if path.is_file() and not recompute:
        an = Anatomy.load(path)
        an.check(loaded.model)
        return an, {"cached": True, "path": str(path), "key": key}
    an = collect_anatomy(loaded.model, loaded.tokenizer, task.texts("train"), task.train.labels, batch_size,
                         max_length, meta={"model": loaded.name, "dataset": task.dataset, "key": key})
    an.save(path)
    return an, {"cached": False, "path": str(path), "key": key}
