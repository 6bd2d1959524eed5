"""Hooks only through context managers (minilib.hooks): they run inside the context and are gone after
it, even when the body raises or a registration fails half-way; count_hooks / assert_no_hooks."""
import pytest
import torch
from torch import nn

from minilib.hooks import assert_no_hooks, count_hooks, forward_hooks, forward_pre_hooks
from minilib.models import tiny_model


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _n(m):  # hooks counted straight from torch's dicts
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())


def test_forward_hooks_see_each_output_inside_the_context_only():
    net, x = _net(), torch.randn(5, 3)
    seen = []
    with forward_hooks({net[0]: lambda m, a, out: seen.append(("0", out.shape)),
                        net[2]: lambda m, a, out: seen.append(("2", out.shape))}):
        assert count_hooks(net) == 2 == _n(net)
        net(x)
    assert seen == [("0", (5, 4)), ("2", (5, 2))]
    assert count_hooks(net) == 0 == _n(net)
    net(x)
    assert len(seen) == 2  # gone: not called after the context
    assert_no_hooks(net)


def test_a_forward_hook_can_replace_the_output():
    net, x = _net(), torch.randn(5, 3)
    want = net(x)
    with forward_hooks({net[0]: lambda m, a, out: torch.zeros_like(out)}):
        got = net(x)
    torch.testing.assert_close(got, net[2](torch.zeros(5, 4)))
    torch.testing.assert_close(net(x), want)


def test_pre_hooks_can_change_the_input():
    net, x = _net(), torch.randn(5, 3)
    with forward_pre_hooks({net[0]: lambda m, args: (args[0] * 0,)}):
        got = net(x)
    torch.testing.assert_close(got, net(torch.zeros(5, 3)))
    assert count_hooks(net) == 0


def test_with_kwargs_passes_the_keyword_arguments():
    class Scale(nn.Module):
        def forward(self, x, factor=1.0):
            return x * factor

    m = Scale()
    got = {}

    def pre(mod, args, kwargs):
        got["pre"] = dict(kwargs)
        return args, {**kwargs, "factor": 3.0}

    def post(mod, args, kwargs, out):
        got["post"] = dict(kwargs)

    with forward_pre_hooks({m: pre}, with_kwargs=True), forward_hooks({m: post}, with_kwargs=True):
        assert count_hooks(m) == 2
        out = m(torch.ones(2), factor=2.0)
    assert got == {"pre": {"factor": 2.0}, "post": {"factor": 3.0}}
    assert torch.equal(out, torch.full((2,), 3.0))
    assert count_hooks(m) == 0 and not m._forward_hooks_with_kwargs and not m._forward_pre_hooks_with_kwargs


@pytest.mark.parametrize("ctx", [forward_hooks, forward_pre_hooks])
def test_hooks_are_removed_when_the_body_raises(ctx):
    net = _net()
    with pytest.raises(ZeroDivisionError):
        with ctx({net[0]: lambda *a: None, net[2]: lambda *a: None}):
            assert count_hooks(net) == 2
            1 / 0
    assert count_hooks(net) == 0
    assert_no_hooks(net)


@pytest.mark.parametrize("ctx", [forward_hooks, forward_pre_hooks])
def test_hooks_are_removed_when_a_hook_raises_during_the_forward(ctx):
    net = _net()

    def boom(*a):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with ctx({net[2]: boom}):
            net(torch.randn(1, 3))
    assert count_hooks(net) == 0


@pytest.mark.parametrize("ctx", [forward_hooks, forward_pre_hooks])
def test_a_failed_registration_removes_the_hooks_already_registered(ctx):
    net = _net()
    hooks = {net[0]: lambda *a: None, net[1]: lambda *a: None, "not a module": lambda *a: None}
    with pytest.raises(AttributeError):
        with ctx(hooks):
            pytest.fail("the body must not run")
    assert count_hooks(net) == 0


def test_hooks_that_were_there_before_stay():
    net = _net()
    own = net[0].register_forward_hook(lambda *a: None)
    with forward_hooks({net[0]: lambda *a: None}):
        assert count_hooks(net) == 2
    assert count_hooks(net) == 1 and list(net[0]._forward_hooks) == [own.id]
    with pytest.raises(AssertionError, match=r"1 hook\(s\) left on the model"):
        assert_no_hooks(net)
    own.remove()
    assert_no_hooks(net)


def test_count_hooks_counts_forward_pre_and_backward_hooks():
    net = _net()
    hs = [net[0].register_forward_hook(lambda *a: None), net[1].register_forward_pre_hook(lambda *a: None),
          net[2].register_full_backward_hook(lambda *a: None), net.register_forward_hook(lambda *a: None)]
    assert count_hooks(net) == 4
    with pytest.raises(AssertionError, match=r"4 hook\(s\) left"):
        assert_no_hooks(net)
    for h in hs:
        h.remove()
    assert count_hooks(net) == 0


def test_count_hooks_counts_backward_pre_hooks():
    net = _net()
    net[2].register_full_backward_pre_hook(lambda *a: None)
    assert count_hooks(net) == 1


def test_hooks_on_a_tiny_model_leave_no_trace(no_hook_leak):
    model, tok = tiny_model("tiny-gpt2")
    ids = torch.tensor([tok.encode("hello world")])
    want = model(ids).logits
    outs = {}
    mods = {b.mlp: (lambda m, a, o, i=i: outs.__setitem__(i, o.shape)) for i, b in enumerate(model.transformer.h)}
    with pytest.raises(KeyError):
        with forward_hooks(mods), forward_pre_hooks({model.transformer.h[0]: lambda m, a: None}):
            assert count_hooks(model) == 3
            model(ids)
            raise KeyError("stop")
    assert outs == {0: (1, ids.shape[1], 64), 1: (1, ids.shape[1], 64)}
    no_hook_leak(model)
    torch.testing.assert_close(model(ids).logits, want)
