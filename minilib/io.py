"""The one atomic-write helper: a file or a folder appears whole, or not at all.

    write_text(path, text)                       # a file, replaced in one rename
    with atomic_file(path) as tmp: save(tmp)     # anything that writes to a path
    with atomic_dir(path, owned=...) as stage:   # a folder, swapped in (never deletes what it did not write)
        ...

Temporary files live beside their target (same file system, so the final ``os.replace`` is atomic)
and are removed when the body raises.  Files get the usual permissions (``0o666`` minus the umask),
not the ``0o600`` of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator


class DestinationError(FileExistsError):
    """A write would replace something that this library did not write."""


def _umask_mode(mode: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_file(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode() if mode is None else mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def list_entries(directory: Path) -> list[str]:
    """Everything in ``directory`` that a write could destroy, relative and sorted: files, symbolic
    links (never followed) and empty folders, at any depth."""
    directory = Path(directory)
    out = []
    for top, dirs, files in os.walk(directory, followlinks=False):
        rel = Path(top).relative_to(directory)
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        out += [str(rel / f) for f in files + links]
        if not files and not dirs and top != str(directory):
            out.append(str(rel))
    return sorted(out)


def foreign_entries(path: str | os.PathLike, owned: Callable[[Path], Collection[str] | None]) -> list[str]:
    """What an existing folder ``path`` holds that this library did not write: every entry of
    ``list_entries`` not in ``owned(path)`` (the names its manifest lists; None: not a folder it wrote)."""
    path = Path(path)
    if not path.is_dir():
        return []
    mine = owned(path) or ()
    return [e for e in list_entries(path) if e not in mine]


def check_destination(path: str | os.PathLike, owned: Callable[[Path], Collection[str] | None] | None,
                      overwrite: bool, what: str = "minilib") -> list[str]:
    """Raise ``DestinationError`` unless a folder may be written at ``path``; return the foreign
    entries that the write will keep (only with ``overwrite=True``).  See ``atomic_dir``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DestinationError(f"{path} exists and is not a folder")
    if not path.is_dir() or (owned is None and overwrite):
        return []
    foreign = foreign_entries(path, owned or (lambda p: None))
    if foreign and not overwrite:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise DestinationError(
            f"{path} holds {len(foreign)} file(s) that were not written by {what}: {shown}; refusing to replace it "
            "(minilib never deletes what it did not write): move them away or choose another path, or pass "
            "overwrite=True to write the new folder with these files kept in it")
    return foreign


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid: leave it
        return True
    return True


def remove_stale(path: str | os.PathLike, staging_root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the leftovers of writes of ``path`` whose writer process is gone (killed mid-write):
    its staging folders ``.<name>.staging-<pid>-<random>`` under ``staging_root`` (default: beside
    ``path``) and its old folders ``.<name>.old-<pid>-<random>`` beside it (an old folder is put back
    at ``path`` if the writer died between its two renames and ``path`` is missing).  Nothing else
    is touched: another name, a pid that is alive (or this process), a file rather than a folder."""
    path = Path(path)
    removed = []
    for kind, root in (("staging", Path(staging_root) if staging_root is not None else path.parent),
                       ("old", path.parent)):
        prefix = f".{path.name}.{kind}-"
        try:
            candidates = [p for p in root.iterdir() if p.name.startswith(prefix)]
        except OSError:
            continue
        for p in sorted(candidates):
            pid, sep, rand = p.name[len(prefix):].partition("-")
            if (not sep or not rand or not pid.isdigit() or p.is_symlink() or not p.is_dir()
                    or int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue
            if kind == "old" and not os.path.lexists(path):
                os.replace(p, path)
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_dir(path: str | os.PathLike, owned: Callable[[Path], Collection[str] | None] | None = None,
               overwrite: bool = False, staging_root: str | os.PathLike | None = None,
               what: str = "minilib", seal: Callable[[Path, list[str]], None] | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; on success it takes the place of ``path``.

    ``owned(path)`` names the entries (``list_entries``) of an existing folder that this library
    wrote there, from the folder's own manifest, or returns None for a folder it did not write.
    Nothing else is ever deleted: an existing folder holding other entries raises
    ``DestinationError`` listing them *before* the body runs (so nothing is computed for nothing),
    and with ``overwrite=True`` they are moved into the new folder instead (a name the new folder
    also writes raises, and leaves the old folder as it was).  Without ``owned``, an existing
    non-empty folder is refused, or with ``overwrite=True`` replaced whole: only for folders the
    caller owns entirely (a cache entry).  ``seal(stage, kept)``, if given, runs last, once the
    kept entries are in the staging folder (e.g. to write a manifest of the whole folder).

    The staging folder is ``.<name>.staging-<pid>-<random>`` beside ``path``; staging and old
    folders left by a writer that was killed are removed first (``remove_stale``).  The old folder
    is moved aside, the new one renamed in, then the old one deleted.
    """
    path = Path(path)
    root = Path(staging_root) if staging_root is not None else path.parent
    remove_stale(path, root)
    keep = check_destination(path, owned, overwrite, what)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-{os.getpid()}-", dir=root))
    os.chmod(stage, _umask_mode(0o777))
    old, moved = None, []
    try:
        yield stage
        clash = [e for e in keep if any(os.path.lexists(stage.joinpath(*Path(e).parts[:i + 1]))
                                        for i in range(len(Path(e).parts)))]
        if clash:
            raise DestinationError(f"{path}: the new folder writes {clash[:10]}, which minilib did not write in "
                                   "the old one; refusing to replace them (move them away)")
        for e in keep:  # never deleted: they move into the new folder
            (stage / e).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path / e, stage / e)
            moved.append(e)
        if seal is not None:
            seal(stage, keep)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(stage, path)
        moved = []
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)  # put the previous folder back
            old = None
        for e in reversed(moved):  # and the files that were not ours back into it
            if os.path.lexists(stage / e) and path.is_dir():
                (path / e).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / e, path / e)
        raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
