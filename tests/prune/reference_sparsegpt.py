"""A plain, per-layer port of SparseGPT's Algorithm 1 (Frantar & Alistarh, 2023), written from the
paper for comparison: one Hessian per layer, one full column walk with the lazy block update, no
sub-blocking and no sharing.  Used by ``test_reference.py`` (in ``make test``) and by
``benchmarks/bench_sparsegpt.py`` (speed)."""

from __future__ import annotations

import torch


@torch.no_grad()
def reference_sparsegpt(W: torch.Tensor, H: torch.Tensor, sparsity: float = 0.5, prunen: int = 0, prunem: int = 0,
                        blocksize: int = 128, percdamp: float = 0.01, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pruned copy of ``W`` ``[out, in]`` given ``H = 2 X X^T / n``.  Unstructured at ``sparsity`` (mask
    chosen per block by the OBS saliency), N:M with ``prunen:prunem``, or a given ``mask`` (True = prune)."""
    W, H = W.clone().float(), H.clone().float()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.diag(H).mean() * torch.eye(cols, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        if mask is not None:
            mask1 = mask[:, i1:i2].clone()
        elif prunen == 0:
            tmp = W1 ** 2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if mask is None and prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:i + prunem] ** 2 / torch.diag(Hinv1)[i:i + prunem].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W
