"""A tiny exact nonnegative-lasso coder for tests (coordinate descent to KKT ≤ 1e-12)."""

from __future__ import annotations

import torch


def lasso_codes(atoms_KD, x_ND, lam, bias=None, iters=5000, tol=1e-13):  # noqa: ANN001, ANN201
    D = torch.as_tensor(atoms_KD, dtype=torch.float64)
    x = torch.as_tensor(x_ND, dtype=torch.float64)
    y = x - (torch.as_tensor(bias, dtype=torch.float64) if bias is not None else 0)
    N, K = y.shape[0], D.shape[0]
    gram = D @ D.t()
    a = torch.zeros(N, K, dtype=torch.float64)
    c = y @ D.t()  # d_k · y_n
    for _ in range(iters):
        worst = 0.0
        for k in range(K):
            g = c[:, k] - a @ gram[:, k]  # d_k · r_n
            new = (a[:, k] + g - lam).clamp(min=0)
            worst = max(worst, float((new - a[:, k]).abs().max()))
            a[:, k] = new
        if worst < tol:
            break
    return a
