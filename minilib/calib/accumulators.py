"""Calibration statistics: small accumulators with one signature, ``add_batch(inp, out)``.

Hooks (``minilib.calib.passes``) only feed them: ``inp`` is what a module reads (its first
positional input), ``out`` what it returns.  Each accumulator takes the side it needs:

* ``InputSqNorms`` -- ``sum_t x_tj**2`` per input column (Wanda's ``||X_j||**2``);
* ``Hessian``      -- ``sum_t x_t x_t^T`` in fp32 (SparseGPT / OBS), and the same column norms
  (optionally with TF32 GEMM inputs, ``precision="tf32"``);
* ``AbsMean``      -- mean ``|a_tj|`` per feature of the input or the output, optionally also of
  ``|y - b|`` for a linear output with bias (the Mini-GPTs neuron statistic);
* ``DecisionNeuronStats`` -- per-FFN-neuron alignment with the decision vector (the anatomy).

Every accumulator counts the ``tokens`` it has seen and can ``free()`` its buffers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


class Accumulator:
    """Base class: ``add_batch(inp, out)``, ``tokens``, ``free()``."""

    tokens: int = 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def free(self) -> None:
        pass


class InputSqNorms(Accumulator):
    """``sum over tokens of x_j**2`` per input column of a layer (Wanda's ``||X_j||**2``)."""

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.sq = torch.zeros(columns, dtype=torch.float32, device=device)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        x = _rows(inp).to(self.sq.device, torch.float32)  # (tokens, in)
        self.sq += (x * x).sum(0)
        self.tokens += x.shape[0]

    def input_sq_norms(self) -> torch.Tensor:
        return self.sq

    def free(self) -> None:
        self.sq = None


HESSIAN_PRECISIONS = ("fp32", "tf32")


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """``x`` (fp32) rounded to TF32's 10-bit mantissa (round to nearest, ties away from zero), as
    NVIDIA tensor cores read fp32 matmul inputs in TF32 mode; the result is still fp32.  Used to
    emulate TF32 accumulation where there is no such GPU (the products are then summed in fp32, as
    tensor cores do; only the order of the summation differs)."""
    bits = x.float().contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF  # add half an ulp of the 10-bit mantissa, drop the low 13 bits
    finite = torch.isfinite(x)
    return torch.where(finite, rounded.view(torch.float32), x.float())


@contextmanager
def _tf32_matmul(enabled: bool):
    """Allow TF32 for CUDA matmuls inside the block (restored afterwards)."""
    if not enabled:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


class Hessian(Accumulator):
    """``X X^T`` summed over tokens in fp32: the statistic of the OBS / SparseGPT solver.

    ``hessian()`` is ``2 X X^T / tokens``, the Hessian of the layer-wise reconstruction loss.
    Inputs in any dtype (bf16/fp16 forwards) are cast to fp32 first.  ``precision="tf32"`` lets the
    GEMM read its inputs in TF32 (10-bit mantissa, fp32 sums): the tensor-core mode on CUDA, and an
    emulation (inputs rounded by ``round_to_tf32``, no speed-up) elsewhere, for measuring its effect."""

    def __init__(self, columns: int, device: torch.device | str = "cpu", precision: str = "fp32"):
        if precision not in HESSIAN_PRECISIONS:
            raise ValueError(f"precision must be one of {HESSIAN_PRECISIONS}, got {precision!r}")
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.tokens = 0
        self.precision = precision

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        x = _rows(inp).to(self.H.device, torch.float32)  # (tokens, in)
        if self.precision == "tf32" and self.H.device.type != "cuda":
            x = round_to_tf32(x)
        with _tf32_matmul(self.precision == "tf32" and self.H.device.type == "cuda"):
            self.H.addmm_(x.t(), x)
        self.tokens += x.shape[0]

    @property
    def columns(self) -> int:
        return self.H.shape[0]

    def hessian(self) -> torch.Tensor:
        return self.H * (2.0 / max(self.tokens, 1))

    def input_sq_norms(self) -> torch.Tensor:
        """``sum over tokens of x_j**2`` per input column (what Wanda needs)."""
        return torch.diag(self.H).clone()

    def free(self) -> None:
        self.H = None


class _Sums:
    """Adds ``sum over tokens of x_j`` to an accumulator of ``x_j**2`` (``InputSqNorms``/``Hessian``):
    ``input_mean()`` and the pooled ``input_var()`` per input column (what DSnoT needs)."""

    sum: torch.Tensor | None = None

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        super().add_batch(inp, out)
        x = _rows(inp).to(self.input_sq_norms().device, torch.float32)
        self.sum = x.sum(0) if self.sum is None else self.sum + x.sum(0)

    def input_mean(self) -> torch.Tensor:
        return self.sum / max(self.tokens, 1)

    def input_var(self) -> torch.Tensor:
        """Variance over every calibration token (population), never below 0."""
        return (self.input_sq_norms() / max(self.tokens, 1) - self.input_mean() ** 2).clamp_min(0)

    def free(self) -> None:
        super().free()
        self.sum = None


class InputMoments(_Sums, InputSqNorms):
    """``InputSqNorms`` plus the per-column sum of the inputs."""


class HessianMoments(_Sums, Hessian):
    """``Hessian`` plus the per-column sum of the inputs."""


class AbsMean(Accumulator):
    """Mean ``|a_j|`` per feature over tokens, of a module's ``"input"`` or ``"output"``.

    With ``bias`` (an output side only) it also keeps the mean of ``|y_j - b_j|``, the part of a linear
    output that depends on the input; ``mean_min()`` gives ``min(mean|y|, mean|y - b|)``.
    ``skip_first`` drops the first ``skip_first`` positions of every sequence (e.g. the attention-sink
    token, whose activations can be thousands of times larger than elsewhere); modules that see the
    batch flattened to ``[batch * seqlen, width]`` (OPT's FFN) need ``seqlen`` to find those positions."""

    def __init__(self, width: int, side: str = "output", bias: torch.Tensor | None = None, skip_first: int = 0,
                 seqlen: int | None = None):
        if side not in ("input", "output"):
            raise ValueError(f"side must be 'input' or 'output', got {side!r}")
        if bias is not None and side != "output":
            raise ValueError("bias only applies to a module's output")
        if isinstance(skip_first, bool) or int(skip_first) != skip_first or skip_first < 0:
            raise ValueError(f"skip_first must be an integer >= 0, got {skip_first!r}")
        if seqlen is not None and (isinstance(seqlen, bool) or int(seqlen) != seqlen or seqlen <= skip_first):
            raise ValueError(f"seqlen must be an integer > skip_first ({skip_first}) or None, got {seqlen!r}")
        self.side, self.skip_first, self.seqlen = side, int(skip_first), seqlen
        self.total = torch.zeros(width, dtype=torch.float64)
        self.bias = None if bias is None else bias.detach().float()
        self.total_centred = None if bias is None else torch.zeros(width, dtype=torch.float64)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        a = inp if self.side == "input" else out
        if self.skip_first:
            if a.dim() == 2 and self.seqlen is not None and a.shape[0] % self.seqlen == 0:
                a = a.view(-1, self.seqlen, a.shape[-1])
            if a.dim() != 3:
                raise ValueError(f"skip_first needs [batch, seqlen, width] activations (or seqlen= for flattened "
                                 f"ones whose rows it divides), got shape {tuple(a.shape)}")
            a = a[:, self.skip_first:]
        a = _rows(a.detach()).float()
        self.total += a.abs().sum(0).to("cpu", torch.float64)
        if self.bias is not None:
            b = self.bias.to(a.device)
            self.total_centred += (a - b).abs().sum(0).to("cpu", torch.float64)
        self.tokens += a.shape[0]

    def mean(self) -> torch.Tensor:
        if self.tokens == 0:
            raise RuntimeError("no tokens were added to the accumulator")
        return self.total / self.tokens

    def mean_min(self) -> torch.Tensor:
        """``min(mean|y|, mean|y - b|)`` (``mean|y|`` without a bias)."""
        m = self.mean()
        return m if self.total_centred is None else torch.minimum(m, self.total_centred / self.tokens)

    def free(self) -> None:
        self.total = self.total_centred = None


class DecisionNeuronStats(Accumulator):
    """Per FFN neuron of one layer, how its contribution lines up with the decision vector.

    ``add_batch(inp, out)``: ``inp`` the neuron activations at the decision token ``(B, W)`` (the
    input of the FFN's down projection, gate included), ``out`` the decision vector they contribute
    to ``(B, H)``.  With ``w_down`` ``(H, W)`` as ``[out, in]`` the contribution of neuron ``j`` is
    ``c_j = a_j W[:, j]``; we keep ``cos(c_j, d) = sign(a_j) cos(W[:, j], d)``, the projection
    ``<c_j, d>/|d|`` and activation statistics, averaged over examples in fp64."""

    KEYS = ("cos", "abs_cos", "proj", "abs_proj", "act", "abs_act", "act2", "pos")

    def __init__(self, w_down: torch.Tensor):
        self.w = w_down.detach().double().cpu()
        width = self.w.shape[1]
        self.sums = {k: torch.zeros(width, dtype=torch.float64) for k in self.KEYS}
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        a, d, w = inp.detach().double().cpu(), out.detach().double().cpu(), self.w
        wd = d @ w                                                     # (B, W): <W[:, j], d>
        dn = d.norm(dim=1, keepdim=True).clamp_min(1e-12)              # (B, 1)
        wn = w.norm(dim=0).clamp_min(1e-12)                            # (W,)
        cos = torch.sign(a) * wd / (wn * dn)                           # 0 where a_j = 0
        proj = a * wd / dn
        s = self.sums
        s["cos"] += cos.sum(0)
        s["abs_cos"] += cos.abs().sum(0)
        s["proj"] += proj.sum(0)
        s["abs_proj"] += proj.abs().sum(0)
        s["act"] += a.sum(0)
        s["abs_act"] += a.abs().sum(0)
        s["act2"] += (a * a).sum(0)
        s["pos"] += (a > 0).double().sum(0)
        self.tokens += a.shape[0]

    def result(self) -> dict[str, np.ndarray]:
        n, s = max(self.tokens, 1), self.sums
        mean = s["act"] / n
        return {"neuron_cos": s["cos"] / n, "neuron_abs_cos": s["abs_cos"] / n, "neuron_proj": s["proj"] / n,
                "neuron_abs_proj": s["abs_proj"] / n, "act_mean": mean, "act_abs_mean": s["abs_act"] / n,
                "act_std": (s["act2"] / n - mean * mean).clamp_min(0).sqrt(), "act_pos_frac": s["pos"] / n}


class LastBatch(Accumulator):
    """Keeps the most recent batch of one side (for passes that combine several modules' outputs
    after each forward, as the anatomy does)."""

    def __init__(self, side: str = "output"):
        if side not in ("input", "output"):
            raise ValueError(f"side must be 'input' or 'output', got {side!r}")
        self.side, self.value, self.tokens = side, None, 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        self.value = inp if self.side == "input" else out
        self.tokens += self.value.shape[0]

    def free(self) -> None:
        self.value = None
