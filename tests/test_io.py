"""The one atomic-write helper: whole or nothing, no leftovers, normal permissions, no clobbering."""

import os
import stat

import pytest

from minilib.io import DestinationError, atomic_dir, atomic_file, write_text
from minilib.results import read_results, write_results


def test_write_text_replaces_whole_and_leaves_nothing(tmp_path):
    p = write_text(tmp_path / "a" / "x.json", "one")
    assert p.read_text() == "one"
    write_text(p, "two")
    assert p.read_text() == "two" and sorted(q.name for q in p.parent.iterdir()) == ["x.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file(tmp_path):
    p = write_text(tmp_path / "x.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["x.txt"]


def test_write_results_fails_before_writing(tmp_path):
    p = tmp_path / "r.json"
    write_results(p, {"a": 1})

    class Unserialisable:
        pass
    with pytest.raises(TypeError):
        write_results(p, {"a": Unserialisable()})
    assert read_results(p) == {"a": 1} and [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_atomic_dir_refuses_foreign_folders(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    ran = []
    with pytest.raises(DestinationError, match="not written by minilib"):
        with atomic_dir(target, owned=lambda p: {"MARK"} if (p / "MARK").is_file() else None):
            ran.append(1)
    assert not ran and (target / "notes.txt").read_text() == "mine"
    with atomic_dir(target, overwrite=True) as stage:
        (stage / "MARK").write_text("x")
    assert sorted(q.name for q in target.iterdir()) == ["MARK"]
    with atomic_dir(target, owned=lambda p: {"MARK"}) as stage:  # only ours in it: replaced
        (stage / "MARK").write_text("y")
    assert (target / "MARK").read_text() == "y"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]  # no staging or old folders left


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "m"
    with atomic_dir(target) as stage:
        (stage / "MARK").write_text("v1")
    with pytest.raises(KeyError):
        with atomic_dir(target, owned=lambda p: {"MARK"}) as stage:
            (stage / "MARK").write_text("v2")
            raise KeyError("boom")
    assert (target / "MARK").read_text() == "v1" and sorted(q.name for q in tmp_path.iterdir()) == ["m"]
