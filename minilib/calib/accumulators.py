"""Calibration statistics: small accumulators with one signature, ``add_batch(inp, out)``.

Hooks (``minilib.calib.passes``) only feed them: ``inp`` is what a module reads (its first
positional input), ``out`` what it returns.  Each accumulator takes the side it needs:

* ``InputSqNorms`` -- ``sum_t x_tj**2`` per input column (Wanda's ``||X_j||**2``);
* ``Hessian``      -- ``sum_t x_t x_t^T`` in fp32 (SparseGPT / OBS), and the same column norms;
* ``AbsMean``      -- mean ``|a_tj|`` per feature of the input or the output, optionally also of
  ``|y - b|`` for a linear output with bias (the Mini-GPTs neuron statistic);
* ``DecisionNeuronStats`` -- per-FFN-neuron alignment with the decision vector (the anatomy).

Every accumulator counts the ``tokens`` it has seen and can ``free()`` its buffers.
"""

from __future__ import annotations

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


class Hessian(Accumulator):
    """``X X^T`` summed over tokens (fp32): the statistic of the OBS / SparseGPT solver.

    ``hessian()`` is ``2 X X^T / tokens``, the Hessian of the layer-wise reconstruction loss."""

    def __init__(self, columns: int, device: torch.device | str = "cpu"):
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        x = _rows(inp).to(self.H.device, torch.float32)  # (tokens, in)
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
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class AbsMean(Accumulator):
    """Mean ``|a_j|`` per feature over tokens, of a module's ``"input"`` or ``"output"``.

    With ``bias`` (an output side only) it also keeps the mean of ``|y_j - b_j|``, the part of a linear
    output that depends on the input; ``mean_min()`` gives ``min(mean|y|, mean|y - b|)``.
    ``skip_first`` drops the first ``skip_first`` positions of every sequence (e.g. the attention-sink
    token, whose activations can be thousands of times larger than elsewhere)."""

    def __init__(self, width: int, side: str = "output", bias: torch.Tensor | None = None, skip_first: int = 0):
        if side not in ("input", "output"):
            raise ValueError(f"side must be 'input' or 'output', got {side!r}")
        if bias is not None and side != "output":
            raise ValueError("bias only applies to a module's output")
        self.side, self.skip_first = side, int(skip_first)
        self.total = torch.zeros(width, dtype=torch.float64)
        self.bias = None if bias is None else bias.detach().float()
        self.total_centred = None if bias is None else torch.zeros(width, dtype=torch.float64)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor, out: torch.Tensor | None = None) -> None:
        a = inp if self.side == "input" else out
        if self.skip_first and a.dim() == 3:
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
