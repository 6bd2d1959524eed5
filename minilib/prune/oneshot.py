"""One-shot pruning of every linear layer of every block by any method of ``minilib.prune.methods``
(magnitude, Wanda, RIA, DSnoT, SparseGPT).

    report = prune_model(model, "sparsegpt", sparsity=0.5, calib=windows)        # unstructured 50%
    report = prune_model(model, "wanda", nm=(2, 4), calib=windows)               # 2 zeros in every 4
    report = prune_model(model, "sparsegpt", sparsity=0.5, wbits=4, calib=windows, device="cuda")
    report = prune_model(model, "sparsegpt", calib=windows, masks={"3.mlp.up_proj": m, ...})
    report = prune_model(model, "wanda", 0.5, calib=windows, heldout=other_windows)  # + held-out error
    report = prune_model(model, "ria", 0.5, calib=windows, options={"a": 0.5})   # a method's own options
    report = prune_model(model, "ria", nm="2:4", calib=windows, options={"permute": "lsa"})  # N:M along a
    report.permutations    # channel permutation per layer: {key: LongTensor [in]} (weights stay in memory order)
    report = prune_model(model, "sparsegpt", 0.5, calib=windows, forward_dtype="bfloat16")  # GPU-style
    report.layers          # DataFrame: block, group, layer, out, in, params, zeros, sparsity, error, rel_error
                           # (+ heldout_error, heldout_rel_error with heldout=...)
    report.overall         # params, zeros, sparsity of the pruned layers; timings in report.timings

It is the block-by-block calibration pass of ``minilib.calib.sequential_pass``: per block, the
calibration batches run through it with hooks feeding one accumulator per distinct layer input
(layers that read the very same tensor, e.g. q/k/v or gate/up, share one), every layer is pruned,
and the block is rerun for the next block's inputs.  Only one block is on ``device`` at a time.

Methods are the entries of ``minilib.prune.methods.METHODS``: ``magnitude`` (|W| per layer),
``wanda`` (|W|·||X|| per output row), ``ria`` (relative importance times activations), ``dsnot``
(Wanda's, magnitude's or SparseGPT's saliency's mask refined by swaps, unstructured or N:M), ``sparsegpt`` (OBS reconstruction); the entry says which calibration statistic the pass accumulates and which
options the method takes (``options=``; SparseGPT's ``blocksize``/``percdamp`` may also be given as
keywords).  Each prunes unstructured at ``sparsity`` in [0, 1) or N:M (``nm=(n, m)``: ``n`` zeros in
each ``m`` consecutive inputs; ``sparsity`` must then be left at its default or equal ``n / m``).
``wbits < 16`` quantizes per channel: jointly inside the SparseGPT solver, round-to-nearest after
masking for the others.  ``masks`` fixes the mask of some layers (keys as in
``minilib.calib``, True = prune), from any other criterion: with ``sparsegpt`` OBS reconstructs the
rest of the layer around it, with the other methods the mask is applied as it is.

Errors.  ``error``/``rel_error`` are measured on the calibration inputs (by default only for
SparseGPT, whose Hessians exist anyway; ``measure_error=True`` for the others), which favours
SparseGPT by construction: it minimised exactly that.  ``heldout=`` windows give the same error on
inputs that chose nothing (``heldout_error``/``heldout_rel_error``), captured alongside the
calibration windows and flowing through the same pruned blocks.

Precision and memory.  Hessians and the solver are fp32 always.  ``forward_dtype="bfloat16"`` (or
``"float16"``) runs the block forwards under autocast and keeps the activations between blocks in
that dtype (half the memory); the weights keep their dtype, so nothing is rounded by the pass
itself.  ``hessian_precision="tf32"`` lets CUDA tensor cores read the ``X X^T`` inputs in TF32.
``offload=True`` keeps the activations on the CPU while the block runs on the GPU.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from minilib.calib.accumulators import (HESSIAN_PRECISIONS, Hessian, HessianMoments, InputMoments, InputSqNorms,
                                        LastBatch)
from minilib.calib.passes import (BlockStep, CalibrationError, check_windows, key, resolve_forward_dtype,
                                  sequential_pass)
from minilib.data.corpora import check_count
from minilib.device import Timer, model_device, resolve_device
from minilib.models.adapters import adapter_for
from minilib.models.linear import in_features, weight_oi
from minilib.prune.allocation import check_layer_sparsities, implied_sparsity, is_layer_list
from minilib.prune.apply import PartialPruneError, zero_weights
from minilib.prune.masks import (SparsityError, check_nm, check_sparsity_nm, is_nm, mask_nm,
                                 mask_unstructured, parse_nm)
from minilib.prune.quant import check_wbits
from minilib.prune.dsnot import Moments, obs_diagonal
from minilib.prune.methods import Method, get_method
from minilib.prune.permute import is_nm_permuted, mask_nm_permuted, nm_permutation, set_layer_permutation
from minilib.prune.report import PruneReport, reconstruction_stats, snapshot
from minilib.prune.sparsegpt import SparseGPT, heldout_stats


def check_permute_nm(method: Method, options: dict, nm) -> None:
    """A ``permute`` option (RIA's channel permutation) other than ``"none"`` needs an N:M pattern:
    for unstructured sparsity it would change nothing, so asking for it there is refused."""
    mode = options.get("permute", "none")
    if mode != "none" and not nm:
        raise SparsityError(f"method {method.name!r}: option permute={mode!r} permutes the input channels for an "
                            "N:M pattern and has no effect on unstructured sparsity; give nm=(n, m) (e.g. '2:4') "
                            "or leave permute at 'none'")


def score_mask(method: Method | str, w: torch.Tensor, stat, sparsity: float, nm: tuple[int, int] | None, name: str,
               options: dict | None = None, part: str | None = None,
               permutations: dict | None = None) -> torch.Tensor:
    """The prune mask of one layer by a score method (``method.score`` with its score options), compared
    per layer or per output row as the method (or its ``compare`` option) says, or within N:M groups
    (along a permutation of the input columns with the ``permute`` option, stored in
    ``permutations[name]`` where that dict is given; the mask is returned in memory order);
    then the method's ``refine`` step, unless it skips this ``part`` of the block (``"ffn"``,
    ``"attention"`` or ``None``)."""
    method = get_method(method)
    opts = method.resolve_options(options)
    mask_opts = method.stage_options(opts, "mask")
    check_permute_nm(method, mask_opts, nm)
    score = method.score(w, stat, **method.stage_options(opts, "score"))
    if nm and mask_opts.get("permute", "none") != "none":
        check_nm(nm[0], nm[1], score.shape[1], name)
        if method.refine is not None:  # no registered method has both; a refinement would break the pattern
            raise SparsityError(f"{method.label}: permute does not combine with a refine step")
        perm = nm_permutation(score, nm[0], nm[1], mask_opts["permute"])
        if permutations is not None:
            permutations[name] = perm
        return mask_nm_permuted(score, perm, nm[0], nm[1])
    if nm:
        mask = mask_nm(score, nm[0], nm[1], name)
        if method.refine is None:
            return mask
        if not method.refine_nm:
            raise SparsityError(f"{method.label} refines unstructured masks only; its N:M variant is not implemented")
    else:
        mask = mask_unstructured(score, sparsity, per=mask_opts.get("compare", method.compare))
    if method.refine is not None and not (method.refine_skip and method.refine_skip(part, mask_opts)):
        extra = {"nm": tuple(nm)} if nm else {}
        mask = method.refine(w, mask, score, stat, **method.stage_options(opts, "refine"), **extra)
    return mask


def block_part(adapter, path: str) -> str | None:
    """``"ffn"``, ``"attention"`` or ``None``: which part of a block the linear layer at ``path`` is in."""
    if path in {p for p in adapter.ffn_paths.values() if p}:
        return "ffn"
    if path in set(adapter.attn_paths.values()):
        return "attention"
    return None


def _moments(acc, seqlen: int, hessian: bool = False, name: str = "layer") -> Moments:
    """DSnoT's statistic from a moment accumulator; ``hessian``: with SparseGPT's saliency denominator."""
    hinv, dead = obs_diagonal(acc.H, 0.01, name) if hessian else (None, None)
    return Moments(acc.input_sq_norms(), acc.input_mean(), acc.input_var(), seqlen, hinv, dead)


def _validate(model, adapter, method: Method, sparsity, nm, wbits, calib, needs_calib, masks, heldout=None,
              batch_size=8, hessian_precision="fp32", options=None) -> list[float]:
    """Every argument checked before anything runs (the method's options by ``resolve_options``);
    returns the sparsity each block will be pruned to."""
    if nm is not None and not method.supports_nm:
        raise SparsityError(f"{method.label} refines unstructured masks only; its N:M variant is not implemented")
    check_permute_nm(method, method.stage_options(options or {}, "mask"), nm)
    if is_layer_list(sparsity):
        if nm is not None:
            raise SparsityError(f"a per-block sparsity list cannot be combined with nm={nm[0]}:{nm[1]}: an N:M "
                                "pattern prunes exactly N/M of every layer")
        eff_sparsity = check_layer_sparsities(sparsity, adapter.n_blocks(model))
    else:
        eff_sparsity = [check_sparsity_nm(sparsity, nm)] * adapter.n_blocks(model)
    if nm is not None:
        for bi, block in enumerate(adapter.blocks(model)):
            for name, layer in adapter.linear_layers(block).items():
                check_nm(nm[0], nm[1], in_features(layer), f"block {bi} {name}")
    check_wbits(wbits)
    check_count(batch_size, "batch_size")
    if hessian_precision not in HESSIAN_PRECISIONS:
        raise ValueError(f"hessian_precision must be one of {HESSIAN_PRECISIONS}, got {hessian_precision!r}")
    if masks:
        from minilib.calib.passes import resolve
        for k, m in masks.items():
            layer = resolve(model, k, adapter)
            w = weight_oi(layer)
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != w.shape:
                raise SparsityError(f"fixed mask for {k}: expected bool {tuple(w.shape)}, got "
                                    f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    if not needs_calib:
        return eff_sparsity
    if calib is None:
        why = f"method {method.name!r} needs" if method.calibrated else \
            "measuring the reconstruction error (measure_error=True or heldout=...) needs"
        raise CalibrationError(f"{why} calibration windows: a non-empty [n, seqlen] LongTensor "
                               "(see minilib.data.calibration_set)")
    check_windows(calib, model)
    if heldout is not None:
        check_windows(heldout, model, "held-out windows")
    if method.solver:
        widest = max(in_features(l) for b in adapter.blocks(model) for l in adapter.linear_layers(b).values())
        if calib.numel() < widest:
            raise CalibrationError(
                f"{method.label} needs at least as many calibration tokens as the widest layer input ({widest}) for a "
                f"full-rank Hessian; got {calib.shape[0]} x {calib.shape[1]} = {calib.numel()} tokens")
    return eff_sparsity


def input_groups(step: BlockStep) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
    """Run batch 0 and group the block's linear layers that read the very same tensor (q/k/v,
    gate/up); returns the groups (by key) and the inputs of batch 0 per group leader."""
    layers = step.linear_keys()
    seen = {k: LastBatch("input") for k in layers}
    step.feed(seen, batches=[0])  # holding the tensors keeps their identity unique during the batch
    groups: list[list[str]] = []
    for k in layers:
        for g in groups:
            if seen[g[0]].value is seen[k].value:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups, {g[0]: seen[g[0]].value for g in groups}


@torch.no_grad()
def prune_model(model: nn.Module, method: str = "sparsegpt", sparsity: float | None = None,
                nm: tuple[int, int] | str | None = None, wbits: int = 16, calib: torch.Tensor | None = None,
                device: torch.device | str | None = "auto", blocksize: int | None = None,
                percdamp: float | None = None, batch_size: int = 8, measure_error: bool | None = None,
                progress: bool = False, masks: dict[str, torch.Tensor] | None = None,
                heldout: torch.Tensor | None = None, forward_dtype: torch.dtype | str | None = None,
                hessian_precision: str = "fp32", offload: bool = False, options: dict | None = None) -> PruneReport:
    """Prune every linear layer of every block in place; see the module docstring.

    ``method``: a name in ``minilib.prune.methods.METHODS`` (or a ``Method``); ``options``: its own
    options (``METHODS[name].options``: e.g. RIA's ``a``), each checked, the rest at their defaults;
    ``blocksize``/``percdamp`` are SparseGPT's options given as keywords (``None``: the default; a
    method that does not take them refuses them).
    ``calib``: calibration windows ``[n, seqlen]`` (needed by every method whose statistic is not
    ``none``; with magnitude it only serves the error report).  ``measure_error`` (default: only for ``sparsegpt``, whose solver
    holds each layer's ``X X^T`` anyway) records each layer's reconstruction error on the calibration
    inputs (``error``, ``rel_error``); for wanda and magnitude it is opt-in, because it needs the full
    ``X X^T`` of every layer input (about 70% of a Wanda run's time).  That error is *in-sample*:
    SparseGPT minimised exactly it.  ``heldout``: windows that choose nothing but flow through the
    same pruned blocks; each layer then also reports ``heldout_error``/``heldout_rel_error``, the error
    on inputs the solver never saw (any method; costs a forward and one ``X X^T`` per layer input over
    the held-out tokens).
    ``device``: where each block runs (``"auto"``: CUDA when present), while the model stays where it
    is.  ``forward_dtype`` (e.g. ``"bfloat16"``): block forwards under autocast in that dtype, the
    activations between blocks kept in it; Hessians, the solver and the weights stay in fp32 (the
    model's dtype); ``"auto"``: bfloat16 on CUDA, the model's dtype elsewhere.
    ``hessian_precision="tf32"``: TF32 GEMM inputs for ``X X^T`` (CUDA tensor cores; emulated
    elsewhere, for measuring).  ``offload``: keep the activations between blocks on the CPU
    (for calibration sets that do not fit on the GPU beside one block).

    ``sparsity``: one number, or a per-block list (one number per block, e.g. from
    ``minilib.prune.owl_sparsities``; unstructured only), the report's target then holding the list
    (``layer_sparsity``) and the overall sparsity it implies (``sparsity``).  Each must lie in [0, 1)
    whether or not ``nm`` is given; with ``nm`` the pattern prunes
    exactly N/M, so ``sparsity`` must be left out (``None``) or equal N/M (else ``SparsityError``);
    with neither, ``DEFAULT_SPARSITY`` (0.5).
    ``percdamp`` lies in [0, 1); ``blocksize`` and ``batch_size`` are integers >= 1.  Every argument
    is checked before anything runs, so a refused call leaves the model as it was.  A failure (or a
    ``KeyboardInterrupt``) after some blocks were changed in place says so: ``PartialPruneError``
    naming those blocks, or the ``KeyboardInterrupt`` re-raised with that report as a note
    (``e.__notes__``) and ``e.pruned_blocks``."""
    adapter = adapter_for(model)
    method = get_method(method)
    nm = parse_nm(nm)
    given = dict(options or {})
    for k, v in (("blocksize", blocksize), ("percdamp", percdamp)):
        if v is not None:
            if k in given:
                raise ValueError(f"{k} is given both as a keyword and in options; give it once")
            given[k] = v
    options = method.resolve_options(given)
    if measure_error is None:
        measure_error = method.solver and calib is not None
    needs_calib = method.calibrated or bool(measure_error) or heldout is not None
    masks = dict(masks or {})
    block_sparsity = _validate(model, adapter, method, sparsity, nm, wbits, calib, needs_calib, masks, heldout,
                               batch_size, hessian_precision, options)
    per_block = is_layer_list(sparsity)
    eff_sparsity = implied_sparsity(model, block_sparsity) if per_block else block_sparsity[0]
    dev = resolve_device(device)
    forward_dtype = resolve_forward_dtype(forward_dtype, dev)
    timer = Timer(dev)
    before = snapshot(model)
    rows: list[dict] = []
    perms: dict[str, torch.Tensor] = {}  # layer key -> the column order its N:M pattern runs along
    touched: set[int] = set()  # blocks whose weights may have been changed in place
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    was_training = model.training
    model.eval()
    try:
        with timer("total_s"):
            if not needs_calib:  # magnitude without calibration: no forward pass at all
                _prune_by_weights(model, adapter, method, options, block_sparsity, nm, wbits, masks, dev, timer, rows,
                                  progress, touched, perms)
            else:
                opts = dict(method=method, options=options, sparsity=block_sparsity, nm=nm, wbits=wbits,
                            measure_error=bool(measure_error), masks=masks, precision=hessian_precision, rows=rows,
                            touched=touched, perms=perms)
                sequential_pass(model, calib, lambda step: _prune_block(step, **opts), dev, batch_size, timer=timer,
                                progress=progress, desc=method.name, heldout=heldout, forward_dtype=forward_dtype,
                                store="cpu" if offload else None)
    except (Exception, KeyboardInterrupt) as e:
        done = sorted(touched | {int(r["block"]) for r in rows})
        if not done:  # nothing was changed yet
            raise
        # the weights of these blocks were already changed in place
        what = "was interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        msg = (f"{method.name} pruning {what} after blocks {done} were already pruned in place; the model is "
               f"half-pruned: reload it before retrying")
        if isinstance(e, KeyboardInterrupt):  # Ctrl-C stays a KeyboardInterrupt (the same one), with the report
            e.add_note(msg)
            e.pruned_blocks = done
            raise
        raise PartialPruneError(f"{msg} ({type(e).__name__}: {e})") from e
    finally:
        model.train(was_training)
    timings = {k: timer.totals.get(k, 0.0) for k in ("capture_s", "forward_s", "stats_s", "solve_s", "total_s")}
    if heldout is not None:
        timings["heldout_s"] = timer.totals.get("heldout_s", 0.0)
    if dev.type == "cuda":
        timings["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    target = {"nm": f"{nm[0]}:{nm[1]}"} if nm else {"sparsity": eff_sparsity}
    if per_block:
        target["layer_sparsity"] = list(block_sparsity)
    if wbits < 16:
        target["wbits"] = wbits
    if masks:
        target["fixed_masks"] = len(masks)
    notes = {"options": dict(options)} if options else {}  # the method's options as used (defaults included)
    if heldout is not None:
        notes["heldout_tokens"] = int(heldout.numel())
    if forward_dtype is not None:
        notes["forward_dtype"] = str(forward_dtype).removeprefix("torch.")
    if hessian_precision != "fp32":
        notes["hessian_precision"] = hessian_precision
    if perms:
        notes["nm_order"] = "permuted"  # N:M along rep.permutations, not in memory order
    rep = PruneReport(method.name, target, before, snapshot(model), pd.DataFrame(rows), timings, notes,
                      permutations=perms)
    rep.nm, rep.sparsity, rep.wbits = nm, eff_sparsity, wbits
    return rep


def _nm_columns(layer, k: str, w_new: torch.Tensor, nm, perms: dict) -> dict:
    """Mark the layer with its permutation (or clear an old one) and, for N:M, the report's columns:
    along which order the pattern runs (``nm_order``: ``memory`` or ``permuted``) and whether the
    pruned weight holds it there (``nm_ok``)."""
    perm = perms.get(k)
    set_layer_permutation(layer, perm)
    if not nm:
        return {}
    ok = is_nm_permuted(w_new, perm, *nm) if perm is not None else is_nm(w_new, *nm)
    return {"nm_order": "permuted" if perm is not None else "memory", "nm_ok": bool(ok)}


def _prune_by_weights(model, adapter, method, options, sparsity, nm, wbits, masks, dev, timer, rows, progress,
                      touched, perms):
    """A method that needs no statistic, without calibration data: one block at a time on ``dev``, no
    forward pass."""
    from tqdm.auto import tqdm
    for bi, block in enumerate(tqdm(adapter.blocks(model), desc=method.name, disable=not progress)):
        home = model_device(block)
        block.to(dev)
        try:
            for name, layer in adapter.linear_layers(block).items():
                k = key(bi, name)
                with timer("solve_s"):
                    mask = masks.get(k)
                    if mask is None:
                        mask = score_mask(method, weight_oi(layer).float(), None, sparsity[bi], nm, k, options,
                                          permutations=perms)
                    touched.add(bi)
                    w_old, w_new = zero_weights(layer, mask.to(dev), wbits)
                rows.append({"block": bi, "group": name, **reconstruction_stats(name, w_old, w_new),
                             **_nm_columns(layer, k, w_new, nm, perms)})
        finally:
            block.to(home)


def _prune_block(step: BlockStep, method: Method, options, sparsity, nm, wbits, measure_error, masks, precision, rows,
                 touched, perms):
    bi, layers = step.index, step.linear_keys()
    sparsity = sparsity[bi]  # this block's
    statistic = method.statistic_for(options)
    full = statistic in ("hessian", "hessian_moments") or measure_error  # the full X X^T per input
    groups, first = input_groups(step)
    dev = step.device or step.inputs[0].device
    accs = {}
    for g in groups:
        cols = in_features(layers[g[0]])
        if method.solver:
            accs[g[0]] = SparseGPT({k: layers[k] for k in g}, dev, precision)
        elif statistic in ("input_moments", "hessian_moments"):
            accs[g[0]] = HessianMoments(cols, dev, precision) if full else InputMoments(cols, dev)
        else:
            accs[g[0]] = Hessian(cols, dev, precision) if full else InputSqNorms(cols, dev)
        with step.timer("stats_s"):
            accs[g[0]].add_batch(first[g[0]])
    del first
    step.feed(accs, batches=range(1, len(step.inputs)))
    held = None
    if step.heldout is not None:  # the same layer inputs on the held-out windows (the block is still dense)
        held = {g[0]: Hessian(in_features(layers[g[0]]), dev, precision) for g in groups}
        step.feed(held, heldout=True)

    name = lambda k: k.split(".", 1)[1]  # noqa: E731  (the path inside the block)
    for g in groups:  # checked for the whole block before any of its weights change
        fixed = [k for k in g if k in masks]
        if fixed and len(fixed) != len(g) and method.solver:
            raise SparsityError(f"layers {g} share one input (one OBS problem): give fixed masks for all of them "
                                f"or none (got {fixed})")
    touched.add(bi)  # from here on the block's weights change
    for g in groups:
        acc = accs[g[0]]
        ho = held[g[0]] if held is not None else None
        fixed = [k for k in g if k in masks]
        if method.solver:
            with step.timer("solve_s"):
                st = acc.prune(sparsity, *(nm or (0, 0)), wbits=wbits, **options,
                               mask={k: masks[k] for k in g} if fixed else None, measure_error=measure_error,
                               heldout=ho)
            rows.extend({"block": bi, "group": "+".join(map(name, g)), **s, "layer": name(s["layer"]),
                         **_nm_columns(layers[s["layer"]], s["layer"], weight_oi(layers[s["layer"]]), nm, perms)}
                        for s in st)
        else:
            stat = acc.input_sq_norms() if statistic == "input_sq_norms" else \
                _moments(acc, step.inputs[0].shape[1], statistic == "hessian_moments", g[0]) \
                if statistic in ("input_moments", "hessian_moments") else None
            for k in g:
                with step.timer("solve_s"):
                    w = weight_oi(layers[k]).float()
                    mask = masks[k] if k in masks else score_mask(method, w, stat, sparsity, nm, k, options,
                                                                  block_part(step.adapter, name(k)), perms)
                    w_old, w_new = zero_weights(layers[k], mask.to(w.device), wbits)
                row = {"block": bi, "group": "+".join(map(name, g)),
                       **reconstruction_stats(name(k), w_old, w_new, acc.H if measure_error else None, acc.tokens),
                       **_nm_columns(layers[k], k, w_new, nm, perms)}
                if ho is not None:
                    row.update(heldout_stats(w_old, w_new, ho))
                rows.append(row)
        acc.free()
        if ho is not None:
            ho.free()
