"""A saved model is what save_model wrote, or an error naming the file: every file is hashed against
the manifest before use; save_model never deletes a file it did not write, and cleans up after
writers that were killed; load's arguments are checked; an unknown name fails at once offline."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minilib.io import DestinationError
from minilib.models import (CorruptModelError, PlanMismatchError, RemappedTokenizer, UnknownModelError, load,
                            load_model, save_model, token_counts)
from minilib.models.loading import hub_reachable
from minilib.models.saving import MANIFEST, SAVED, check_hashes, write_hashes
from minilib.prune import mask_vocab, remove_vocab

# every part save_model writes for a vocabulary-pruned model with a decision head
PARTS = ["model.safetensors", "config.json", "minilib_plan.json", "vocab_map.json", "decision_head.safetensors",
         "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, cat_text):
    """One vocabulary-pruned tiny model with a head, saved once; tests corrupt copies of it."""
    m = load("tiny-llama")
    ids = torch.tensor(m.tokenizer(cat_text, add_special_tokens=False)["input_ids"])
    tok, _ = remove_vocab(m.model, m.tokenizer, mask_vocab(token_counts(ids, 50257), m.tokenizer))
    torch.manual_seed(0)
    path = save_model(m.model, tok, tmp_path_factory.mktemp("saved") / "m", head=torch.nn.Linear(64, 2))
    return path, m.model, tok, ids


@pytest.fixture
def copy(saved, tmp_path):
    return Path(shutil.copytree(saved[0], tmp_path / "m"))


def _flip(f: Path, at: float = 0.5) -> None:
    """One byte changed in place: same size, and the mtime put back as it was."""
    st = f.stat()
    data = bytearray(f.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0x01
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- 1. hashes recorded at save, checked at load ---------------------------------------------------

def test_manifest_lists_every_file_with_its_sha256(saved):
    import hashlib
    path = saved[0]
    man = json.loads((path / MANIFEST).read_text())
    assert man["minilib"] == SAVED and man["kept"] == []
    on_disk = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(man["files"]) == on_disk and set(PARTS) <= set(on_disk)
    for rel, info in man["files"].items():
        data = (path / rel).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel


def test_intact_copy_loads_with_the_same_logits(saved, copy, logits):
    _, model, tok, ids = saved
    back = load(copy)
    assert isinstance(back.tokenizer, RemappedTokenizer) and back.head is not None
    x = torch.tensor(tok.map_ids(ids[:40].tolist()))[None]
    torch.testing.assert_close(logits(back.model, x), logits(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("part", PARTS)
def test_one_flipped_byte_in_any_part_is_an_error_naming_it(copy, part):
    """Same size, mtime restored: only the hash can tell (a flipped byte in the weights used to load
    with logits off by 0.0045 and no warning)."""
    _flip(copy / part)
    for loader in (load, load_model):
        with pytest.raises(CorruptModelError, match=rf"is corrupted or was edited.*{part} fails its sha256 check"):
            loader(copy)


@pytest.mark.parametrize("part, damage", [
    ("model.safetensors", "truncate"), ("decision_head.safetensors", "truncate"), ("vocab_map.json", "garbage"),
    ("vocab_map.json", "empty"), ("config.json", "garbage"), ("minilib_plan.json", "edit"),
    ("tokenizer.json", "empty"), ("model.safetensors", "delete"), ("vocab_map.json", "delete"),
])
def test_every_damaged_part_is_an_error_naming_it(copy, part, damage):
    f = copy / part
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "garbage":
        f.write_bytes(b"\x00garbage" * 3)
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "edit":
        plan = json.loads(f.read_text())
        plan["extra"] = {"note": "edited"}
        f.write_text(json.dumps(plan, indent=1))
    else:
        f.unlink()
    what = "is missing" if damage == "delete" else "has size"
    with pytest.raises(CorruptModelError, match=rf"{part} {what}"):
        load(copy)


@pytest.mark.parametrize("part, damage, match", [
    ("model.safetensors", "truncate", "model.safetensors is not the tensors"),
    ("decision_head.safetensors", "truncate", "decision_head.safetensors is not a readable safetensors"),
    ("vocab_map.json", "garbage", "vocab_map.json is not a vocabulary map"),
    ("vocab_map.json", "empty", "vocab_map.json is not a vocabulary map"),
    ("vocab_map.json", "{}", "vocab_map.json is not a vocabulary map"),
    ("vocab_map.json", '{"kept": [1, 2], "old_size": 9, "fallback": "bytes", "fallback_id": 0}',
     "vocab_map.json is not a vocabulary map"),
    ("config.json", "garbage", "config.json is not a readable model config"),
])
def test_damage_behind_a_rewritten_manifest_is_still_an_error_naming_the_file(copy, part, damage, match):
    """If the manifest was rewritten to match (a tool that 'repairs' hashes), reading each part still
    fails with its name, never a half-loaded model."""
    f = copy / part
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size - 7])
    elif damage == "garbage":
        f.write_bytes(b"\x00garbage" * 3)
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.write_text(damage)
    write_hashes(copy, SAVED)
    with pytest.raises(CorruptModelError, match=match):
        load(copy)


def test_edited_or_missing_manifest_is_an_error(copy):
    man = json.loads((copy / MANIFEST).read_text())
    man["files"]["config.json"]["sha256"] = "0" * 64  # an edited hash: the file it names no longer matches
    (copy / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(CorruptModelError, match="config.json fails its sha256 check"):
        load(copy)
    (copy / MANIFEST).write_text("{broken")
    with pytest.raises(CorruptModelError, match=rf"manifest of {copy} is unreadable"):
        load(copy)
    (copy / MANIFEST).write_text(json.dumps({**man, "minilib": "export"}))
    with pytest.raises(CorruptModelError, match="written for minilib='export'"):
        load(copy)
    (copy / MANIFEST).unlink()  # e.g. saved by a minilib without hashes: cannot be verified
    with pytest.raises(CorruptModelError, match=r"has no \.minilib-manifest\.json: it was written before"):
        load(copy)
    with pytest.raises(TypeError, match="verify must be True or False"):
        load_model(copy, verify="no")
    with pytest.warns(UserWarning, match="without checking its content"):
        rescued = load_model(copy, verify=False)  # the documented rescue: load once unchecked, save again
    assert rescued.plan == json.loads((copy / "minilib_plan.json").read_text())


def test_an_added_file_is_an_error_naming_it(copy):
    (copy / "special_tokens_map.json").write_text("{}")  # transformers would read it
    with pytest.raises(CorruptModelError, match=r"does not list: \['special_tokens_map.json'\]"):
        load(copy)


def test_the_check_hashes_every_byte_once(saved):
    """The check reads every byte of every listed file once (tiny model: ~5 MB)."""
    path = saved[0]
    total = sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name != MANIFEST)
    res = check_hashes(path)
    assert res.hashed == res.files == len(json.loads((path / MANIFEST).read_text())["files"])
    assert res.hashed_bytes == total  # every byte hashed once (its cost: check_hashes' docstring)


# --- 3. never delete what the library did not write -----------------------------------------------

def test_save_over_a_saved_model_with_a_user_file_refuses_and_keeps_everything(copy, saved):
    model, tok = saved[1], saved[2]
    (copy / "notes").mkdir()
    (copy / "notes" / "thesis.tex").write_text("do not delete")
    (copy / "empty").mkdir()
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    with pytest.raises(DestinationError, match=r"2 file\(s\) that were not written by .*empty, notes/thesis.tex"):
        save_model(model, tok, copy)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before and (copy / "empty").is_dir()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["m"]  # no staging left


def test_overwrite_keeps_user_files_and_verifies_them_with_the_folder(copy, saved):
    model, tok = saved[1], saved[2]
    (copy / "notes.txt").write_text("mine")
    save_model(model, tok, copy, extra={"v": 2}, overwrite=True)
    assert (copy / "notes.txt").read_text() == "mine"
    man = json.loads((copy / MANIFEST).read_text())
    assert man["kept"] == ["notes.txt"] and "notes.txt" in man["files"]
    assert load(copy).plan["extra"] == {"v": 2}
    with pytest.raises(DestinationError, match="notes.txt"):  # still not ours: refused without overwrite
        save_model(model, tok, copy)
    save_model(model, tok, copy, extra={"v": 3}, overwrite=True)
    assert (copy / "notes.txt").read_text() == "mine" and load(copy).plan["extra"] == {"v": 3}
    (copy / "notes.txt").write_text("edited")
    with pytest.raises(CorruptModelError, match="notes.txt"):
        load(copy)


def test_overwrite_refuses_a_user_file_the_save_would_replace(tmp_path, saved):
    model, tok = saved[1], saved[2]
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.json").write_text('{"mine": true}')
    with pytest.raises(DestinationError, match=r"writes \['config.json'\]"):
        save_model(model, tok, target, overwrite=True)
    assert [p.name for p in target.iterdir()] == ["config.json"]
    assert (target / "config.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_folder_with_an_unreadable_manifest_is_not_ours(copy, saved):
    (copy / MANIFEST).write_text("garbage")
    with pytest.raises(DestinationError, match="model.safetensors"):  # no proof it wrote them: all refused
        save_model(saved[1], saved[2], copy)
    assert (copy / "model.safetensors").is_file()


def test_saving_over_its_own_folder_replaces_it_whole(copy, saved):
    save_model(saved[1], saved[2], copy, extra={"v": 9})
    assert load(copy).plan["extra"] == {"v": 9}
    assert sorted(p.name for p in copy.parent.iterdir()) == ["m"]


# --- 4. killed writes leave no litter --------------------------------------------------------------

def test_stale_staging_folders_of_dead_writers_are_removed(tmp_path, saved, dead_pid):
    dead, alive = dead_pid(), os.getppid()
    target = save_model(saved[1], saved[2], tmp_path / "m")
    litter = [tmp_path / f".m.staging-{dead}-abc123", tmp_path / f".m.old-{dead}-x9"]
    keep = [tmp_path / f".m.staging-{alive}-abc",         # its writer is still running
            tmp_path / f".m.staging-{os.getpid()}-zz",     # this very process
            tmp_path / f".m2.staging-{dead}-abc",          # another target
            tmp_path / ".m.staging-notapid-abc",           # not our name pattern
            tmp_path / f".m.staging-{dead}",               # no random part
            tmp_path / "m.staging-1-abc"]                  # not hidden: not ours
    for d in litter + keep:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / f".m.staging-{dead}-file").write_text("a file, not a staging folder")
    save_model(saved[1], saved[2], target)
    assert not any(d.exists() for d in litter)
    assert all((d / "model.safetensors").is_file() for d in keep)
    assert (tmp_path / f".m.staging-{dead}-file").is_file()
    assert load(target).plan is not None


def test_a_killed_save_leaves_a_staging_folder_that_the_next_save_removes(tmp_path, saved):
    """A writer killed (SIGKILL) inside the staging folder: its litter has our name pattern and its pid."""
    code = ("import os, signal, sys; from minilib.io import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as st:\n"
            "    (st / 'model.safetensors').write_bytes(b'x' * 100000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    target = tmp_path / "m"
    r = subprocess.run([sys.executable, "-c", code, str(target)], cwd=Path(__file__).parents[2])
    assert r.returncode == -9
    (stale,) = tmp_path.iterdir()
    assert stale.name.startswith(".m.staging-") and (stale / "model.safetensors").is_file()
    save_model(saved[1], saved[2], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# --- 5. load's arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad, err", [(0, ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError),
                                      ("2", TypeError)])
def test_num_labels_must_be_a_positive_int(bad, err):
    with pytest.raises(err, match="num_labels must be an integer >= 1"):
        load("tiny-gpt2", task="sequence-classification", num_labels=bad)


def test_num_labels_only_with_sequence_classification_and_task_checked():
    with pytest.raises(ValueError, match="num_labels=3 is only used with task='sequence-classification'"):
        load("tiny-gpt2", num_labels=3)
    with pytest.raises(ValueError, match="unknown task 'classify'"):
        load("tiny-gpt2", task="classify")
    m = load("tiny-gpt2", task="sequence-classification", num_labels=3)
    assert m.model.config.num_labels == 3


@pytest.mark.parametrize("name, want", [("float16", torch.float16), ("bf16", torch.bfloat16),
                                        ("fp32", torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_dtype_names_are_accepted(name, want):
    assert next(load("tiny-opt", dtype=name).model.parameters()).dtype == want


@pytest.mark.parametrize("bad", ["int8", "float64x", torch.int64, 16])
def test_bad_dtype_is_an_error_listing_the_allowed_names(bad, saved):
    with pytest.raises(ValueError, match=r"dtype must be .*'bf16'.*'float16'"):
        load("tiny-opt", dtype=bad)
    with pytest.raises(ValueError, match=r"dtype must be .*'bf16'"):
        load_model(saved[0], dtype=bad)


def test_saved_model_loads_in_a_named_dtype(saved):
    assert next(load(saved[0], dtype="bf16").model.parameters()).dtype == torch.bfloat16


# --- 6. an unknown name fails at once when the hub cannot be reached -------------------------------

def test_unknown_name_offline_fails_fast_with_a_clear_error():
    """Before: ~24 s of hub retries on this offline machine.  The probe waits at most ~2.5 s; the bound
    is generous (8 s) because the machine is shared with long measurement runs."""
    hub_reachable.cache_clear()
    t = time.perf_counter()
    with pytest.raises(UnknownModelError) as e:
        load("smolm2-135m")  # a typo of an embedded name
    took = time.perf_counter() - t
    msg = str(e.value)
    assert "'smolm2-135m'" in msg and "smollm2-135m" in msg and "tiny-gpt2" in msg
    if not hub_reachable():
        assert "the Hugging Face hub could not be reached" in msg
        assert took < 8, f"{took:.1f} s"


def test_offline_flag_skips_the_probe(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_reachable.cache_clear()
    try:
        t = time.perf_counter()
        assert hub_reachable() is False
        with pytest.raises(UnknownModelError, match="could not be reached"):
            load("nobody/no-such-model")
        assert time.perf_counter() - t < 8
    finally:
        hub_reachable.cache_clear()


def test_probe_of_a_closed_port_is_quick():
    t = time.perf_counter()
    assert hub_reachable("http://127.0.0.1:9", timeout=1.0) is False
    assert time.perf_counter() - t < 3


def test_corrupt_model_error_is_a_plan_mismatch():
    assert issubclass(CorruptModelError, PlanMismatchError) and issubclass(CorruptModelError, ValueError)
