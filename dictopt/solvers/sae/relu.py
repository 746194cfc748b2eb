"""ReLU SAE with the L1 penalty weighted by decoder norm (SAELens "standard").

Loss on a batch (``f = ReLU((x - b_dec) W_enc + b_enc)``)::

    mse(x, f W_dec + b_dec) + l1_coefficient · (1/B) Σ_n Σ_k f_nk ‖W_dec[k]‖

Half of it is exactly the canonical objective of THEORY §1 with ``a_nk = ‖W_dec[k]‖ f_nk``,
unit atoms ``W_dec[k] / ‖W_dec[k]‖`` and ``λ = l1_coefficient / 2`` (tested to 1e-6).
With ``unit_norm_decoder=True`` the decoder rows are held at norm 1 (the weighting is then 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dictopt.solvers.sae.base import (
    SAE,
    ForwardOutput,
    SAEConfig,
    check_nonnegative,
    mse_loss,
    register_sae,
)


@dataclass
class ReLUSAEConfig(SAEConfig):
    """ReLU SAE ("standard" in SAELens)."""

    architecture: ClassVar[str] = "relu"

    l1_coefficient: float = 1.0
    """Coefficient ``c`` of the decoder-norm-weighted L1 penalty; λ = c / 2 (THEORY §1)."""

    def validate(self) -> None:
        super().validate()
        self.l1_coefficient = check_nonnegative(self.l1_coefficient, "l1_coefficient")


@register_sae
class ReLUSAE(SAE):
    """``f = ReLU((x - b_dec) W_enc + b_enc)``, L1 weighted by decoder norm."""

    architecture: ClassVar[str] = "relu"
    config_class: ClassVar[type[SAEConfig]] = ReLUSAEConfig
    cfg: ReLUSAEConfig

    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden_pre(x_ND))

    @torch.no_grad()
    def encode_columns(self, x_ND: Any, idx_P: torch.Tensor) -> torch.Tensor:
        """``encode(x)[:, idx]`` computed for those latents only (they are independent)."""
        return torch.relu(self.hidden_pre_columns(self.prepare_input(x_ND), idx_P))

    def training_forward(
        self,
        x_ND: torch.Tensor,
        *,
        coefficient_scale: float = 1.0,
        dead_mask_K: torch.Tensor | None = None,
    ) -> ForwardOutput:
        acts = torch.relu(self.hidden_pre(x_ND))
        recon = self.decode(acts)
        mse = mse_loss(x_ND, recon)
        l1 = (acts * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
        coef = self.cfg.l1_coefficient * coefficient_scale
        return ForwardOutput(mse + coef * l1, {"mse": mse, "l1": l1}, acts, recon)

    def _fold_coefficients(self, scale: float) -> None:
        # Raw loss = trained loss / scale²: mse scales by 1/scale², Σ f‖W_dec‖ by 1/scale.
        self.cfg.l1_coefficient /= scale

    def lam(self) -> float:
        return self.cfg.l1_coefficient / 2

    def lam_convention(self) -> str:
        return (
            "lam = l1_coefficient / 2: the SAE loss mean_n[sum_i (x - x_hat)_i^2 + "
            "l1_coefficient * sum_k f_k ||W_dec[k]||] is exactly 2 x the canonical loss"
        )
