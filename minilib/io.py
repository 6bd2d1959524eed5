"""The one atomic-write helper: a file or a folder appears whole, or not at all.

    write_text(path, text)                       # a file, replaced in one rename
    with atomic_file(path) as tmp: save(tmp)     # anything that writes to a path
    with atomic_dir(path, is_ours=...) as stage: # a folder, swapped in (refuses to replace foreign folders)
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
from typing import Callable, Iterator


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


@contextmanager
def atomic_dir(path: str | os.PathLike, is_ours: Callable[[Path], bool] | None = None,
               overwrite: bool = False, staging_root: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; on success it takes the place of ``path``.

    An existing ``path`` is replaced only if it is empty, if ``is_ours(path)`` says this library
    wrote it, or with ``overwrite=True``; anything else raises ``DestinationError`` *before* the body
    runs, so nothing is computed for nothing.  The old folder is moved aside, the new one renamed in,
    then the old one deleted: a crash in between leaves either the old or the new folder at ``path``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DestinationError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite and not (is_ours and is_ours(path)):
        raise DestinationError(f"{path} is a non-empty folder that was not written by minilib; refusing to "
                               "replace it (choose another path, or pass overwrite=True)")
    root = Path(staging_root) if staging_root is not None else path.parent
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".staging", dir=root))
    os.chmod(stage, _umask_mode(0o777))
    old = None
    try:
        yield stage
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(stage, path)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)  # put the previous folder back
            old = None
        raise
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
