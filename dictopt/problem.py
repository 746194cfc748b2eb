"""The canonical problem of THEORY.md §1 and the one object every layer shares.

Orientation (everywhere in dictopt): atoms are **rows**. ``atoms_KD`` has shape ``[K, d]``
(the SAELens ``W_dec`` layout), codes ``codes_NK`` have shape ``[N, K]`` and data ``x_ND`` has
shape ``[N, d]``. The reconstruction of a batch is ``codes_NK @ atoms_KD + bias_D``.

The objective, with ``r_n = x_n - b - Σ_k a_kn d_k`` and unit-norm atoms ``d_k``::

    L(D, b, A) = (1/N) Σ_n [ ½ ‖r_n‖² + λ Σ_k a_kn ]

Any decoder ``W_dec`` with atom norms ``s_k`` is brought to this form exactly by
``d_k = W_dec[k] / s_k`` and ``a_kn = s_k f_kn`` (``f`` the original codes): reconstructions are
unchanged and ``λ Σ_k a_kn = λ Σ_k s_k f_kn`` is the decoder-norm-weighted L1 penalty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch

from dictopt.validation import (
    DictoptInputError,
    check_finite,
    check_lambda,
    check_matrix,
    to_tensor,
)

#: Atoms whose norm differs from 1 by more than this are "not canonical".
UNIT_NORM_TOL = 1e-5


# --------------------------------------------------------------------------------------------
# Encoders: how a dictionary produces codes for a batch.
# --------------------------------------------------------------------------------------------


@runtime_checkable
class RawEncoder(Protocol):
    """An encoder in its *own* (pre-canonical) scale, e.g. an SAE's ``encode``.

    Implementations register themselves with :func:`register_encoder` under
    ``architecture`` so that :mod:`dictopt.io.native` can save and rebuild them.
    """

    architecture: ClassVar[str]

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, K]`` in the encoder's own scale (before canonical rescaling)."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-serialisable hyperparameters needed to rebuild the encoder."""
        ...

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors (SAELens names: ``W_enc``, ``b_enc``, ``threshold``, ...).

        Never ``W_dec``/``b_dec``: the dictionary saves those itself (raw scale).
        """
        ...

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> RawEncoder:
        """Rebuild from :meth:`config` and the saved tensors (which include ``W_dec``/``b_dec``)."""
        ...


ENCODERS: dict[str, type] = {}


def register_encoder(cls: type) -> type:
    """Class decorator: make an encoder loadable by its ``architecture`` name."""
    name = cls.architecture  # type: ignore[attr-defined]
    if name in ENCODERS and ENCODERS[name] is not cls:
        raise ValueError(f"encoder architecture {name!r} is registered twice")
    ENCODERS[name] = cls
    return cls


def get_encoder_class(architecture: str) -> type:
    """The registered encoder class for ``architecture`` (clear error when unknown).

    Encoders register themselves when their module is imported (``@register_encoder``); the
    loaders in :mod:`dictopt.io` import every module that defines one.

    Parameters
    ----------
    architecture:
        The encoder's ``architecture`` name.

    Returns
    -------
    type
    """
    try:
        return ENCODERS[architecture]
    except KeyError:
        known = ", ".join(sorted(ENCODERS)) or "none"
        raise DictoptInputError(
            f"unknown encoder architecture {architecture!r}; known: {known}"
        ) from None


# --------------------------------------------------------------------------------------------
# The canonical dictionary.
# --------------------------------------------------------------------------------------------


@dataclass
class Dictionary:
    """A learned dictionary in canonical form (THEORY.md §1).

    Parameters
    ----------
    atoms:
        ``[K, d]`` unit-norm rows.
    bias:
        ``[d]`` decoder bias ``b`` (zeros for the problem without a bias; see ``has_bias``).
    lam:
        λ in the convention ``(1/N) Σ_n [½‖r_n‖² + λ Σ_k a_kn]``; ``None`` when the dictionary
        was not trained with an L1 objective (TopK, ...) and no λ has been supplied.
    encoder:
        The dictionary's own encoder in its raw scale, or ``None``: then codes are the optimal
        nonnegative-lasso codes for these atoms, bias and λ.
    code_scale:
        ``[K]`` factors ``s_k`` turning raw encoder codes into canonical codes (the raw decoder
        norms). Ones for dictionaries born canonical.
    has_bias:
        Whether ``b`` is a free parameter of the problem (conditions C3–C5 assume it is).
    meta:
        Provenance: solver, hyperparameters, source files. JSON-serialisable.
    """

    atoms: torch.Tensor
    bias: torch.Tensor
    lam: float | None = None
    encoder: RawEncoder | None = None
    code_scale: torch.Tensor | None = None
    has_bias: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atoms = check_matrix(to_tensor(self.atoms, "atoms"), "atoms", width_name="d")
        check_finite(self.atoms, "atoms")
        norms = self.atoms.norm(dim=1)
        zero = (norms == 0).nonzero()
        if zero.numel():
            raise DictoptInputError(f"atoms: atom {int(zero[0])} is zero; atoms must be nonzero")
        off = ((norms - 1).abs() > UNIT_NORM_TOL).nonzero()
        if off.numel():
            k = int(off[0])
            raise DictoptInputError(
                f"atoms: atom {k} has norm {float(norms[k]):.6g}, not 1; the dictionary is not "
                "canonical. Use Dictionary.from_decoder(W_dec, ...) to rescale atoms and codes."
            )
        self.bias = to_tensor(self.bias, "bias", dtype=self.atoms.dtype, device=self.atoms.device)
        if self.bias.shape != (self.d,):
            raise DictoptInputError(
                f"bias: expected shape ({self.d},) to match atoms [K={self.K}, d={self.d}], "
                f"got {tuple(self.bias.shape)}"
            )
        check_finite(self.bias.reshape(1, -1), "bias")
        if self.lam is not None:
            self.lam = check_lambda(self.lam)
        if self.code_scale is None:
            self.code_scale = torch.ones(self.K, dtype=self.atoms.dtype, device=self.atoms.device)
        else:
            self.code_scale = to_tensor(
                self.code_scale, "code_scale", dtype=self.atoms.dtype, device=self.atoms.device
            )
            if self.code_scale.shape != (self.K,):
                raise DictoptInputError(
                    f"code_scale: expected shape ({self.K},), got {tuple(self.code_scale.shape)}"
                )
        if not self.has_bias and bool(self.bias.any()):
            raise DictoptInputError("bias: must be zero when has_bias is False")

    # -- shape ---------------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Number of atoms."""
        return int(self.atoms.shape[0])

    @property
    def d(self) -> int:
        """Data dimension."""
        return int(self.atoms.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.atoms.dtype

    @property
    def device(self) -> torch.device:
        return self.atoms.device

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_decoder(
        cls,
        decoder: Any,
        bias: Any | None = None,
        lam: float | None = None,
        encoder: RawEncoder | None = None,
        *,
        has_bias: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> Dictionary:
        """Canonicalise a decoder ``[K, d]`` with arbitrary nonzero atom norms (THEORY §1).

        Atom ``k`` of norm ``s_k`` becomes ``W[k] / s_k`` and the encoder's codes are multiplied
        by ``s_k``: every reconstruction is unchanged, and an L1 penalty weighted by decoder
        norm becomes the plain L1 penalty of the canonical problem with the same λ.

        The norms and the division are computed in float64 whatever the stored precision.
        Half-precision decoders (``float16``, ``bfloat16``) give a ``float32`` dictionary: their
        8-bit (bf16) or 11-bit (fp16) mantissas cannot hold a unit norm to the checker's
        tolerance; float32 and float64 keep their dtype. The encoder keeps its own dtype
        semantics; loaders build SAE encoders in float32 from half-precision weights.
        """
        W = check_matrix(to_tensor(decoder, "decoder"), "decoder", width_name="d")
        check_finite(W, "decoder")
        dtype = torch.float32 if W.dtype in (torch.float16, torch.bfloat16) else W.dtype
        W64 = W.to(torch.float64)
        norms = W64.norm(dim=1)
        zero = (norms == 0).nonzero()
        if zero.numel():
            raise DictoptInputError(
                f"decoder: atom {int(zero[0])} is zero and cannot be canonicalised"
            )
        b = torch.zeros(W.shape[1], dtype=dtype) if bias is None else to_tensor(bias, "bias")
        if b.dtype in (torch.float16, torch.bfloat16):
            b = b.to(dtype)
        return cls(
            atoms=(W64 / norms[:, None]).to(dtype),
            bias=b,
            lam=lam,
            encoder=encoder,
            code_scale=norms.to(dtype),
            has_bias=has_bias,
            meta=dict(meta or {}),
        )

    def to(self, dtype: torch.dtype | None = None, device: Any = None) -> Dictionary:
        """A copy with tensors moved/cast (the encoder is shared, not copied)."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype=dtype or t.dtype, device=device or t.device)

        return Dictionary(
            atoms=move(self.atoms),
            bias=move(self.bias),
            lam=self.lam,
            encoder=self.encoder,
            code_scale=move(self.code_scale),
            has_bias=self.has_bias,
            meta=dict(self.meta),
        )

    def with_lam(self, lam: float) -> Dictionary:
        """A copy with λ set (e.g. an implied or user-supplied λ for a TopK SAE)."""
        out = self.to()
        out.lam = check_lambda(lam)
        return out

    @property
    def decoder(self) -> torch.Tensor:
        """The raw decoder ``atoms * code_scale`` (what an SAE stores as ``W_dec``)."""
        return self.atoms * self.code_scale[:, None]

    # -- codes -----------------------------------------------------------------------------
    def encode(self, x_ND: Any) -> torch.Tensor:
        """Canonical codes ``[N, K]`` for a batch: the own encoder, else optimal lasso codes."""
        x = self.prepare_batch(x_ND)
        if self.encoder is None:
            return self.optimal_codes(x)
        raw = self.encoder.encode(x)
        return raw.to(self.dtype) * self.code_scale

    def optimal_codes(self, x_ND: Any, **solver_options: Any) -> torch.Tensor:
        """Optimal nonnegative-lasso codes for these atoms, bias and λ (THEORY C1)."""
        if self.lam is None:
            raise DictoptInputError(
                "lam: optimal codes need λ; this dictionary has none. Supply it "
                "(Dictionary.with_lam, or --lam on the command line)."
            )
        from dictopt.lasso import solve_codes

        x = self.prepare_batch(x_ND)
        return solve_codes(self.atoms, x, self.lam, bias=self.bias, **solver_options).codes

    def decode(self, codes_NK: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``codes @ atoms + bias``."""
        return codes_NK.to(self.dtype) @ self.atoms + self.bias

    def prepare_batch(self, x_ND: Any, *, row_offset: int = 0, where: str = "") -> torch.Tensor:
        """Validate a data batch (2-D, width d, finite) and cast it to the dictionary's dtype."""
        x = to_tensor(x_ND, "activations", dtype=self.dtype, device=self.device)
        check_matrix(x, "activations", width=self.d)
        check_finite(x, "activations", row_offset=row_offset, where=where)
        return x


# --------------------------------------------------------------------------------------------
# The objective and explained variance, streamed over chunks.
# --------------------------------------------------------------------------------------------


class LossBreakdown(NamedTuple):
    """The canonical objective on a data set, split into its parts (all means over points)."""

    loss: float
    """``reconstruction + sparsity``: the objective L of THEORY §1."""
    reconstruction: float
    """``(1/N) Σ ½‖r_n‖²``."""
    sparsity: float
    """``(1/N) Σ λ Σ_k a_kn`` (NaN when λ is unknown)."""
    l0: float
    """Mean number of active codes per point."""
    explained_variance: float
    """``1 − Σ‖r_n‖² / Σ‖x_n − x̄‖²`` (see :class:`ExplainedVariance`)."""
    n: int


class ExplainedVariance:
    """Streaming explained variance, centred per dimension: ``1 − SSE / SST``.

    ``SST = Σ_n ‖x_n − x̄‖²`` with ``x̄`` the per-dimension mean, so predicting the mean scores
    exactly 0 and a perfect reconstruction 1 (pinned in tests). Chunks merge with Chan's
    parallel update, so statistics from separate processes combine exactly.
    """

    def __init__(self, d: int) -> None:
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64)
        self.sst = 0.0
        self.sse = 0.0

    def update(self, x_ND: torch.Tensor, x_hat_ND: torch.Tensor, *,
               sse: float | None = None) -> None:
        """Add a chunk of data and its reconstruction (``sse``: ``Σ‖x − x̂‖²`` in float64 when
        the caller has it)."""
        x = x_ND.to(torch.float64)
        m = x.shape[0]
        if m == 0:
            return
        chunk_mean = x.mean(dim=0)
        chunk_sst = float(((x - chunk_mean) ** 2).sum())
        if sse is None:
            sse = float(((x - x_hat_ND.to(torch.float64)) ** 2).sum())
        self._merge(m, chunk_mean, chunk_sst, sse)

    def merge(self, other: ExplainedVariance) -> None:
        """Absorb another accumulator (e.g. from another process)."""
        if other.n:
            self._merge(other.n, other.mean, other.sst, other.sse)

    def _merge(self, m: int, mean: torch.Tensor, sst: float, sse: float) -> None:
        n = self.n
        total = n + m
        delta = mean - self.mean
        self.sst += sst + float((delta**2).sum()) * n * m / total
        self.mean = self.mean + delta * (m / total)
        self.sse += sse
        self.n = total

    @property
    def value(self) -> float:
        """The explained variance (NaN if the data have zero variance)."""
        if self.n == 0:
            raise DictoptInputError("explained variance of empty data")
        return 1.0 - self.sse / self.sst if self.sst > 0 else math.nan


def explained_variance(x_ND: Any, x_hat_ND: Any) -> float:
    """Explained variance of a reconstruction (centred per dimension; mean predictor → 0)."""
    x = to_tensor(x_ND, "x")
    ev = ExplainedVariance(x.shape[-1])
    ev.update(x, to_tensor(x_hat_ND, "x_hat"))
    return ev.value


def residuals(dictionary: Dictionary, x_ND: torch.Tensor, codes_NK: torch.Tensor) -> torch.Tensor:
    """``r_n = x_n − b − Σ_k a_kn d_k`` for a batch."""
    return x_ND.to(dictionary.dtype) - dictionary.decode(codes_NK)


def check_codes(codes_NK: torch.Tensor, n: int, K: int, *, tol: float = 0.0) -> None:
    """Codes must be ``[N, K]``, finite and nonnegative (down to ``-tol``)."""
    if codes_NK.shape != (n, K):
        raise DictoptInputError(f"codes: expected shape ({n}, {K}), got {tuple(codes_NK.shape)}")
    check_finite(codes_NK, "codes")
    if codes_NK.numel() and float(codes_NK.min()) < -tol:
        raise DictoptInputError(
            f"codes: must be nonnegative, found {float(codes_NK.min()):.3g}"
        )


class LossSums:
    """Mergeable sums of the canonical objective (behind :func:`objective` and
    :func:`dictopt.data.evaluate`)."""

    def __init__(self, dictionary: Dictionary) -> None:
        self.lam = dictionary.lam
        self.ev = ExplainedVariance(dictionary.d)
        self.half_sq = 0.0
        self.l1 = 0.0
        self.active = 0.0

    def update(self, x: torch.Tensor, codes: torch.Tensor, recon: torch.Tensor) -> None:
        r = x - recon
        sq = float((r.to(torch.float64) ** 2).sum())
        self.half_sq += 0.5 * sq
        self.l1 += float(codes.to(torch.float64).sum())
        self.active += float((codes > 0).sum())
        # in float64 the explained variance's squared error is this sum, bit for bit
        f64 = x.dtype == recon.dtype == torch.float64
        self.ev.update(x, recon, sse=sq if f64 else None)

    def result(self) -> LossBreakdown:
        n = self.ev.n
        if n == 0:
            raise DictoptInputError("activations: no data (0 rows)")
        rec = self.half_sq / n
        sparsity = self.lam * self.l1 / n if self.lam is not None else math.nan
        return LossBreakdown(
            loss=rec + sparsity,
            reconstruction=rec,
            sparsity=sparsity,
            l0=self.active / n,
            explained_variance=self.ev.value,
            n=n,
        )


def objective(dictionary: Dictionary, x_ND: Any, codes_NK: Any) -> LossBreakdown:
    """The canonical objective for one batch with given codes."""
    x = dictionary.prepare_batch(x_ND)
    codes = to_tensor(codes_NK, "codes", dtype=dictionary.dtype, device=dictionary.device)
    check_codes(codes, x.shape[0], dictionary.K)
    acc = LossSums(dictionary)
    acc.update(x, codes, dictionary.decode(codes))
    return acc.result()


def stack_chunks(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate chunks (for small data only: this holds everything in memory)."""
    return torch.cat(list(chunks), dim=0)
