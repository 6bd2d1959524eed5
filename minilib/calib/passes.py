"""Calibration passes: one hook mechanism feeding accumulators, over the whole model or block by block.

**Keys.**  A tap point is named by the block index and the module's path inside the block, as in
``"3.mlp.up_proj"``, or just ``"3"`` for the block itself.  The same keys are used by both passes, so
statistics from one can drive the other.  ``linear_keys`` lists every linear layer; ``ffn_keys``
names a block's FFN parts (the neurons are the *input* of ``down``).

**Whole-model pass** (``calibrate``): hooks on the tapped modules, the model runs over calibration
windows (or any batches of model inputs), each hook calls ``acc.add_batch(inp, out)``.

**Block-by-block pass** (``sequential_pass``): the inputs of every block are captured once, then each
block in turn is moved to ``device``, its accumulators are fed by running the calibration batches
through it, a callback acts on it (e.g. prunes it), and it is run again to produce the inputs of the
next block.  Only one block is ever in fast memory; the rest of the model stays where it is.
Optionally: held-out windows that flow through the same (changed) blocks and are only measured
(``heldout=``, ``step.feed(accs, heldout=True)``); block forwards under autocast in bf16/fp16 with the
activations between blocks kept in that dtype (``forward_dtype=``; accumulators stay fp32); the
activations kept on the CPU while the block runs on the GPU (``store="cpu"``).

Hooks are always added inside ``with`` blocks and removed, even when the body raises.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from minilib.calib.accumulators import Accumulator
from minilib.data.corpora import check_count
from minilib.device import Timer, model_device, resolve_device
from minilib.hooks import forward_hooks
from minilib.models.adapters import Adapter, adapter_for, get_path

Accs = Mapping[str, "Accumulator | list[Accumulator]"]


class CalibrationError(ValueError):
    """Calibration data that cannot support what was asked."""


# --- keys -------------------------------------------------------------------------------------

def key(block: int, path: str = "") -> str:
    return f"{block}.{path}" if path else str(block)


def split_key(k: str) -> tuple[int, str]:
    head, _, path = str(k).partition(".")
    try:
        return int(head), path
    except ValueError:
        raise KeyError(f"tap key {k!r} must start with a block index, e.g. '3.mlp.up_proj'") from None


def linear_keys(model: nn.Module, adapter: Adapter | None = None) -> dict[str, nn.Module]:
    """``{"<block>.<path>": linear layer}`` for every linear layer of every block."""
    adapter = adapter or adapter_for(model)
    return {key(i, n): m for i, b in enumerate(adapter.blocks(model)) for n, m in adapter.linear_layers(b).items()}


def ffn_keys(adapter: Adapter, block: int) -> dict[str, str]:
    """Keys of one block's FFN parts: ``{"up": "3.mlp.up_proj", "down": ..., ["gate": ...]}``."""
    return {part: key(block, p) for part, p in adapter.ffn_paths.items() if p is not None and part != "act"}


def resolve(model: nn.Module, k: str, adapter: Adapter | None = None) -> nn.Module:
    """The module a key names."""
    adapter = adapter or adapter_for(model)
    blocks = adapter.blocks(model)
    i, path = split_key(k)
    if not 0 <= i < len(blocks):
        raise KeyError(f"tap key {k!r}: the model has {len(blocks)} blocks (statistics from another model?)")
    try:
        return get_path(blocks[i], path) if path else blocks[i]
    except AttributeError:
        raise KeyError(f"tap key {k!r}: block {i} has no module {path!r} (statistics from another family?)") from None


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


@contextmanager
def feeding(modules: Mapping[str, nn.Module], accs: Accs, select: Callable | None = None, timer: Timer | None = None):
    """Hooks that call ``acc.add_batch(inp, out)`` for every accumulator of every key in ``accs``
    (``modules[key]`` is the tapped module).  ``select(tensor)`` may cut both sides first (e.g. to
    the decision token).  Several keys on one module share one hook."""
    by_module: dict[nn.Module, list[Accumulator]] = {}
    for k, a in accs.items():
        if k not in modules:
            raise KeyError(f"no module for tap key {k!r}")
        by_module.setdefault(modules[k], []).extend(a if isinstance(a, (list, tuple)) else [a])

    def hook_for(group):
        def hook(mod, args, out):
            inp, y = (args[0] if args else None), _first(out)
            if select is not None:
                inp, y = select(inp) if inp is not None else None, select(y)
            if timer is None:
                for a in group:
                    a.add_batch(inp, y)
            else:
                with timer("stats_s"):
                    for a in group:
                        a.add_batch(inp, y)
        return hook

    with forward_hooks({m: hook_for(g) for m, g in by_module.items()}):
        yield


# --- the whole-model pass ---------------------------------------------------------------------

def check_windows(windows, model: nn.Module | None = None, name: str = "calibration windows") -> torch.Tensor:
    """A non-empty ``[n, seqlen]`` integer tensor of token ids within the model's vocabulary and positions."""
    if not isinstance(windows, torch.Tensor):
        raise CalibrationError(f"{name} must be a [n, seqlen] LongTensor of token ids, got {type(windows).__name__}")
    if windows.dim() != 2 or windows.numel() == 0:
        raise CalibrationError(f"{name} must be a non-empty [n, seqlen] tensor, got shape {tuple(windows.shape)}")
    if windows.is_floating_point() or windows.dtype == torch.bool or windows.is_complex():
        raise CalibrationError(f"{name} must hold integer token ids, got dtype {windows.dtype}")
    if model is not None:
        adapter = adapter_for(model)
        vocab = adapter.input_embeddings(model).num_embeddings
        lo, hi = int(windows.min()), int(windows.max())
        if lo < 0 or hi >= vocab:
            raise CalibrationError(f"{name}: token ids must lie in [0, {vocab}) for this model, got [{lo}, {hi}]")
        maxpos = adapter.max_positions(model.config)
        if maxpos is not None and windows.shape[1] > maxpos:
            raise CalibrationError(f"{name}: seqlen {windows.shape[1]} is above the model's maximum positions "
                                   f"({maxpos})")
    return windows.long()


@torch.no_grad()
def calibrate(model: nn.Module, windows: torch.Tensor, accs: Accs, batch_size: int = 4,
              skip_first: int = 0) -> Accs:
    """Run ``model`` over calibration ``windows`` ``[n, seqlen]`` with every accumulator of ``accs``
    (keys as in the module docstring) fed by hooks; returns ``accs``.  The model runs where it is;
    the windows are moved to it.  ``skip_first``: positions at the start of every window that the
    accumulators do not see (an integer in ``[0, seqlen)``)."""
    windows = check_windows(windows, model)
    check_count(batch_size, "batch_size")
    check_count(skip_first, "skip_first", 0)
    if skip_first >= windows.shape[1]:
        raise ValueError(f"skip_first must be below the window length {windows.shape[1]} (allowed: 0.."
                         f"{windows.shape[1] - 1}), got {skip_first}: the accumulators would see no position")
    adapter = adapter_for(model)
    modules = {k: resolve(model, k, adapter) for k in accs}
    dev = model_device(model)
    was_training = model.training
    model.eval()
    select = None
    if skip_first:
        state = {}

        def select(x):
            return adapter.tokens_3d(x, *state["bt"])[:, skip_first:]
    try:
        with feeding(modules, accs, select):
            for s in range(0, len(windows), batch_size):
                x = windows[s:s + batch_size].to(dev)
                if skip_first:
                    state["bt"] = tuple(x.shape)
                model(input_ids=x)
    finally:
        model.train(was_training)
    return accs


# --- the block-by-block (sequential) pass ------------------------------------------------------

class _StopForward(Exception):
    pass


class _Catcher(nn.Module):
    """Stands in for block ``index``: records ``(args, kwargs)`` and returns the hidden states."""

    def __init__(self, index: int, block: nn.Module, record, last: bool):
        super().__init__()
        self.index, self.record, self.last = index, record, last
        object.__setattr__(self, "_wrapped", block)  # attribute look-ups fall through, not a submodule

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_wrapped"], name)

    def forward(self, *args, **kwargs):
        self.record(self.index, args, kwargs)
        if self.last:
            raise _StopForward
        return args[0] if args else kwargs["hidden_states"]


@contextmanager
def _catching(blocks: nn.ModuleList, record):
    originals = list(blocks)
    try:
        for i, b in enumerate(originals):
            blocks[i] = _Catcher(i, b, record, last=i == len(originals) - 1)
        yield
    finally:
        for i, b in enumerate(originals):
            blocks[i] = b


def _is_cache(obj) -> bool:
    return type(obj).__name__.endswith("Cache")


class DeviceMemo:
    """Moves tensors to one device, moving a tensor that is shared by several arguments only once.

    The memo is keyed by ``id(tensor)`` *and keeps the original tensor alive*, so an id can never be
    reused by another tensor while the memo exists (a memo keyed by bare ids hands later batches the
    moved copy of an unrelated, freed tensor)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, obj):
        if isinstance(obj, torch.Tensor):
            hit = self._memo.get(id(obj))
            if hit is not None and hit[0] is obj:
                return hit[1]
            moved = obj.to(self.device)
            self._memo[id(obj)] = (obj, moved)
            return moved
        if isinstance(obj, (tuple, list)):
            return type(obj)(self(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        return None if _is_cache(obj) else obj


@dataclass
class Captured:
    """Block-0 inputs per calibration batch, and every block's other arguments per batch."""
    hidden: list[torch.Tensor]                            # [batch] -> (B, T, C)
    args: list[list[tuple[tuple, dict]]]                  # [block][batch] -> (positional after hidden, kwargs)


def check_dtype(dtype, name: str = "forward_dtype") -> torch.dtype | None:
    """``None`` (the model's own dtype), or a floating torch dtype given as a dtype or its name
    (``"bfloat16"``, ``"bf16"``, ``"float16"``, ``"fp16"``, ``"float32"``)."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
    if isinstance(dtype, str) and dtype.strip().lower().removeprefix("torch.") in names:
        return names[dtype.strip().lower().removeprefix("torch.")]
    raise ValueError(f"{name} must be None (the model's dtype) or one of {sorted(names)} / a floating torch.dtype, "
                     f"got {dtype!r}")


def resolve_forward_dtype(forward_dtype, device: torch.device) -> torch.dtype | None:
    """``"auto"``: bfloat16 on a CUDA device that supports it, else ``None`` (the model's own dtype);
    anything else as ``check_dtype`` reads it."""
    if isinstance(forward_dtype, str) and forward_dtype.strip().lower() == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return check_dtype(forward_dtype)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for the block forwards: ``torch.autocast`` to ``dtype`` on ``device`` (weights
    stay in their own dtype; matmuls run in ``dtype``), or nothing when ``dtype`` is None or fp32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@torch.no_grad()
def capture_block_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int = 8,
                         device: torch.device | str | None = None, adapter: Adapter | None = None,
                         dtype: torch.dtype | None = None, store: torch.device | str | None = None) -> Captured:
    """Run the calibration ``windows`` ``[n, T]`` up to block 0 and record what every block receives
    (attention masks, position ids, rotary embeddings ... exactly as transformers passes them, per
    block), moved to ``device``.  The block-0 hidden states are kept on ``store`` (default ``device``)
    in ``dtype`` (default: as the embeddings produce them; a floating dtype or its name, as
    ``check_dtype`` reads it)."""
    windows = check_windows(windows, model)
    check_count(batch_size, "batch_size")
    dtype = check_dtype(dtype, "dtype")
    adapter = adapter or adapter_for(model)
    blocks = adapter.blocks(model)
    model_dev = model_device(model)
    device = torch.device(device) if device is not None else model_dev
    store = torch.device(store) if store is not None else device
    hidden, args = [], [[] for _ in blocks]
    move = DeviceMemo(device)

    def record(i, a, kw):
        kw = dict(kw)
        h = a[0] if a else kw.pop("hidden_states")
        if i == 0:
            hidden.append(h.to(store, dtype) if dtype is not None else h.to(store))
        args[i].append((move(tuple(a[1:])), move(kw)))

    call_kw = {"use_cache": False} if adapter.is_decoder else {}
    with _catching(blocks, record):
        for s in range(0, len(windows), batch_size):
            try:
                adapter.base(model)(input_ids=windows[s:s + batch_size].to(model_dev), **call_kw)
            except _StopForward:
                pass
    return Captured(hidden, args)


def run_block(block: nn.Module, hidden: torch.Tensor, args_kwargs) -> torch.Tensor:
    a, kw = args_kwargs
    out = block(hidden, *a, **kw)
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class BlockStep:
    """One block of the sequential pass, handed to the callback of ``sequential_pass``.

    ``inputs``/``args``: the calibration batches; ``heldout``/``heldout_args``: the held-out batches
    (``None`` without held-out windows), which are never used to choose anything, only measured."""

    index: int
    block: nn.Module
    inputs: list[torch.Tensor]
    args: list[tuple[tuple, dict]]
    adapter: Adapter
    timer: Timer
    outputs: list[torch.Tensor] | None = field(default=None)
    heldout: list[torch.Tensor] | None = field(default=None)
    heldout_args: list[tuple[tuple, dict]] | None = field(default=None)
    device: torch.device | None = field(default=None)      # where the block runs (default: the inputs' device)
    dtype: torch.dtype | None = field(default=None)        # autocast dtype of the forwards (None: the block's own)

    def modules(self, keys: Iterable[str]) -> dict[str, nn.Module]:
        """Resolve keys of this block (``"<index>.<path>"``) to its modules."""
        out = {}
        for k in keys:
            i, path = split_key(k)
            if i != self.index:
                raise KeyError(f"tap key {k!r} is not in block {self.index}")
            out[k] = get_path(self.block, path) if path else self.block
        return out

    def linear_keys(self) -> dict[str, nn.Module]:
        return {key(self.index, n): m for n, m in self.adapter.linear_layers(self.block).items()}

    def _run(self, hidden: torch.Tensor, args_kwargs) -> torch.Tensor:
        dev = self.device or hidden.device
        with autocast(dev, self.dtype):
            out = run_block(self.block, hidden.to(dev, non_blocking=True), args_kwargs)
        # keep the stream where and in the dtype the inputs are kept (e.g. bf16 on the CPU)
        return out.to(hidden.device, hidden.dtype) if (out.device, out.dtype) != (hidden.device, hidden.dtype) else out

    def _stream(self, heldout: bool):
        if not heldout:
            return self.inputs, self.args
        if self.heldout is None:
            raise ValueError("this pass has no held-out windows (sequential_pass(..., heldout=...))")
        return self.heldout, self.heldout_args

    @torch.no_grad()
    def feed(self, accs: Accs, batches: Iterable[int] | None = None, heldout: bool = False) -> None:
        """Run the calibration batches (``heldout=True``: the held-out batches) through the block with
        ``accs`` fed by hooks.  Calibration time goes to ``forward_s``/``stats_s``, held-out time
        (forward and statistics together) to ``heldout_s``."""
        mods = self.modules(accs.keys())
        inputs, args = self._stream(heldout)
        idx = range(len(inputs)) if batches is None else batches
        if heldout:
            with self.timer("heldout_s"), feeding(mods, accs):
                for b in idx:
                    self._run(inputs[b], args[b])
            return
        stats_before = self.timer.totals.get("stats_s", 0.0)
        with self.timer("forward_s"), feeding(mods, accs, timer=self.timer):
            for b in idx:
                self._run(inputs[b], args[b])
        # forward_s counts the block's own compute: take out the time spent in the accumulators
        self.timer.add("forward_s", -(self.timer.totals.get("stats_s", 0.0) - stats_before))

    @torch.no_grad()
    def forward(self, heldout: bool = False) -> list[torch.Tensor]:
        """The block's outputs for every calibration (or held-out) batch: the next block's inputs."""
        inputs, args = self._stream(heldout)
        with self.timer("heldout_s" if heldout else "forward_s"):
            return [self._run(h, a) for h, a in zip(inputs, args)]


@torch.no_grad()
def sequential_pass(model: nn.Module, windows: torch.Tensor, on_block: Callable[[BlockStep], None],
                    device: torch.device | str | None = "auto", batch_size: int = 8, timer: Timer | None = None,
                    progress: bool = False, desc: str = "blocks", heldout: torch.Tensor | None = None,
                    forward_dtype: torch.dtype | str | None = None,
                    store: torch.device | str | None = None) -> Timer:
    """Block by block: capture, then for each block ``on_block(step)`` (feed accumulators with
    ``step.feed``, then change the block), then rerun the block for the next block's inputs.

    ``device``: where each block runs (``"auto"``: CUDA when present); the model itself stays where it
    is, so models larger than the GPU can be processed one block at a time.  ``heldout``: windows
    that flow through the same (changed) blocks beside the calibration windows, for measuring on
    inputs that chose nothing (``step.feed(accs, heldout=True)``).  ``forward_dtype``: run the block
    forwards under ``torch.autocast`` in this dtype (``"bfloat16"``/``"float16"``; the weights keep
    their dtype and the activations between blocks are kept in it, halving their memory);
    accumulators still work in fp32.  ``store``: where the activations between blocks are kept
    (default: ``device``; ``"cpu"`` offloads them and moves one batch at a time).  Returns the ``Timer``
    (``capture_s``, ``forward_s``, ``stats_s``, ``heldout_s`` and whatever ``on_block`` timed)."""
    from tqdm.auto import tqdm
    windows = check_windows(windows, model)
    if heldout is not None:
        heldout = check_windows(heldout, model, "held-out windows")
    check_count(batch_size, "batch_size")
    forward_dtype = check_dtype(forward_dtype)
    adapter = adapter_for(model)
    dev = resolve_device(device)
    store = resolve_device(store) if store is not None else dev
    timer = timer or Timer(dev)
    was_training = model.training
    model.eval()
    try:
        with timer("capture_s"):
            cap = capture_block_inputs(model, windows, batch_size, dev, adapter, forward_dtype, store)
            ho = capture_block_inputs(model, heldout, batch_size, dev, adapter, forward_dtype, store) \
                if heldout is not None else None
        inps, ho_inps = cap.hidden, (ho.hidden if ho is not None else None)
        for bi, block in enumerate(tqdm(adapter.blocks(model), desc=desc, disable=not progress)):
            home = model_device(block)
            block.to(dev)
            try:
                step = BlockStep(bi, block, inps, cap.args[bi], adapter, timer,
                                 heldout=ho_inps, heldout_args=ho.args[bi] if ho is not None else None,
                                 device=dev, dtype=forward_dtype)
                on_block(step)
                inps = step.forward()
                if ho is not None:
                    ho_inps = step.forward(heldout=True)
            finally:
                block.to(home)
            cap.args[bi] = None  # this block's arguments are no longer needed
            if ho is not None:
                ho.args[bi] = None
    finally:
        model.train(was_training)
    return timer
