"""Calibration passes: keys, one hook mechanism, the whole-model and the block-by-block pass give the
same statistics, hooks never leak, tensors moved between devices stay the right tensors."""

import pytest
import torch

from minilib.calib import (AbsMean, CalibrationError, DeviceMemo, Hessian, calibrate, feeding, ffn_keys, key,
                           linear_keys, resolve, sequential_pass)
from minilib.hooks import count_hooks
from minilib.models import load


def _windows(n=4, t=24, seed=0):
    return torch.randint(0, 1000, (n, t), generator=torch.Generator().manual_seed(seed))


def test_keys_name_modules(tiny):
    m, _, ad = tiny
    keys = linear_keys(m)
    n_lin = sum(len(ad.linear_layers(b)) for b in ad.blocks(m))
    assert len(keys) == n_lin and all(resolve(m, k) is mod for k, mod in keys.items())
    fk = ffn_keys(ad, 1)
    assert resolve(m, fk["down"]) is ad.ffn(ad.blocks(m)[1]).down
    assert resolve(m, key(0)) is ad.blocks(m)[0]
    with pytest.raises(KeyError, match="has 2 blocks"):
        resolve(m, "5.mlp")
    with pytest.raises(KeyError, match="no module"):
        resolve(m, "0.nonexistent")
    with pytest.raises(KeyError, match="block index"):
        resolve(m, "mlp.up_proj")


def _accs(m, ad):
    from minilib.models.linear import in_features, out_features
    return {k: [AbsMean(out_features(mod), "output"), Hessian(in_features(mod))] for k, mod in linear_keys(m).items()}


def test_whole_model_and_sequential_pass_agree(tiny_decoder, no_hook_leak):
    """The same accumulators under the same keys, fed by either pass, hold the same statistics
    (nothing is pruned in between)."""
    m, _, ad = tiny_decoder
    x = _windows()
    whole = calibrate(m, x, _accs(m, ad), batch_size=2)
    seq = _accs(m, ad)

    def on_block(step):
        step.feed({k: v for k, v in seq.items() if k.startswith(f"{step.index}.")})
    sequential_pass(m, x, on_block, device="cpu", batch_size=2)
    for k in whole:
        for a, b in zip(whole[k], seq[k]):
            assert a.tokens == b.tokens == x.numel()
        torch.testing.assert_close(whole[k][0].mean(), seq[k][0].mean(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(whole[k][1].H, seq[k][1].H, rtol=1e-4, atol=1e-3)
    no_hook_leak(m)


def test_hooks_removed_when_an_accumulator_raises(tiny_decoder):
    m, _, ad = tiny_decoder

    class Bad(AbsMean):
        def add_batch(self, inp, out):
            raise RuntimeError("bad accumulator")
    k = next(iter(linear_keys(m)))
    with pytest.raises(RuntimeError, match="bad accumulator"):
        calibrate(m, _windows(), {k: Bad(4)})
    assert count_hooks(m) == 0
    with pytest.raises(KeyError):
        with feeding({}, {k: Bad(4)}):
            pass


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 8), "integer token ids"),
    (torch.zeros(0, 8, dtype=torch.long), "non-empty"),
    (torch.full((2, 8), 60000), r"\[0, 50257\)"),
    (torch.zeros(1, 300, dtype=torch.long), "maximum positions"),
    ([[1, 2, 3]], "LongTensor"),
])
def test_bad_calibration_windows(bad, match):
    m = load("tiny-llama").model
    with pytest.raises(CalibrationError, match=match):
        calibrate(m, bad, {})


def test_device_memo_never_confuses_tensors():
    """Moving each batch's arguments with one memo: a tensor freed after its batch must not hand its
    id -- and its moved copy -- to a later tensor.  (A memo keyed by bare ``id()`` did exactly that:
    308 of 1,650 captured arguments were wrong with the model on the CPU and blocks on CUDA.)"""
    move = DeviceMemo("meta")  # .to("meta") always makes a new tensor, like a CPU -> CUDA copy
    for i in range(500):
        t = torch.zeros(i % 13 + 1, 3)   # freed at the next iteration: its id is free for reuse
        moved = move((t, {"mask": t, "other": torch.ones(2)}))
        assert moved[0].shape == t.shape and moved[1]["mask"] is moved[0]  # shared tensors move once
        assert moved[1]["other"].shape == (2,)


def test_device_memo_skips_caches_and_keeps_plain_values():
    class DynamicCache:
        pass
    move = DeviceMemo("cpu")
    out = move({"past_key_values": DynamicCache(), "flag": True, "n": 3})
    assert out == {"past_key_values": None, "flag": True, "n": 3}


def test_sequential_pass_leaves_the_model_where_it_is():
    m = load("tiny-llama", device="cpu").model
    seen = []
    sequential_pass(m, _windows(), lambda step: seen.append((step.index, next(step.block.parameters()).device.type)),
                    device="cpu")
    assert seen == [(0, "cpu"), (1, "cpu")] and next(m.parameters()).device.type == "cpu"


def test_heldout_windows_flow_through_the_changed_blocks():
    """Held-out windows are captured beside the calibration ones and flow through each block *after*
    the callback changed it: their inputs at block i are what the changed model computes there."""
    m, _, ad = load("tiny-llama")
    calib, held = _windows(4, 24, 0), _windows(3, 16, 1)
    seen, fed = {}, {}

    def on_block(step):
        seen[step.index] = [h.clone() for h in step.heldout]
        k = f"{step.index}.mlp.down_proj"
        acc = {k: Hessian(resolve(m, k).in_features)}
        step.feed(acc, heldout=True)
        fed[step.index] = acc[k].tokens
        resolve(m, k).weight.data.mul_(0.5)  # change the block before its outputs are computed
    timer = sequential_pass(m, calib, on_block, device="cpu", batch_size=2, heldout=held)
    assert fed == {0: held.numel(), 1: held.numel()} and timer.totals["heldout_s"] > 0
    with torch.no_grad():  # the changed model, run whole on the held-out windows
        hs = ad.base(m)(input_ids=held, output_hidden_states=True).hidden_states
    for i in (0, 1):
        torch.testing.assert_close(torch.cat(seen[i]), hs[i], rtol=1e-4, atol=1e-5)


def test_heldout_feed_needs_heldout_windows():
    m = load("tiny-llama").model

    def on_block(step):
        step.feed({f"{step.index}.mlp.down_proj": Hessian(128)}, heldout=True)
    with pytest.raises(ValueError, match="no held-out windows"):
        sequential_pass(m, _windows(), on_block, device="cpu")


def test_bf16_forwards_keep_weights_and_fp32_statistics():
    """forward_dtype='bfloat16': the block forwards run under autocast and the activations between
    blocks are kept in bf16, the weights stay fp32 and untouched, the Hessians are fp32 and close to
    the fp32 pass (bf16 keeps 8 bits of mantissa)."""
    m, _, ad = load("tiny-llama")
    w0 = {k: v.clone() for k, v in m.state_dict().items()}
    x = _windows(4, 32)
    out = {}
    for dt in (None, "bfloat16"):
        accs = {k: Hessian(mod.in_features) for k, mod in linear_keys(m).items()}
        dtypes = []

        def on_block(step):
            dtypes.append(step.inputs[0].dtype)
            step.feed({k: v for k, v in accs.items() if k.startswith(f"{step.index}.")})
        sequential_pass(m, x, on_block, device="cpu", forward_dtype=dt)
        out[dt] = (accs, dtypes)
    assert out[None][1] == [torch.float32] * 2 and out["bfloat16"][1] == [torch.bfloat16] * 2
    for k, a in out["bfloat16"][0].items():
        ref = out[None][0][k].H
        assert a.H.dtype == torch.float32
        assert float((a.H - ref).norm() / ref.norm()) < 0.05, k
    assert all(torch.equal(v, w0[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("bad", ["int8", "bf17", torch.int32, 3])
def test_bad_forward_dtype_is_named(bad):
    m = load("tiny-llama").model
    with pytest.raises(ValueError, match="forward_dtype"):
        sequential_pass(m, _windows(), lambda step: None, device="cpu", forward_dtype=bad)


def test_offloaded_activations_give_the_same_statistics():
    """store='cpu' keeps the activations on the CPU and moves one batch at a time to the device; on a
    CPU-only machine both are the CPU, so this checks the code path gives identical statistics."""
    m, _, _ = load("tiny-llama")
    x = _windows(4, 24)
    res = []
    for store in (None, "cpu"):
        accs = {k: Hessian(mod.in_features) for k, mod in linear_keys(m).items()}
        sequential_pass(m, x, lambda step: step.feed({k: v for k, v in accs.items() if k.startswith(f"{step.index}.")}),
                        device="cpu", store=store)
        res.append(accs)
    assert all(torch.equal(res[0][k].H, res[1][k].H) for k in res[0])
