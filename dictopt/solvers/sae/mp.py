"""Matching-pursuit SAE (Costa et al. 2025, "MP-SAE"): the encoder is greedy residual pursuit.

Nonnegative pursuit over the decoder rows ``w_k`` (norms ``s_k``), ``k`` steps per input::

    r ← x - b_dec;  repeat k times:
        j = argmax_k (w_k · r) / s_k;  α = max((w_j · r) / s_j², 0);  f_j += α;  r ← r - α w_j

An atom may be chosen more than once (its code accumulates); a step whose best correlation is
not positive adds nothing, so codes are nonnegative. The correlations are updated with the
Gram matrix ``W_dec W_decᵀ`` instead of recomputing ``r W_decᵀ``; the whole unrolled pursuit is
differentiable in ``W_dec`` and ``b_dec``. Loss: ``mse(x, f W_dec + b_dec)``. No encoder
weights, no L1: ``lam=None``. Saved tensors: only ``W_dec``/``b_dec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dictopt.solvers.sae.base import SAE, ForwardOutput, SAEConfig, mse_loss, register_sae
from dictopt.validation import DictoptInputError, check_positive_int


@dataclass
class MPSAEConfig(SAEConfig):
    """Matching-pursuit SAE."""

    architecture: ClassVar[str] = "mp"

    unit_norm_decoder: bool = True
    """Hard unit-norm decoder rows (pursuit compares atoms by direction)."""
    k: int = 8
    """Pursuit steps per input (at most ``k`` distinct active latents; 1 ≤ k ≤ d_sae)."""

    def validate(self) -> None:
        super().validate()
        self.k = check_positive_int(self.k, "k")
        if self.k > self.d_sae:
            raise DictoptInputError(f"k: {self.k} exceeds the number of latents d_sae={self.d_sae}")


def matching_pursuit(
    r_ND: torch.Tensor, W_KD: torch.Tensor, k: int
) -> torch.Tensor:
    """Nonnegative matching-pursuit codes ``[N, K]`` of residuals ``r`` over rows of ``W``.

    Parameters
    ----------
    r_ND:
        Residuals to encode.
    W_KD:
        Unit atoms.
    k:
        Greedy steps (atoms per row).

    Returns
    -------
    torch.Tensor
        Nonnegative codes ``[N, K]``.
    """
    sq_K = (W_KD * W_KD).sum(dim=1)
    norm_K = sq_K.sqrt()
    gram_KK = W_KD @ W_KD.T
    corr_NK = r_ND @ W_KD.T
    codes = torch.zeros_like(corr_NK)
    for _ in range(k):
        j = (corr_NK / norm_K).argmax(dim=1, keepdim=True)
        alpha = torch.relu(corr_NK.gather(1, j) / sq_K[j])
        codes = codes.scatter_add(1, j, alpha)
        corr_NK = corr_NK - alpha * gram_KK[j.squeeze(1)]
    return codes


@register_sae
class MPSAE(SAE):
    """Greedy nonnegative residual pursuit over the decoder; no encoder weights."""

    architecture: ClassVar[str] = "mp"
    config_class: ClassVar[type[SAEConfig]] = MPSAEConfig
    has_encoder_weights: ClassVar[bool] = False
    cfg: MPSAEConfig

    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return matching_pursuit(self.sae_in(x_ND), self.W_dec, self.cfg.k)

    def training_forward(
        self,
        x_ND: torch.Tensor,
        *,
        coefficient_scale: float = 1.0,
        dead_mask_K: torch.Tensor | None = None,
    ) -> ForwardOutput:
        acts = self._encode(x_ND)
        recon = self.decode(acts)
        mse = mse_loss(x_ND, recon)
        return ForwardOutput(mse, {"mse": mse}, acts, recon)
