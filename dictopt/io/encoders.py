"""Encoders of foreign SAEs whose maths no dictopt SAE architecture has.

Where a foreign encoder computes the same function as a dictopt SAE (ReLU, TopK, BatchTopK
inference, JumpReLU), the loaders build that SAE from the foreign weights instead
(:func:`dictopt.io._common.build_sae`). What is left lives here:

- :class:`GatedEncoder` — the gated SAE (Rajamanoharan et al. 2024; SAELens ``gated``,
  dictionary_learning ``GatedAutoEncoder``)::

      z = x - b_dec (if apply_b_dec_to_input) ;  π_gate = z W_enc + b_gate
      π_mag = z (W_enc · exp(r_mag)) + b_mag ;  f = [π_gate > 0] · ReLU(π_mag)

- :class:`GroupMaxEncoder` — sparsify's ``groupmax`` activation: ``ReLU(z W_enc + b_enc)``
  split into ``k`` contiguous groups of equal size, each keeping only its maximum.

Both follow the :class:`~dictopt.problem.RawEncoder` protocol (SAELens tensor names), so a
dictionary holding one saves and reloads through :mod:`dictopt.io.native`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dictopt.problem import register_encoder
from dictopt.validation import DictoptInputError


def _tensor(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], arch: str):
    if name not in tensors:
        raise DictoptInputError(f"{arch} encoder: missing tensor {name!r}")
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise DictoptInputError(
            f"{arch} encoder: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}"
        )
    return t.detach()


@register_encoder
class GatedEncoder:
    """Gated SAE encoder (SAELens tensor names; see the module docstring for the maths)."""

    architecture: ClassVar[str] = "gated"

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_gate: torch.Tensor,
        b_mag: torch.Tensor,
        r_mag: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        apply_b_dec_to_input: bool = True,
    ) -> None:
        d, K = W_enc.shape
        for name, t, shape in (("b_gate", b_gate, (K,)), ("b_mag", b_mag, (K,)),
                               ("r_mag", r_mag, (K,)), ("b_dec", b_dec, (d,))):
            if tuple(t.shape) != shape:
                raise DictoptInputError(
                    f"gated encoder: {name!r} has shape {tuple(t.shape)}, expected {shape}"
                )
        self.W_enc, self.b_gate, self.b_mag, self.r_mag = W_enc, b_gate, b_mag, r_mag
        self.b_dec = b_dec
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        x = x_ND.to(self.W_enc.dtype)
        z = x - self.b_dec if self.apply_b_dec_to_input else x
        proj = z @ self.W_enc
        gate = (proj + self.b_gate) > 0
        mag = torch.relu(proj * torch.exp(self.r_mag) + self.b_mag)
        return mag * gate.to(mag.dtype)

    def config(self) -> dict[str, Any]:
        return {"apply_b_dec_to_input": self.apply_b_dec_to_input}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc, "b_gate": self.b_gate, "b_mag": self.b_mag,
                "r_mag": self.r_mag}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> GatedEncoder:
        if "W_enc" not in tensors or "b_dec" not in tensors:
            raise DictoptInputError("gated encoder: missing tensor 'W_enc' or 'b_dec'")
        d, K = tensors["W_enc"].shape
        return cls(
            _tensor(tensors, "W_enc", (d, K), "gated"),
            _tensor(tensors, "b_gate", (K,), "gated"),
            _tensor(tensors, "b_mag", (K,), "gated"),
            _tensor(tensors, "r_mag", (K,), "gated"),
            _tensor(tensors, "b_dec", (d,), "gated"),
            apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", True)),
        )


@register_encoder
class GroupMaxEncoder:
    """sparsify's ``groupmax`` activation: the maximum of each of ``k`` equal latent groups."""

    architecture: ClassVar[str] = "groupmax"

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        k: int,
        apply_b_dec_to_input: bool = True,
    ) -> None:
        d, K = W_enc.shape
        if k < 1 or K % k:
            raise DictoptInputError(
                f"groupmax encoder: k = {k} must divide the number of latents {K}"
            )
        if tuple(b_enc.shape) != (K,) or tuple(b_dec.shape) != (d,):
            raise DictoptInputError("groupmax encoder: b_enc must be [K] and b_dec [d]")
        self.W_enc, self.b_enc, self.b_dec = W_enc, b_enc, b_dec
        self.k = int(k)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        x = x_ND.to(self.W_enc.dtype)
        z = x - self.b_dec if self.apply_b_dec_to_input else x
        pre = torch.relu(z @ self.W_enc + self.b_enc)
        groups = pre.unflatten(-1, (self.k, -1))
        vals, idx = groups.max(dim=-1, keepdim=True)
        return torch.zeros_like(groups).scatter(-1, idx, vals).flatten(-2)

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "apply_b_dec_to_input": self.apply_b_dec_to_input}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"W_enc": self.W_enc, "b_enc": self.b_enc}

    @classmethod
    def from_saved(
        cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> GroupMaxEncoder:
        if "W_enc" not in tensors or "b_dec" not in tensors:
            raise DictoptInputError("groupmax encoder: missing tensor 'W_enc' or 'b_dec'")
        d, K = tensors["W_enc"].shape
        if "k" not in config:
            raise DictoptInputError("groupmax encoder: config lacks 'k'")
        return cls(
            _tensor(tensors, "W_enc", (d, K), "groupmax"),
            _tensor(tensors, "b_enc", (K,), "groupmax"),
            _tensor(tensors, "b_dec", (d,), "groupmax"),
            k=int(config["k"]),
            apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", True)),
        )
