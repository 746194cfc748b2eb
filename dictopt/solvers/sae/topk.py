"""TopK-family SAEs: TopK (with AuxK), BatchTopK and Matryoshka BatchTopK.

None has an L1 term, so their canonical ``Dictionary`` carries ``lam=None`` (the checker infers
an implied λ). The decoder is held at unit norm by default (Gao et al. 2024), so the canonical
codes equal the raw codes up to rounding; with a free decoder the canonical form rescales
them exactly as for any SAE.

Losses (``mse`` as in :mod:`dictopt.solvers.sae.base`)::

    TopK:        mse(x, x̂) + aux_loss_coefficient · mse(e, ê_dead)
    BatchTopK:   same, with the top ``k·B`` activations of the whole batch kept
    Matryoshka:  BatchTopK loss + Σ_{w in widths[:-1]} mse(x, f[:, :w] W_dec[:w] + b_dec)

``e = x - x̂`` (detached) and ``ê_dead`` its reconstruction by the ``k_aux`` largest
pre-activations among dead latents (AuxK; no bias).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dictopt.solvers.sae.base import (
    SAE,
    ForwardOutput,
    SAEConfig,
    check_nonnegative,
    check_positive,
    mse_loss,
    register_sae,
)
from dictopt.validation import DictoptInputError, check_positive_int


def topk_acts(pre_NK: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU'd; zero elsewhere.

    Parameters
    ----------
    pre_NK:
        Pre-activations.
    k:
        Latents kept per row.

    Returns
    -------
    torch.Tensor
        ``[N, K]``.
    """
    vals, idx = pre_NK.topk(k, dim=-1)
    return torch.zeros_like(pre_NK).scatter(-1, idx, torch.relu(vals))


def batch_topk_acts(pre_NK: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the ``round(k·B)`` largest ReLU'd activations of the whole batch.

    Parameters
    ----------
    pre_NK:
        Pre-activations of a batch.
    k:
        Mean latents kept per row.

    Returns
    -------
    torch.Tensor
        ``[N, K]``.
    """
    acts = torch.relu(pre_NK)
    flat = acts.flatten()
    m = min(max(int(round(k * pre_NK.shape[0])), 1), flat.numel())
    vals, idx = flat.topk(m)
    return torch.zeros_like(flat).scatter(-1, idx, vals).reshape(acts.shape)


@dataclass
class TopKSAEConfig(SAEConfig):
    """TopK SAE (Gao et al. 2024)."""

    architecture: ClassVar[str] = "topk"

    unit_norm_decoder: bool = True
    """Hard unit-norm decoder rows (default on for TopK-family SAEs)."""
    k: int = 8
    """Active latents per input (1 ≤ k ≤ d_sae)."""
    aux_loss_coefficient: float = 1 / 32
    """Weight of the AuxK dead-latent loss (Gao et al. use 1/32)."""
    k_aux: int | None = None
    """Dead latents used by AuxK (default ``d_in // 2``, at least 1)."""

    def validate(self) -> None:
        super().validate()
        self._validate_k()
        self.aux_loss_coefficient = check_nonnegative(
            self.aux_loss_coefficient, "aux_loss_coefficient"
        )
        if self.k_aux is not None:
            self.k_aux = check_positive_int(self.k_aux, "k_aux")

    def _validate_k(self) -> None:
        self.k = check_positive_int(self.k, "k")
        if self.k > self.d_sae:
            raise DictoptInputError(f"k: {self.k} exceeds the number of latents d_sae={self.d_sae}")

    @property
    def aux_k(self) -> int:
        return self.k_aux if self.k_aux is not None else max(self.d_in // 2, 1)


@register_sae
class TopKSAE(SAE):
    """``f = TopK_k(ReLU(pre))`` with AuxK on dead latents."""

    architecture: ClassVar[str] = "topk"
    config_class: ClassVar[type[SAEConfig]] = TopKSAEConfig
    cfg: TopKSAEConfig

    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return topk_acts(self.hidden_pre(x_ND), self.cfg.k)

    def _train_acts(self, pre_NK: torch.Tensor) -> torch.Tensor:
        return topk_acts(pre_NK, self.cfg.k)

    def _aux_loss(
        self, pre_NK: torch.Tensor, resid_ND: torch.Tensor, dead_mask_K: torch.Tensor | None
    ) -> torch.Tensor:
        zero = pre_NK.new_zeros(())
        if dead_mask_K is None or self.cfg.aux_loss_coefficient == 0:
            return zero
        n_dead = int(dead_mask_K.sum())
        if n_dead == 0:
            return zero
        dead_pre = pre_NK.masked_fill(~dead_mask_K.to(pre_NK.device), float("-inf"))
        aux_acts = topk_acts(dead_pre, min(self.cfg.aux_k, n_dead))
        return mse_loss(resid_ND.detach(), aux_acts @ self.W_dec)

    def training_forward(
        self,
        x_ND: torch.Tensor,
        *,
        coefficient_scale: float = 1.0,
        dead_mask_K: torch.Tensor | None = None,
    ) -> ForwardOutput:
        pre = self.hidden_pre(x_ND)
        acts = self._train_acts(pre)
        recon = self.decode(acts)
        mse = mse_loss(x_ND, recon)
        losses = {"mse": mse}
        loss = mse + self._extra_losses(acts, x_ND, losses)
        aux = self._aux_loss(pre, x_ND - recon, dead_mask_K)
        losses["aux"] = aux
        return ForwardOutput(loss + self.cfg.aux_loss_coefficient * aux, losses, acts, recon)

    def _extra_losses(
        self, acts_NK: torch.Tensor, x_ND: torch.Tensor, losses: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return acts_NK.new_zeros(())


@dataclass
class BatchTopKSAEConfig(TopKSAEConfig):
    """BatchTopK SAE (Bussmann et al. 2024); saved for inference with a global threshold."""

    architecture: ClassVar[str] = "batchtopk"

    k: float = 8.0  # type: ignore[assignment]
    """Mean active latents per input over a batch (a float, 0 < k ≤ d_sae)."""
    topk_threshold_lr: float = 0.01
    """EMA rate of the inference threshold towards the batch's smallest kept activation."""

    def validate(self) -> None:
        super().validate()
        self.topk_threshold_lr = check_positive(self.topk_threshold_lr, "topk_threshold_lr")
        if self.topk_threshold_lr > 1:
            raise DictoptInputError(f"topk_threshold_lr: must be ≤ 1, got {self.topk_threshold_lr}")

    def _validate_k(self) -> None:
        self.k = check_positive(self.k, "k")
        if self.k > self.d_sae:
            raise DictoptInputError(f"k: {self.k} exceeds the number of latents d_sae={self.d_sae}")


@register_sae
class BatchTopKSAE(TopKSAE):
    """Training: top ``k·B`` activations of the batch. Inference: ``f = pre · [pre > θ]``.

    ``θ`` is one global threshold, an EMA of the smallest activation kept in each training
    batch (SAELens); the first update sets it directly. Saved as a ``threshold [d_sae]``
    vector like SAELens' JumpReLU export.
    """

    architecture: ClassVar[str] = "batchtopk"
    config_class: ClassVar[type[SAEConfig]] = BatchTopKSAEConfig
    cfg: BatchTopKSAEConfig

    def __init__(self, cfg: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator=generator)
        self.register_buffer("topk_threshold", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))

    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        pre = self.hidden_pre(x_ND)
        theta = self.topk_threshold.to(pre.dtype)
        return torch.where(pre > theta, torch.relu(pre), torch.zeros_like(pre))

    def _train_acts(self, pre_NK: torch.Tensor) -> torch.Tensor:
        return batch_topk_acts(pre_NK, self.cfg.k)

    @torch.no_grad()
    def update_buffers(self, out: ForwardOutput) -> None:
        positive = out.acts[out.acts > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(torch.float64)
        lr = 1.0 if int(self.threshold_updates) == 0 else self.cfg.topk_threshold_lr
        self.topk_threshold.mul_(1 - lr).add_(lr * smallest)
        self.threshold_updates += 1

    def tensors(self) -> dict[str, torch.Tensor]:
        out = super().tensors()
        out["threshold"] = torch.full(
            (self.d_sae,), float(self.topk_threshold), dtype=self.W_dec.dtype
        )
        return out

    def _load_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        if "threshold" not in tensors:
            raise DictoptInputError(f"{self.architecture} SAE: missing tensor 'threshold'")
        thr = tensors["threshold"].to(torch.float64).flatten()
        if thr.numel() not in (1, self.d_sae) or bool((thr != thr[0]).any()):
            raise DictoptInputError(
                f"{self.architecture} SAE: 'threshold' must be one value repeated d_sae times "
                "(a per-latent threshold is a JumpReLU SAE)"
            )
        self.topk_threshold.fill_(float(thr[0]))
        self.threshold_updates.fill_(1)


@dataclass
class MatryoshkaSAEConfig(BatchTopKSAEConfig):
    """Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024)."""

    architecture: ClassVar[str] = "matryoshka"

    matryoshka_widths: list[int] = field(default_factory=list)
    """Strictly increasing prefix sizes; ``d_sae`` is appended when missing. Empty means
    ``[d_sae/8, d_sae/4, d_sae/2, d_sae]`` (rounded, at least ``ceil(k)``)."""

    def validate(self) -> None:
        super().validate()
        widths = [check_positive_int(w, "matryoshka_widths") for w in self.matryoshka_widths]
        if not widths:
            floor = int(-(-self.k // 1))
            widths = sorted({max(self.d_sae // m, floor) for m in (8, 4, 2)} | {self.d_sae})
            widths = [w for w in widths if w <= self.d_sae]
        if widths[-1] != self.d_sae:
            widths.append(self.d_sae)
        if any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
            raise DictoptInputError(
                f"matryoshka_widths: must be strictly increasing and ≤ d_sae={self.d_sae}, "
                f"got {widths}"
            )
        if widths[0] < self.k:
            raise DictoptInputError(
                f"matryoshka_widths: the smallest prefix ({widths[0]}) is below k={self.k}"
            )
        self.matryoshka_widths = widths


@register_sae
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested prefix reconstruction losses.

    Each prefix ``w`` reconstructs ``x`` from the first ``w`` latents of the *same* BatchTopK
    activations (truncation, as in Bussmann et al.; SAELens instead re-applies BatchTopK
    within each prefix).
    """

    architecture: ClassVar[str] = "matryoshka"
    config_class: ClassVar[type[SAEConfig]] = MatryoshkaSAEConfig
    cfg: MatryoshkaSAEConfig

    def _extra_losses(
        self, acts_NK: torch.Tensor, x_ND: torch.Tensor, losses: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        total = acts_NK.new_zeros(())
        for w in self.cfg.matryoshka_widths[:-1]:
            part = mse_loss(x_ND, acts_NK[:, :w] @ self.W_dec[:w] + self.b_dec)
            losses[f"mse_prefix_{w}"] = part
            total = total + part
        return total
