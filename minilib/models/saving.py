"""Save and load any reshaped model: pruned FFNs, a pruned vocabulary, sparse weights, a task head.

One folder, written atomically (``minilib.io.atomic_dir``):

* ``model.safetensors`` -- the tensors (no pickle anywhere);
* ``config.json`` and the base tokenizer's files;
* ``minilib_plan.json`` -- the family, the model class, the config, the shape of every module that
  differs from what the config builds, and ``extra`` (e.g. the ``PruneReport`` summary);
* ``vocab_map.json`` -- with a ``RemappedTokenizer``: kept ids, fallback, fingerprint;
* ``decision_head.safetensors`` -- with a decision head (``minilib.eval.decision``);
* ``.minilib-manifest.json`` -- the size and sha256 of every file above (``minilib.assets``' manifest
  format and hashing), written last.

Integrity.  ``load_model`` hashes every file against the manifest before it reads any (one streamed
pass per file; 0.4-1.2 s for a 540 MB model, see ``check_hashes``): a missing, added, resized or
changed file raises ``CorruptModelError`` naming it, never a model with quietly different weights.
``save_model`` replaces only what its manifest says it wrote: files it did not write are never deleted
(refused, or kept with ``overwrite=True``), and staging folders of writers that were killed are removed.

``load_model`` rebuilds the architecture from the config, resizes the reshaped modules, then loads
the tensors strictly.  A vocabulary-pruned model always comes back with its own remapped tokenizer,
or fails with ``PlanMismatchError``; it never silently gets the base tokenizer.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from minilib import assets
from minilib.io import DestinationError, atomic_dir
from minilib.models.adapters import adapter_for, get_path, set_path
from minilib.models.loaded import finish_loading
from minilib.models.linear import in_features, is_linear, out_features, resized_like
from minilib.models.surgery import PlanMismatchError
from minilib.models.vocab import CONFIG_KEY, MAP_FILE, RemappedTokenizer, VocabMap

PLAN_FILE = "minilib_plan.json"
PLAN_VERSION = 1
HEAD_FILE = "decision_head.safetensors"
WEIGHTS_FILE = "model.safetensors"
MANIFEST = assets.MANIFEST  # size and sha256 of every file of the folder
SAVED = "saved-model"       # what wrote a folder, in its manifest ("export" for minilib.export)


class CorruptModelError(PlanMismatchError):
    """A folder written by ``save_model`` (or ``minilib.export``) that no longer holds what was written:
    a file is missing, added, truncated, changed or unreadable."""


def write_hashes(stage: Path, kind: str, kept: list[str] = ()) -> None:
    """The manifest of a folder this library wrote (``minilib.assets.write_manifest``: size and sha256
    of every file, in one streamed pass each), what wrote it, and the files kept in it that it did not
    write (``minilib.io.atomic_dir`` with ``overwrite=True``; they are verified as part of the folder)."""
    try:
        assets.write_manifest(stage, {"minilib": kind, "kept": sorted(kept)})
    except assets.AssetError as e:  # a kept symbolic link
        raise DestinationError(f"cannot record the folder's content: {e}") from None


def owned_by(kind: str):
    """``owned(path)`` for ``atomic_dir``: the files a ``kind`` folder's manifest says this library wrote
    (the kept files excluded), or None when it has no readable manifest of that kind."""
    def owned(path: Path) -> set[str] | None:
        man, _, reason = assets._read_manifest(Path(path))
        if reason or man.get("minilib") != kind or not isinstance(man.get("kept"), list):
            return None
        return (set(man["files"]) - set(man["kept"])) | {MANIFEST, assets.VERIFIED}
    return owned


def check_hashes(path: str | os.PathLike, kind: str = SAVED, what: str = "saved model") -> assets.CheckResult:
    """Raise ``CorruptModelError`` naming the file unless every file of ``path`` has the size and sha256
    its manifest recorded, and no file was added (``minilib.assets.check_folder``, every file hashed).

    Cost: one sequential read per file (``hashlib.file_digest``, no Python loop per chunk), and the read
    warms the page cache for the load that follows.  Measured on this project's CPU (2 cores): about
    1.5 GB/s idle (0.36 s for a 540 MB model, ``minilib.assets``), 0.45-0.55 GB/s with the machine shared
    by other jobs (1.1-1.2 s for SmolLM2's 538 MB safetensors, against 1.1-1.5 s for the load itself);
    a tiny model (17 MB) takes 38 ms against 1.2 s for ``load_model``."""
    path = Path(path)
    res = assets.check_folder(path, full=True, expect={"minilib": kind}, record=False)
    if res.reason:
        raise CorruptModelError(f"{what} {path} is corrupted or was edited after it was written: {res.reason} "
                                f"(against the sizes and sha256 recorded in {MANIFEST} when it was written); "
                                "nothing was loaded: write it again, or restore the folder from a copy")
    return res


def _shapes(model: nn.Module) -> dict[str, list]:
    out = {}
    for name, m in model.named_modules():
        if is_linear(m):
            out[name] = ["linear", out_features(m), in_features(m)]
        elif isinstance(m, nn.Embedding):
            out[name] = ["embedding", m.num_embeddings, m.embedding_dim]
    return out


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``save_model`` (its content is checked by ``load_model``)."""
    return (Path(path) / PLAN_FILE).is_file()


def _corrupt(f: Path, what: str, e: BaseException) -> CorruptModelError:
    return CorruptModelError(f"{f} is {what} ({type(e).__name__}: {str(e)[:300]}); the saved model in {f.parent} "
                             "is corrupted: save it again")


def save_head(head: nn.Linear, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """A linear decision head as safetensors (weight, bias, string metadata), atomically."""
    from safetensors.torch import save_file

    from minilib.io import atomic_file
    with atomic_file(path) as tmp:
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
                  str(tmp), metadata={k: str(v) for k, v in (meta or {}).items()})
    return Path(path)


def load_head(path: str | os.PathLike) -> nn.Linear:
    from safetensors.torch import load_file
    try:
        t = load_file(str(path))
    except Exception as e:  # safetensors' own error for a truncated or garbled file
        raise _corrupt(Path(path), "not a readable safetensors file", e) from e
    if set(t) != {"weight", "bias"} or t["weight"].dim() != 2:
        raise PlanMismatchError(f"{path} is not a linear decision head (tensors {sorted(t)})")
    head = nn.Linear(t["weight"].shape[1], t["weight"].shape[0])
    with torch.no_grad():
        head.weight.copy_(t["weight"])
        head.bias.copy_(t["bias"])
    return head.eval()


def save_model(model: nn.Module, tokenizer, path: str | os.PathLike, extra: dict | None = None,
               head: nn.Linear | None = None, overwrite: bool = False) -> Path:
    """Save a (possibly reshaped) model, its tokenizer (a ``RemappedTokenizer`` keeps its mapping)
    and optionally a decision head, as one folder written atomically.

    An existing folder is replaced only if it is empty or holds only the files that its manifest says
    ``save_model`` wrote; a folder with any other file raises ``minilib.io.DestinationError`` listing
    them, before any work, and is left untouched.  With ``overwrite=True`` those files are kept in the
    new folder (and verified with it), never deleted."""
    from safetensors.torch import save_model as st_save

    path = Path(path)
    adapter = adapter_for(model)
    remapped = isinstance(tokenizer, RemappedTokenizer)
    if remapped:
        tokenizer.check_model(model)
    elif getattr(model.config, CONFIG_KEY, None) is not None:
        raise PlanMismatchError("this model's vocabulary was pruned; save it with its RemappedTokenizer "
                                "(the base tokenizer would give it ids it does not have)")
    adapter.prepare(model)
    with torch.device("meta"):
        fresh = adapter.prepare(type(model)(model.config))
    ref, cur = _shapes(fresh), _shapes(model)
    del fresh
    if set(ref) != set(cur):
        raise PlanMismatchError(f"module names differ from the config-built {type(model).__name__}: "
                                f"{sorted(set(ref) ^ set(cur))[:5]}")
    plan = {
        "version": PLAN_VERSION,
        "family": adapter.family,
        "class": type(model).__name__,
        "config": json.loads(model.config.to_json_string()),
        "reshaped": {k: v for k, v in cur.items() if v != ref[k]},
        "vocab_pruned": remapped,
        "has_head": head is not None,
        "extra": extra or {},
    }
    with atomic_dir(path, owned=owned_by(SAVED), overwrite=overwrite, what="minilib.models.save_model",
                    seal=lambda stage, kept: write_hashes(stage, SAVED, kept)) as stage:
        st_save(model, str(stage / WEIGHTS_FILE))
        model.config.save_pretrained(stage)
        base = tokenizer.base if remapped else tokenizer
        if base is not None:
            base.save_pretrained(stage)
        if remapped:
            (stage / MAP_FILE).write_text(json.dumps(tokenizer.vmap.to_json()))
        if head is not None:
            save_head(head, stage / HEAD_FILE)
        (stage / PLAN_FILE).write_text(json.dumps(plan, indent=1))
    return path


def read_plan(path: str | os.PathLike) -> dict:
    f = Path(path) / PLAN_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path} has no {PLAN_FILE}: not a model saved by minilib.models.save_model")
    try:
        plan = json.loads(f.read_text())
    except ValueError as e:
        raise PlanMismatchError(f"{f} is not valid JSON ({e})") from e
    if plan.get("version") != PLAN_VERSION:
        raise PlanMismatchError(f"{f}: plan version {plan.get('version')}, expected {PLAN_VERSION}")
    return plan


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="auto", verify: bool = True):
    """Load a folder written by ``save_model``: a ``LoadedModel`` whose ``plan`` is the saved plan,
    whose tokenizer is remapped when the vocabulary was pruned, and whose ``head`` is the saved
    decision head (or None).  Every file is first checked against the sha256 recorded when it was
    saved (``check_hashes``); a folder that does not match raises ``CorruptModelError``.

    ``verify=False`` skips that check, with a warning: only to rescue a folder saved before saved
    models carried a manifest (load it once this way and ``save_model`` it again)."""
    import transformers
    from safetensors.torch import load_model as st_load
    from transformers import AutoConfig

    from minilib.calib.passes import check_dtype
    from minilib.models.tokenizers import read_tokenizer

    dtype = check_dtype(dtype, "dtype")
    path = Path(path)
    if not (path / PLAN_FILE).is_file():
        read_plan(path)  # FileNotFoundError: not a saved model
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, got {verify!r}")
    if not verify:
        warnings.warn(f"loading {path} without checking its content against its manifest (verify=False)",
                      stacklevel=2)
    elif not (path / MANIFEST).exists():
        raise CorruptModelError(f"saved model {path} has no {MANIFEST}: it was written before saved models "
                                "carried content hashes (or by hand), so its content cannot be verified; if you "
                                "trust it, load it once with load_model(path, verify=False) and save_model it "
                                "again")
    else:
        check_hashes(path)
    plan = read_plan(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise _corrupt(path / "config.json", "not a readable model config", e) from e
    cls = getattr(transformers, plan["class"], None)
    if cls is None:
        raise PlanMismatchError(f"{path}: model class {plan['class']!r} is not in this transformers version")
    model = adapter_for(config).prepare(cls(config))  # the module names the plan uses (fused layers split)
    for name, (kind, a, b) in plan["reshaped"].items():
        old = get_path(model, name)
        if kind == "linear":
            set_path(model, name, resized_like(old, a, b))
        else:  # resize in place: keeps subclasses such as Gemma's scaled embedding
            old.weight = nn.Parameter(torch.empty(a, b))
            old.num_embeddings = a
            if old.padding_idx is not None and old.padding_idx >= a:
                old.padding_idx = None
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    try:
        st_load(model, str(path / WEIGHTS_FILE), strict=True)
    except Exception as e:  # safetensors' error for a truncated file, RuntimeError for other tensors
        raise _corrupt(path / WEIGHTS_FILE, "not the tensors of this model's plan", e) from e
    try:
        tok = read_tokenizer(path) if (path / "tokenizer_config.json").is_file() else None
    except Exception as e:
        raise _corrupt(path / "tokenizer_config.json", "part of a tokenizer that does not load", e) from e
    vocab_pruned = plan.get("vocab_pruned") or plan.get("extra", {}).get("vocab_pruned") \
        or getattr(config, CONFIG_KEY, None) is not None
    if vocab_pruned:
        f = path / MAP_FILE
        if not f.is_file():
            raise PlanMismatchError(f"{path}: the vocabulary of this model was pruned but {MAP_FILE} is missing; "
                                    "without it no tokenizer matches the model's ids")
        if tok is None:
            raise PlanMismatchError(f"{path}: the vocabulary was pruned but the base tokenizer was not saved")
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        try:
            vmap = VocabMap.from_json(json.loads(f.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # PlanMismatchError is a ValueError
            raise _corrupt(f, "not a vocabulary map", e) from e
        remapped = RemappedTokenizer(tok, vmap)
        remapped.check_model(model)
        loaded = finish_loading(model, None, adapter_for(model), str(path), dtype, device)
        loaded.tokenizer = remapped
    else:
        loaded = finish_loading(model, tok, adapter_for(model), str(path), dtype, device)
    loaded.plan = plan
    loaded.head = load_head(path / HEAD_FILE).to(loaded.device) if (path / HEAD_FILE).is_file() else None
    return loaded
