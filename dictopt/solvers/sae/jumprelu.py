"""JumpReLU SAE (Rajamanoharan et al. 2024) with an L0 penalty and straight-through threshold.

``f = pre · [pre > θ]`` with a learned per-latent threshold ``θ > 0``. Loss::

    mse(x, f W_dec + b_dec) + l0_coefficient · (1/B) Σ_n Σ_k [pre_nk > θ_k]

The step function gets a pseudo-derivative through a rectangle kernel of width ``bandwidth``
(for ``θ`` only; ``pre`` gets the ordinary gradient of ``f`` where the latent is on).

An L0 penalty has no λ: the canonical ``Dictionary`` carries ``lam=None``. Half the loss is
``½‖r‖² + (l0_coefficient / 2) · L0`` in the canonical units (unit atoms; the decoder is held
at unit norm by default, so L0 does not depend on the code scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dictopt.solvers.sae.base import (
    SAE,
    ForwardOutput,
    SAEConfig,
    check_nonnegative,
    check_positive,
    mse_loss,
    register_sae,
)
from dictopt.validation import DictoptInputError

#: Smallest threshold kept after a step (θ must stay positive so that codes are nonnegative).
MIN_THRESHOLD = 1e-6


def _rectangle(z: torch.Tensor) -> torch.Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > theta).to(grad.dtype) * grad
        grad_theta = (-(theta / eps) * _rectangle((pre - theta) / eps) * grad).sum(dim=0)
        return grad_pre, grad_theta, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = (-(1.0 / eps) * _rectangle((pre - theta) / eps) * grad).sum(dim=0)
        return None, grad_theta, None


@dataclass
class JumpReLUSAEConfig(SAEConfig):
    """JumpReLU SAE."""

    architecture: ClassVar[str] = "jumprelu"

    unit_norm_decoder: bool = True
    """Hard unit-norm decoder rows (as in Rajamanoharan et al.)."""
    l0_coefficient: float = 1.0
    """Weight of the L0 penalty (mean number of active latents per input)."""
    jumprelu_init_threshold: float = 0.001
    """Initial threshold θ of every latent (> 0)."""
    jumprelu_bandwidth: float = 0.001
    """Width ε of the rectangle kernel of the straight-through estimator (> 0)."""

    def validate(self) -> None:
        super().validate()
        self.l0_coefficient = check_nonnegative(self.l0_coefficient, "l0_coefficient")
        self.jumprelu_init_threshold = check_positive(
            self.jumprelu_init_threshold, "jumprelu_init_threshold"
        )
        self.jumprelu_bandwidth = check_positive(self.jumprelu_bandwidth, "jumprelu_bandwidth")


@register_sae
class JumpReLUSAE(SAE):
    """``f = pre · [pre > θ]``; θ is a parameter trained through the straight-through kernel."""

    architecture: ClassVar[str] = "jumprelu"
    config_class: ClassVar[type[SAEConfig]] = JumpReLUSAEConfig
    cfg: JumpReLUSAEConfig

    def __init__(self, cfg: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator=generator)
        init = self.cfg.jumprelu_init_threshold
        self.threshold = nn.Parameter(torch.full((self.d_sae,), init, dtype=self.W_dec.dtype))

    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        pre = self.hidden_pre(x_ND)
        return pre * (pre > self.threshold).to(pre.dtype)

    @torch.no_grad()
    def encode_columns(self, x_ND: Any, idx_P: torch.Tensor) -> torch.Tensor:
        """``encode(x)[:, idx]`` computed for those latents only (they are independent)."""
        pre = self.hidden_pre_columns(self.prepare_input(x_ND), idx_P)
        return pre * (pre > self.threshold[idx_P]).to(pre.dtype)

    def training_forward(
        self,
        x_ND: torch.Tensor,
        *,
        coefficient_scale: float = 1.0,
        dead_mask_K: torch.Tensor | None = None,
    ) -> ForwardOutput:
        pre = self.hidden_pre(x_ND)
        bw = self.cfg.jumprelu_bandwidth
        acts = _JumpReLU.apply(pre, self.threshold, bw)
        recon = self.decode(acts)
        mse = mse_loss(x_ND, recon)
        l0 = _Step.apply(pre, self.threshold, bw).sum(dim=-1).mean()
        coef = self.cfg.l0_coefficient * coefficient_scale
        return ForwardOutput(mse + coef * l0, {"mse": mse, "l0": l0}, acts, recon)

    def latent_axes(self) -> dict[str, int]:
        return {**super().latent_axes(), "threshold": 0}

    @torch.no_grad()
    def constrain(self) -> None:
        super().constrain()
        self.threshold.clamp_(min=MIN_THRESHOLD)

    @torch.no_grad()
    def reinit_latents(self, idx: torch.Tensor, directions_JD: torch.Tensor) -> None:
        super().reinit_latents(idx, directions_JD)
        self.threshold[idx] = self.cfg.jumprelu_init_threshold

    def _fold_coefficients(self, scale: float) -> None:
        # Raw loss = trained loss / scale²: mse scales by 1/scale², L0 not at all.
        self.cfg.l0_coefficient /= scale**2

    def lam_convention(self) -> str:
        return (
            "no L1 objective: lam is None. The JumpReLU loss mean_n[sum_i (x - x_hat)_i^2 + "
            "l0_coefficient * L0] is 2 x (1/2 ||r||^2 + (l0_coefficient/2) * L0) in canonical "
            f"units (l0_coefficient = {self.cfg.l0_coefficient:.6g})"
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**super().tensors(), "threshold": self.threshold.detach()}

    def _load_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        thr = tensors.get("threshold")
        if thr is None:
            raise DictoptInputError("jumprelu SAE: missing tensor 'threshold'")
        if tuple(thr.shape) != (self.d_sae,):
            raise DictoptInputError(
                f"jumprelu SAE: 'threshold' has shape {tuple(thr.shape)}, expected ({self.d_sae},)"
            )
        if not bool(torch.isfinite(thr).all()) or float(thr.min()) < 0:
            raise DictoptInputError(
                "jumprelu SAE: 'threshold' must be finite and ≥ 0 (codes must be nonnegative)"
            )
        with torch.no_grad():
            self.threshold.copy_(thr.to(self.threshold.dtype))
