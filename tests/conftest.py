import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from minilib.hooks import count_hooks
from minilib.models import TINY, TINY_DECODERS, adapter_for, load, load_model
from minilib.models.linear import weight_oi
from minilib.prune import mask_threshold, score_neurons_l1

# at most 2 threads, shared out among pytest-xdist workers (make test runs 2 on 2 cores: 1 thread each)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))

# sample data shared by several test files (requested through the fixtures below)
TEXT = ("Once upon a time there was a little cat. The cat liked to play in the sun. "
        "One day the cat saw a big dog. The dog was kind and they played together all day. ") * 16
CAT_TEXT = "Once upon a time there was a little cat. The cat liked to play in the sun. " * 80
REVIEWS = ["the movie was great fun", "a dull, lifeless film", "what a waste of time and money",
           "surprisingly moving", "I loved every minute of it, really", "no"]
WORDS = {0: ["awful", "boring", "dull", "bad"], 1: ["great", "lovely", "superb", "good"]}


@pytest.fixture(scope="session")
def smollm2():
    """The embedded real decoder (SmolLM2-135M), loaded once per session."""
    return load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    return load("minilm-l6")


@pytest.fixture(params=TINY)
def tiny(request):
    """Each tiny random family in turn (fresh copy per test; the list is ``minilib.models.tiny.TINY``)."""
    return load(request.param)


@pytest.fixture(params=TINY_DECODERS)
def tiny_decoder(request):
    """Each tiny random decoder family in turn (``minilib.models.tiny.TINY_DECODERS``)."""
    return load(request.param)


@pytest.fixture(scope="session")
def tiny_text():
    """A short story (two sentences, 16 times): text for tiny-model windows, fine-tuning, vocabulary pruning."""
    return TEXT


@pytest.fixture(scope="session")
def cat_text():
    """One sentence, 80 times: a small corpus for vocabulary-pruned models."""
    return CAT_TEXT


@pytest.fixture
def reviews():
    """Six short review-like texts of different lengths (a fresh list per test)."""
    return list(REVIEWS)


@pytest.fixture(scope="session")
def toy_sentiment():
    """``toy_sentiment(n, seed=0)`` -> ``(texts, labels)``: a separable two-class set, the class is the
    sentiment of the words."""
    def toy(n, seed=0):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(WORDS[int(y)], 3)) + " film" for y in labels]
        return texts, labels
    return toy


@pytest.fixture(scope="session")
def windows():
    """``windows(tok, n=8, seqlen=32)``: the first ``n * seqlen`` tokens of ``TEXT`` as ``[n, seqlen]``."""
    def make(tok, n=8, seqlen=32):
        ids = torch.tensor(tok(TEXT, add_special_tokens=False)["input_ids"])
        return ids[: n * seqlen].view(n, seqlen)
    return make


@pytest.fixture(scope="session")
def logits():
    """``logits(model, x)``: the model's logits on ids ``x``, without gradients."""
    def run(model, x):
        with torch.no_grad():
            return model(input_ids=x).logits
    return run


@pytest.fixture(scope="session")
def mask_ffn_neurons():
    """``mask_ffn_neurons(model, st, eps, criterion="any")``: L1 neuron scores thresholded at ``eps``."""
    def mask(model, st, eps, criterion="any"):
        return mask_threshold(score_neurons_l1(model, st, criterion), eps)
    return mask


@pytest.fixture(scope="session")
def silence_neurons():
    """``silence_neurons(model, layer, idx)``: make FFN neurons ``idx`` of block ``layer`` output exactly zero
    (zero their up/gate rows; unlike ``minilib.prune.zero_neurons``, which zeroes their ``down`` columns)."""
    def silence(model, layer, idx):
        ffn = adapter_for(model).ffn(adapter_for(model).blocks(model)[layer])
        with torch.no_grad():
            for part in ("up", "gate"):
                lin = getattr(ffn, part)
                if lin is not None:
                    weight_oi(lin)[idx] = 0
                    if lin.bias is not None:
                        lin.bias.data[idx] = 0
    return silence


@pytest.fixture(scope="session")
def load_remapped_tokenizer():
    """``load_remapped_tokenizer(path, model)``: the saved model's tokenizer, checked against ``model``."""
    def load_tok(path, model):
        tok = load_model(path).tokenizer
        tok.check_model(model)
        return tok
    return load_tok


@pytest.fixture(scope="session")
def dead_pid():
    """``dead_pid()``: the pid of a process that has already exited."""
    def pid() -> int:
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        return p.pid
    return pid


@pytest.fixture
def no_hook_leak():
    """Use as: ``def test_x(tiny, no_hook_leak): ...; no_hook_leak(model)`` at the end."""
    def check(model, before=0):
        assert count_hooks(model) == before, "hooks leaked on the model"
    return check


def pytest_configure(config):
    # helpers beside the tests (e.g. the plain port of the reference SparseGPT) import by file name
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent / "prune"))
