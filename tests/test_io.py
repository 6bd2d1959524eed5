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


@pytest.mark.parametrize("data,what", [
    (b'{"notebook": "dense_baselines", "records": [{"acc": 0.5}, {"acc"', "is truncated: its JSON stops at byte"),
    (b'{"notebook": "dense_baselines", "note": "half a str', "is truncated"),
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b'{"a": 1} trailing', "is not valid JSON (Extra data at line 1"),
    (b"{'a': 1}", "is not valid JSON"),
    (b'{"a": "\xff"}', "is not UTF-8 text"),
    (b"[1, 2]", "holds a JSON list, not the results object"),
])
def test_read_results_names_a_bad_file_says_what_is_wrong_and_to_rerun(tmp_path, data, what):
    from minilib.results import ResultsError
    p = tmp_path / "dense_baselines.json"
    p.write_bytes(data)
    with pytest.raises(ResultsError) as e:
        read_results(p, notebook="dense_baselines")
    assert str(p) in str(e.value) and what in str(e.value)
    assert "rerun the dense_baselines notebook" in str(e.value)
    with pytest.raises(ValueError, match="rerun the notebook that wrote it"):   # ResultsError is a ValueError
        read_results(p)


def test_read_results_of_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results(tmp_path / "none.json")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        read_results(tmp_path)


def test_atomic_dir_never_deletes_foreign_entries(tmp_path):
    from minilib.io import list_entries
    target = tmp_path / "out"
    with atomic_dir(target, owned=lambda p: None) as stage:
        (stage / "MARK").write_text("v1")
    (target / "sub").mkdir()
    (target / "sub" / "notes.txt").write_text("mine")
    (target / "empty").mkdir()
    os.symlink("/nonexistent", target / "link")
    assert list_entries(target) == ["MARK", "empty", "link", "sub/notes.txt"]
    owned = lambda p: {"MARK"}  # noqa: E731
    with pytest.raises(DestinationError, match=r"3 file\(s\) .*empty, link, sub/notes.txt"):
        with atomic_dir(target, owned=owned):
            pass
    sealed = []
    with atomic_dir(target, owned=owned, overwrite=True, seal=lambda st, kept: sealed.append(sorted(kept))) as stage:
        (stage / "MARK").write_text("v2")
    assert sealed == [["empty", "link", "sub/notes.txt"]]
    assert list_entries(target) == ["MARK", "empty", "link", "sub/notes.txt"]
    assert (target / "MARK").read_text() == "v2" and (target / "sub" / "notes.txt").read_text() == "mine"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_puts_kept_entries_back_when_it_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "MARK").write_text("v1")
    (target / "notes.txt").write_text("mine")

    def seal(stage, kept):  # runs once the kept files are in the staging folder
        assert (stage / "notes.txt").is_file()
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target, owned=lambda p: {"MARK"}, overwrite=True, seal=seal) as stage:
            (stage / "MARK").write_text("v2")
    assert (target / "notes.txt").read_text() == "mine" and (target / "MARK").read_text() == "v1"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out"]
    with pytest.raises(DestinationError, match=r"writes \['notes.txt'\]"):  # a kept name the new folder writes
        with atomic_dir(target, owned=lambda p: {"MARK"}, overwrite=True) as stage:
            (stage / "notes.txt").write_text("ours")
    assert (target / "notes.txt").read_text() == "mine" and sorted(q.name for q in tmp_path.iterdir()) == ["out"]


def test_staging_name_and_stale_leftovers(tmp_path, dead_pid):
    from minilib.io import remove_stale
    target = tmp_path / "m"
    with atomic_dir(target) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(f".m.staging-{os.getpid()}-")
        (stage / "MARK").write_text("v1")
    dead = dead_pid()
    # a writer killed between its two renames: the old folder is aside and nothing is at the target
    os.replace(target, tmp_path / f".m.old-{dead}-abc")
    (tmp_path / f".m.staging-{dead}-def").mkdir()
    (tmp_path / f".m.staging-{dead}-def" / "half").write_text("x")
    (tmp_path / f".m.staging-{os.getppid()}-ghi").mkdir()  # a live writer's: kept
    removed = remove_stale(target)
    assert [p.name for p in removed] == [f".m.staging-{dead}-def"]
    assert (target / "MARK").read_text() == "v1"  # put back
    assert sorted(q.name for q in tmp_path.iterdir()) == [f".m.staging-{os.getppid()}-ghi", "m"]
