"""The shared skeleton of every SAE architecture: config, parameters, conversion, save/load.

Orientation follows SAELens: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``
(atoms are rows, as everywhere in dictopt), ``b_dec [d_in]``. With ``apply_b_dec_to_input`` the
encoder sees ``x - b_dec``.

Every training loss here uses the SAELens reconstruction term

    mse(x, x̂) = (1/B) Σ_n Σ_i (x_ni - x̂_ni)²        (sum over dimensions, mean over the batch)

so for an L1 objective ``mse + c Σ_k f_k ‖W_dec[k]‖`` the canonical λ of THEORY §1 is ``c / 2``
(divide the whole loss by 2; atom norms move into the codes, see
:meth:`dictopt.problem.Dictionary.from_decoder`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from dictopt.problem import Dictionary
from dictopt.validation import (
    DictoptInputError,
    check_finite,
    check_matrix,
    check_positive_int,
    to_tensor,
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def check_nonnegative(value: Any, name: str) -> float:
    """A coefficient that must be a finite number ≥ 0.

    Parameters
    ----------
    value:
        The value.
    name:
        Its name, for the error.

    Returns
    -------
    float
        The value.
    """
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise DictoptInputError(f"{name}: must be a number ≥ 0, got {value!r}") from err
    if not math.isfinite(v) or v < 0:
        raise DictoptInputError(f"{name}: must be a finite number ≥ 0, got {v}")
    return v


def check_positive(value: Any, name: str) -> float:
    """A quantity that must be a finite number > 0.

    Parameters
    ----------
    value:
        The value.
    name:
        Its name, for the error.

    Returns
    -------
    float
        The value.
    """
    v = check_nonnegative(value, name)
    if v == 0:
        raise DictoptInputError(f"{name}: must be > 0, got 0")
    return v


@dataclass
class SAEConfig:
    """Hyperparameters shared by every architecture (SAELens names)."""

    architecture: ClassVar[str] = ""

    d_in: int
    """Width ``d`` of the activations."""
    d_sae: int
    """Number of latents ``K``."""
    dtype: str = "float32"
    """Parameter dtype: ``"float32"``, ``"float64"`` or ``"bfloat16"``."""
    apply_b_dec_to_input: bool = True
    """Encode ``x - b_dec`` instead of ``x``."""
    unit_norm_decoder: bool = False
    """Hard constraint ‖W_dec[k]‖ = 1: gradients parallel to each atom are removed and the rows
    renormalised after every step."""
    decoder_init_norm: float = 0.1
    """Initial norm of the decoder rows when the decoder is not constrained to unit norm."""
    init_encoder_as_decoder_transpose: bool = True
    """Initialise ``W_enc = W_decᵀ`` (otherwise an independent random matrix)."""
    activation_scaling_factor: float = 1.0
    """Factor ``c`` the training activations were multiplied by, already folded into the
    weights (provenance only: the saved SAE acts on raw activations)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`DictoptInputError` naming the first bad field."""
        self.d_in = check_positive_int(self.d_in, "d_in")
        self.d_sae = check_positive_int(self.d_sae, "d_sae")
        if self.dtype not in _DTYPES:
            raise DictoptInputError(f"dtype: expected one of {sorted(_DTYPES)}, got {self.dtype!r}")
        self.decoder_init_norm = check_positive(self.decoder_init_norm, "decoder_init_norm")
        self.activation_scaling_factor = check_positive(
            self.activation_scaling_factor, "activation_scaling_factor"
        )

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields plus ``architecture``."""
        return {"architecture": self.architecture, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SAEConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k != "architecture"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise DictoptInputError(
                f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}"
            )
        return cls(**values)


class ForwardOutput(NamedTuple):
    """One training forward pass."""

    loss: torch.Tensor
    """The total training loss (scalar, differentiable)."""
    losses: dict[str, torch.Tensor]
    """Its named parts (``mse``, ``l1``, ``l0``, ``aux``, ``mse_prefix_W`` ...)."""
    acts: torch.Tensor
    """The latent activations used for the reconstruction (training-mode codes)."""
    recon: torch.Tensor
    """The reconstruction ``acts @ W_dec + b_dec``."""


def mse_loss(x_ND: torch.Tensor, recon_ND: torch.Tensor) -> torch.Tensor:
    """SAELens reconstruction loss: squared error summed over dimensions, mean over the batch.

    Parameters
    ----------
    x_ND:
        Inputs.
    recon_ND:
        Reconstructions.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    return ((recon_ND - x_ND) ** 2).sum(dim=-1).mean()


class SAE(nn.Module, ABC):
    """Base class: parameters, encode/decode, decoder constraint, conversion and save/load.

    Subclasses set ``architecture``, ``config_class``, and implement :meth:`encode` (inference
    codes, raw scale) and :meth:`training_forward`.
    """

    architecture: ClassVar[str] = ""
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    #: Whether the architecture has encoder weights ``W_enc``/``b_enc`` (pursuit SAEs do not).
    has_encoder_weights: ClassVar[bool] = True

    def __init__(self, cfg: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise DictoptInputError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(cfg).__name__}"
            )
        cfg.validate()
        self.cfg = cfg
        d, K, dtype = cfg.d_in, cfg.d_sae, cfg.torch_dtype
        # Uniform init (kaiming-like scale), drawn in float64 on CPU so every dtype and device
        # starts from the same numbers for a given seed.
        W_dec = (torch.rand(K, d, generator=generator, dtype=torch.float64) * 2 - 1) / math.sqrt(d)
        norm = 1.0 if cfg.unit_norm_decoder else cfg.decoder_init_norm
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * norm
        self.W_dec = nn.Parameter(W_dec.to(dtype))
        self.b_dec = nn.Parameter(torch.zeros(d, dtype=dtype))
        if self.has_encoder_weights:
            if cfg.init_encoder_as_decoder_transpose:
                W_enc = W_dec.T.clone()
            else:
                W_enc = (torch.rand(d, K, generator=generator, dtype=torch.float64) * 2 - 1)
                W_enc = W_enc / math.sqrt(d)
            self.W_enc = nn.Parameter(W_enc.to(dtype))
            self.b_enc = nn.Parameter(torch.zeros(K, dtype=dtype))

    # -- shapes and input ------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def prepare_input(self, x_ND: Any) -> torch.Tensor:
        """Validate a batch (2-D, width ``d_in``, finite) and cast it to the parameters."""
        x = to_tensor(x_ND, "activations")
        check_matrix(x, "activations", width=self.d_in)
        check_finite(x, "activations")
        return x.to(dtype=self.W_dec.dtype, device=self.W_dec.device)

    def sae_in(self, x_ND: torch.Tensor) -> torch.Tensor:
        return x_ND - self.b_dec if self.cfg.apply_b_dec_to_input else x_ND

    def hidden_pre(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``(x - b_dec) W_enc + b_enc``."""
        return self.sae_in(x_ND) @ self.W_enc + self.b_enc

    def hidden_pre_columns(self, x_ND: torch.Tensor, idx_P: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the latents ``idx_P`` only (``[N, P]``, cost ``N d P``)."""
        return self.sae_in(x_ND) @ self.W_enc[:, idx_P] + self.b_enc[idx_P]

    # -- inference -------------------------------------------------------------------------
    @abstractmethod
    def _encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Inference codes of a validated batch (each architecture's activation)."""

    @torch.no_grad()
    def encode(self, x_ND: Any) -> torch.Tensor:
        """Inference codes ``[N, d_sae]`` in the SAE's own scale (no gradient)."""
        return self._encode(self.prepare_input(x_ND))

    def decode(self, acts_NK: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``acts @ W_dec + b_dec``."""
        return acts_NK.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x_ND: Any) -> torch.Tensor:
        """``decode(encode(x))`` (inference)."""
        return self.decode(self.encode(x_ND))

    # -- training --------------------------------------------------------------------------
    @abstractmethod
    def training_forward(
        self,
        x_ND: torch.Tensor,
        *,
        coefficient_scale: float = 1.0,
        dead_mask_K: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """The training loss on a batch.

        ``coefficient_scale`` multiplies the sparsity coefficient (warm-up); ``dead_mask_K``
        marks dead latents for auxiliary losses. Pure: no buffer is updated here.
        """

    def loss(self, x_ND: Any) -> float:
        """The SAE's own training loss on a batch (full coefficients, no auxiliary terms)."""
        with torch.no_grad():
            return float(self.training_forward(self.prepare_input(x_ND)).loss)

    @torch.no_grad()
    def update_buffers(self, out: ForwardOutput) -> None:
        """State updated after an optimiser step (e.g. BatchTopK's threshold). Default: none."""

    def latent_axes(self) -> dict[str, int]:
        """For each parameter, the axis indexed by latents (used to reinitialise latents)."""
        axes = {"W_dec": 0}
        if self.has_encoder_weights:
            axes.update(W_enc=1, b_enc=0)
        return axes

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component along each atom (unit-norm decoders only)."""
        if not self.cfg.unit_norm_decoder or self.W_dec.grad is None:
            return
        W = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        g = self.W_dec.grad
        g -= (g * W).sum(dim=1, keepdim=True) * W

    @torch.no_grad()
    def constrain(self) -> None:
        """Re-impose constraints after a step (unit-norm decoder rows, positive thresholds)."""
        if self.cfg.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def reinit_latents(self, idx: torch.Tensor, directions_JD: torch.Tensor) -> None:
        """Point latents ``idx`` along unit ``directions`` (dead-latent resampling).

        The decoder rows get the direction (at the mean norm of the other rows unless the
        decoder is unit-norm); the encoder columns the same direction at 0.2 × the mean alive
        encoder norm (Bricken et al. 2023), and ``b_enc`` zero.
        """
        alive = torch.ones(self.d_sae, dtype=torch.bool, device=self.W_dec.device)
        alive[idx] = False
        dirs = directions_JD.to(self.W_dec.dtype)
        if self.cfg.unit_norm_decoder or not bool(alive.any()):
            dec_norm = 1.0
        else:
            dec_norm = float(self.W_dec[alive].norm(dim=1).mean())
        self.W_dec[idx] = dirs * dec_norm
        if self.has_encoder_weights:
            enc_norm = float(self.W_enc[:, alive].norm(dim=0).mean()) if bool(alive.any()) else 1.0
            self.W_enc[:, idx] = (dirs * 0.2 * enc_norm).T
            self.b_enc[idx] = 0

    @torch.no_grad()
    def fold_activation_norm(self, scale: float) -> None:
        """Fold an input scaling ``x' = scale · x`` into the weights, exactly.

        Trained on ``x'``: ``pre = (x' - b_dec) W_enc + b_enc`` and ``x̂' = f W_dec + b_dec``.
        With ``W_enc ← scale W_enc``, ``W_dec ← W_dec / scale``, ``b_dec ← b_dec / scale`` the
        same codes ``f`` arise from raw ``x`` and ``x̂ = x̂' / scale``. The loss on raw data is the
        trained loss divided by ``scale²``; coefficients are adjusted by :meth:`_fold_coefficients`
        so that :meth:`loss` stays that quotient.
        """
        scale = check_positive(scale, "scale")
        if self.has_encoder_weights:
            self.W_enc *= scale
        self.W_dec /= scale
        self.b_dec /= scale
        self._fold_coefficients(scale)
        self.cfg.activation_scaling_factor *= scale

    def _fold_coefficients(self, scale: float) -> None:
        """Adjust loss coefficients after :meth:`fold_activation_norm` (default: none)."""

    # -- canonical conversion --------------------------------------------------------------
    def lam(self) -> float | None:
        """λ in THEORY §1's convention, or ``None`` for objectives without an L1 term."""
        return None

    def lam_convention(self) -> str:
        """One line saying how λ relates to this architecture's own loss."""
        return "no L1 objective: lam is None (an implied λ can be inferred by the checker)"

    def to_dictionary(self, *, meta: dict[str, Any] | None = None) -> Dictionary:
        """The canonical :class:`Dictionary` (unit atoms, codes rescaled by decoder norms).

        The encoder is a frozen copy of this SAE, so later training does not change it.
        """
        frozen = copy.deepcopy(self).eval().requires_grad_(False)
        info = {
            "architecture": self.architecture,
            "sae_config": self.cfg.to_dict(),
            "lam_conversion": self.lam_convention(),
        }
        info.update(meta or {})
        return Dictionary.from_decoder(
            frozen.W_dec.detach(),
            frozen.b_dec.detach(),
            lam=self.lam(),
            encoder=frozen,
            meta=info,
        )

    # -- RawEncoder protocol (dictopt.io.native) --------------------------------------------
    def config(self) -> dict[str, Any]:
        """The SAE's hyperparameters (SAELens names), JSON-serialisable."""
        return self.cfg.to_dict()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Encoder tensors (SAELens names); never ``W_dec``/``b_dec``."""
        if not self.has_encoder_weights:
            return {}
        return {"W_enc": self.W_enc.detach(), "b_enc": self.b_enc.detach()}

    def _load_extra(self, tensors: dict[str, torch.Tensor]) -> None:
        """Subclasses load their extra tensors (thresholds) here."""

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SAE:
        """Rebuild from :meth:`config` and saved tensors (``W_dec``/``b_dec`` included)."""
        cfg = cls.config_class.from_dict(config)
        sae = cls(cfg)
        sae.load_named(tensors)
        return sae.eval()

    @torch.no_grad()
    def load_named(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy saved tensors in, checking names and shapes."""
        wanted = {"W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.has_encoder_weights:
            wanted.update(W_enc=self.W_enc, b_enc=self.b_enc)
        for name, param in wanted.items():
            if name not in tensors:
                raise DictoptInputError(f"{self.architecture} SAE: missing tensor {name!r}")
            t = tensors[name]
            if tuple(t.shape) != tuple(param.shape):
                raise DictoptInputError(
                    f"{self.architecture} SAE: tensor {name!r} has shape {tuple(t.shape)}, "
                    f"expected {tuple(param.shape)} for d_in={self.d_in}, d_sae={self.d_sae}"
                )
            param.copy_(t.to(param.dtype))
        self._load_extra(tensors)


#: Architectures by name (filled by :func:`register_sae`).
SAE_CLASSES: dict[str, type[SAE]] = {}


def register_sae(cls: type[SAE]) -> type[SAE]:
    """Class decorator: add an SAE to :data:`SAE_CLASSES` and the encoder registry.

    Parameters
    ----------
    cls:
        An SAE class with ``architecture`` and ``config_class``.

    Returns
    -------
    type[SAE]
        ``cls``.
    """
    from dictopt.problem import register_encoder

    name = cls.architecture
    if name in SAE_CLASSES and SAE_CLASSES[name] is not cls:
        raise ValueError(f"SAE architecture {name!r} is registered twice")
    SAE_CLASSES[name] = cls
    register_encoder(cls)
    return cls


def get_sae_class(architecture: str) -> type[SAE]:
    """The SAE class for ``architecture`` (clear error listing the known ones).

    Parameters
    ----------
    architecture:
        A registered architecture name.

    Returns
    -------
    type[SAE]
        The class.
    """
    try:
        return SAE_CLASSES[architecture]
    except KeyError:
        raise DictoptInputError(
            f"unknown SAE architecture {architecture!r}; known: {', '.join(sorted(SAE_CLASSES))}"
        ) from None


def make_config(architecture: str, **fields: Any) -> SAEConfig:
    """The config dataclass of ``architecture`` built from keyword fields.

    Parameters
    ----------
    architecture:
        A registered architecture name.
    **fields:
        The config's fields.

    Returns
    -------
    SAEConfig
        Validated.
    """
    return get_sae_class(architecture).config_class.from_dict(fields)


def make_sae(cfg: SAEConfig, *, seed: int | None = None) -> SAE:
    """A freshly initialised SAE for ``cfg`` (deterministic for a given ``seed``).

    Parameters
    ----------
    cfg:
        The configuration.
    seed:
        Seed of the initial weights (``None``: torch's global state).

    Returns
    -------
    SAE
        Initialised.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return get_sae_class(cfg.architecture)(cfg, generator=gen)
