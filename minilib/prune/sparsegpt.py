"""The SparseGPT solver (Frantar & Alistarh, 2023): OBS weight reconstruction, one layer at a time.

    solver = SparseGPT({"q": q_proj, "k": k_proj, "v": v_proj})   # layers that read the same input
    for x in calibration_inputs: solver.add_batch(x, None)         # (B, T, in) or (tokens, in)
    stats = solver.prune(sparsity=0.5)                             # or n=2, m=4; wbits=4; or mask=...
    solver.free()

The solver *is* a ``minilib.calib.Hessian`` accumulator (same ``add_batch(inp, out)``), so the
calibration passes feed it like any other statistic.  ``prune(mask=...)`` takes a fixed mask from
any other criterion (True = prune) and lets OBS reconstruct the remaining weights around it.

Algorithm (per group of layers sharing one input X, so one Hessian ``H = 2 X X^T / tokens``):

* input columns that are zero on every calibration token (``diag H == 0``) are zeroed in ``W`` and get
  ``H_jj = 1``, as in the reference;
* dampen ``H += percdamp * mean(diag H) * I``; take ``U = chol(H^-1)`` (upper);
* walk the input columns in lazy blocks of ``blocksize``: at the start of each block choose the mask
  adaptively (the lowest ``w**2 / U_jj**2``; or ``n`` of every ``m`` columns, chosen when the group is
  reached), then for each column zero (and quantize) it and spread its error ``(w - q) / U_jj`` over
  the later columns of the block; the later blocks get the whole block's error in one GEMM.

Two things make ours cheaper than a per-layer port of the reference, with the same result:

* layers that read the same input (q/k/v, gate/up) share one Hessian, one inversion and one column
  walk over their stacked rows; the adaptive mask is still chosen per layer;
* inside a lazy block the rank-1 updates touch only a sub-block of ``subblock`` columns, the rest of
  the block is updated with one GEMM per sub-block (the same lazy-update trick, one level down).

The pruned count is exact: over each layer's blocks the number pruned follows
``round(sparsity * weights seen so far)``, so a layer ends with ``round(sparsity * numel)`` zeros
(dead columns score 0 and are taken first; more dead weights than that leave the layer sparser).

The error report: ``error``/``rel_error`` on the calibration inputs (in-sample: what the solver
minimised; ``measure_error=False`` skips it), and with ``heldout=`` (a ``Hessian`` of held-out
inputs) ``heldout_error``/``heldout_rel_error``.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from minilib.calib.accumulators import Hessian
from minilib.calib.passes import CalibrationError
from minilib.data.corpora import check_count
from minilib.determinism import serial_cpu
from minilib.device import synchronize
from minilib.models.linear import in_features, out_features, set_weight_oi, weight_oi
from minilib.prune.masks import check_nm, check_sparsity_nm, mask_nm, mask_smallest, n_pruned
from minilib.prune.quant import check_wbits, fit_quantizer
from minilib.prune.report import reconstruction_stats
from minilib.prune.scores import score_obs
from minilib.train.checks import check_unit


class HessianError(RuntimeError):
    """The (dampened) Hessian of a layer is not positive definite."""


def check_percdamp(percdamp) -> float:
    """The dampening fraction of ``mean(diag H)``: a number in [0, 1) (the reference uses 0.01)."""
    return check_unit("percdamp", percdamp)


def cholesky_inverse_upper(H: torch.Tensor, percdamp: float, names: str, retries: int = 4) -> tuple[torch.Tensor, float]:
    """``U`` with ``U^T U = (H + damp I)^-1`` (upper Cholesky factor of the inverse), and the damping used.

    Dampening starts at ``percdamp * mean(diag H)`` and grows tenfold up to ``retries`` times; a Hessian
    that still is not positive definite (e.g. non-finite inputs) raises ``HessianError``."""
    if not math.isfinite(float(H.sum())):  # one reduction instead of an elementwise check
        raise HessianError(f"{names}: the Hessian has non-finite entries (non-finite calibration inputs?); "
                           "dampening cannot fix it")
    mean_diag = float(torch.diag(H).mean())
    damp = percdamp * mean_diag if mean_diag > 0 else percdamp
    eye = torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
    for _ in range(retries + 1):
        # U = flip(inv(chol(flip(H)))): one Cholesky and one triangular inverse, no refactorisation.
        # (J H J = L L^T  =>  H^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper triangular.)
        # On the CPU on one thread: MKL's Cholesky splits its sums by threads, so another thread count
        # gave another U (and other masks); the factorisations are a small part of a solve.
        with serial_cpu(H.device):
            L, info = torch.linalg.cholesky_ex((H + damp * eye).flip(0, 1))
            U = torch.linalg.solve_triangular(L, eye, upper=False).flip(0, 1) if int(info) == 0 else None
        if U is not None and math.isfinite(float(U.sum())):
            return U, damp
        damp *= 10
    raise HessianError(f"{names}: the Hessian is not positive definite even with dampening {damp / 10:.3g} "
                       f"({retries} tenfold increases over percdamp={percdamp})")


class SparseGPT(Hessian):
    """OBS solver for one linear layer, or several that read the same input (stacked by rows)."""

    def __init__(self, layers: dict[str, nn.Module] | nn.Module, device: torch.device | str | None = None,
                 precision: str = "fp32"):
        if isinstance(layers, nn.Module):
            layers = {"layer": layers}
        self.layers = dict(layers)
        widths = {n: in_features(m) for n, m in self.layers.items()}
        if len(set(widths.values())) != 1:
            raise ValueError(f"layers of one solver must share the input width, got {widths}")
        first = next(iter(self.layers.values()))
        self.device = torch.device(device) if device is not None else first.weight.device
        super().__init__(next(iter(widths.values())), self.device, precision)
        self.names = ", ".join(self.layers)

    # --- pruning -----------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, sparsity: float | None = None, n: int = 0, m: int = 0, wbits: int = 16, blocksize: int = 128,
              percdamp: float = 0.01, subblock: int = 16, mask: dict[str, torch.Tensor] | None = None,
              measure_error: bool = True, heldout: Hessian | None = None) -> list[dict]:
        """Prune (and with ``wbits < 16`` quantize) every layer in place; one stats dict per layer:
        ``layer, out, in, params, zeros, sparsity, error, rel_error, damp, dead, time_s`` (and
        ``heldout_error, heldout_rel_error`` with ``heldout``).

        ``mask``: a fixed bool mask ``[out, in]`` per layer name (True = prune) chosen by any other
        criterion; OBS then only reconstructs (``sparsity`` and ``n:m`` are ignored).  With ``n:m``,
        ``sparsity`` must be left out (``None``) or ``n / m``; without, ``None`` is 0.5 (as in ``prune_model``).
        ``measure_error``: the reconstruction error on the calibration inputs (``error``, ``rel_error``;
        in-sample: the solver minimised it), ``NaN`` when False.  ``heldout``: a ``Hessian`` of the
        same layers' inputs on held-out windows, for the error on inputs that chose nothing.
        Input columns that are zero on every calibration token (``diag H == 0``, "dead") are zeroed in
        every row, as the reference does (they cannot matter on the calibration inputs); they count
        as pruned."""
        synchronize(self.device)
        t0 = time.perf_counter()
        fixed = mask is not None
        nm = bool(n or m) and not fixed
        if fixed:
            missing = set(self.layers) - set(mask)
            if missing:
                raise ValueError(f"fixed masks are missing for {sorted(missing)}")
            for name, layer in self.layers.items():
                want = (out_features(layer), in_features(layer))
                if mask[name].dtype != torch.bool or tuple(mask[name].shape) != want:
                    raise ValueError(f"{name}: fixed mask must be bool of shape {want}, got {mask[name].dtype} "
                                     f"{tuple(mask[name].shape)}")
            sparsity = 0.0
        elif nm:
            check_nm(n, m, self.columns, self.names)
            check_sparsity_nm(sparsity, (n, m))
        else:
            sparsity = check_sparsity_nm(sparsity, None)
        wbits = check_wbits(wbits)
        check_count(blocksize, "blocksize")
        check_count(subblock, "subblock")
        check_percdamp(percdamp)
        if self.tokens == 0:
            raise CalibrationError(f"{self.names}: no calibration inputs were added")
        cols = self.columns
        step = m if nm else 1
        subblock = max(step, step * math.ceil(subblock / step))
        blocksize = max(subblock, subblock * math.ceil(blocksize / subblock))

        W = torch.cat([weight_oi(l).to(self.device, torch.float32) for l in self.layers.values()])  # (rows, in)
        W0 = W.clone()
        bounds, r = [], 0
        for l in self.layers.values():
            bounds.append((r, r + out_features(l)))
            r += out_features(l)
        H = self.H
        dead = torch.diag(H) == 0
        H0 = H.clone() if measure_error else None
        H[dead, dead] = 1.0
        U, damp = cholesky_inverse_upper(H, percdamp, self.names)
        quant = fit_quantizer(W, wbits) if wbits < 16 else None  # fitted before the dead columns go, as the reference
        n_dead = int(dead.sum())
        pruned_so_far = [0] * len(bounds)
        seen_so_far = 0
        full_mask = torch.cat([mask[k].to(self.device) for k in self.layers]) if fixed else None
        mask = torch.zeros_like(W, dtype=torch.bool)

        trivial = not fixed and not nm and sparsity == 0 and quant is None  # nothing to prune: W stays as it is
        if n_dead and not trivial:
            W[:, dead] = 0.0
        for i1 in range(0, 0 if trivial else cols, blocksize):
            i2 = min(i1 + blocksize, cols)
            b = i2 - i1
            U1 = U[i1:i2, i1:i2]
            d = torch.diag(U1)
            # the block transposed, (b, rows): a column of W is a contiguous row here
            Wb = W[:, i1:i2].t().contiguous()
            Mb = full_mask[:, i1:i2].t().contiguous() if fixed else torch.zeros_like(Wb, dtype=torch.bool)
            if not fixed and not nm and sparsity > 0:  # adaptive mask for this block, chosen per layer
                seen_so_far += b
                score = score_obs(Wb.t(), d).t()  # (b, rows)
                for j, (a, z) in enumerate(bounds):
                    k = n_pruned((z - a) * seen_so_far, sparsity) - pruned_so_far[j]
                    Mb[:, a:z] = mask_smallest(score[:, a:z], k)
                    pruned_so_far[j] += k
            fast = not nm and quant is None  # mask known up front: err = w * mask / d
            if fast:
                Md = Mb.to(Wb.dtype) / d[:, None]
            Eb = torch.zeros_like(Wb)
            for j1 in range(0, b, subblock):
                j2 = min(j1 + subblock, b)
                for i in range(j1, j2):
                    w = Wb[i]
                    if fast:
                        err = w * Md[i]
                    else:
                        if nm and i % m == 0:
                            Mb[i:i + m] = mask_nm(score_obs(Wb[i:i + m].t(), d[i:i + m]), n, m, self.names).t()
                        q = quant(w) if quant is not None else w.clone()
                        q.masked_fill_(Mb[i], 0.0)
                        err = (w - q) / d[i]
                        Wb[i] = q
                    if i + 1 < j2:
                        Wb[i + 1:j2].addr_(U1[i, i + 1:j2], err, alpha=-1.0)
                    Eb[i] = err
                if j2 < b:  # the rest of the block gets this sub-block's errors at once
                    Wb[j2:].addmm_(U1[j1:j2, j2:].t(), Eb[j1:j2], alpha=-1.0)
            W[:, i1:i2] = Wb.t()
            mask[:, i1:i2] = Mb.t()
            if i2 < cols:  # lazy update of every later block
                W[:, i2:].addmm_(Eb.t(), U[i1:i2, i2:], alpha=-1.0)

        W.masked_fill_(mask, 0.0)  # exact zeros
        synchronize(self.device)
        elapsed = time.perf_counter() - t0
        stats = []
        for (name, layer), (a, b) in zip(self.layers.items(), bounds):
            set_weight_oi(layer, W[a:b].to(layer.weight.device))
            stats.append(reconstruction_stats(name, W0[a:b], W[a:b], H0, self.tokens if measure_error else 0))
            if heldout is not None:
                stats[-1].update(heldout_stats(W0[a:b], W[a:b], heldout))
            stats[-1].update(damp=damp, dead=n_dead if not trivial else 0, time_s=elapsed * (b - a) / W.shape[0])
        if H0 is not None:
            self.H = H0  # keep the undampened statistics (free() releases them)
        else:
            self.H[dead, dead] = 0.0
        return stats


def heldout_stats(w_old: torch.Tensor, w_new: torch.Tensor, heldout: Hessian) -> dict:
    """``heldout_error`` and ``heldout_rel_error`` of one layer: the reconstruction error on the inputs
    that ``heldout`` (a ``Hessian`` of held-out windows) saw."""
    if heldout.tokens == 0:
        raise CalibrationError("the held-out Hessian saw no inputs")
    st = reconstruction_stats("", w_old, w_new, heldout.H, heldout.tokens)
    return {"heldout_error": st["error"], "heldout_rel_error": st["rel_error"]}

