import os

import pytest
import torch

from minilib.hooks import count_hooks
from minilib.models import load

# at most 2 threads, shared out among pytest-xdist workers (make test runs 2 on 2 cores: 1 thread each)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))


@pytest.fixture(scope="session")
def smollm2():
    """The embedded real decoder (SmolLM2-135M), loaded once per session."""
    return load("smollm2-135m")


@pytest.fixture(scope="session")
def minilm():
    return load("minilm-l6")


@pytest.fixture(params=["tiny-gpt2", "tiny-bert", "tiny-opt", "tiny-llama", "tiny-phi", "tiny-gemma3"])
def tiny(request):
    """Each tiny random family in turn (fresh copy per test)."""
    return load(request.param)


@pytest.fixture(params=["tiny-gpt2", "tiny-opt", "tiny-llama", "tiny-phi", "tiny-gemma3"])
def tiny_decoder(request):
    return load(request.param)


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
