"""The certificates of THEORY §2 as explicit finite perturbations of ``(D, b, A)``.

Every move acts on a chunk through :meth:`Move.changes`, which returns the indices of the
atoms whose codes change, their new codes, their new (unit) atoms, and the bias shift. That is
enough to measure the loss change on data exactly and cheaply (only the changed atoms enter),
and :meth:`Move.apply_dictionary` gives the perturbed dictionary for :mod:`repair`.
Each move also knows its exact loss change from the pass statistics (``model_delta``) and its
first-order slope (``slope``: predicted decrease per unit step).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

F64 = torch.float64


class Changes(NamedTuple):
    """What a move does to one chunk (only the ``C`` changed atoms)."""

    idx: list[int]
    """Indices of the changed atoms."""
    codes: torch.Tensor
    """``[N, C]`` their new codes."""
    atoms: torch.Tensor
    """``[C, d]`` their new (unit) atoms."""
    dbias: torch.Tensor | None
    """``[d]`` the bias shift, or ``None``."""


class ChunkState(NamedTuple):
    """One chunk at the current point ``(D, b, A)``: what a move needs to act on it."""

    x: torch.Tensor
    """``[N, d]`` data."""
    codes: torch.Tensor
    """``[N, K]`` their codes."""
    atoms: torch.Tensor
    """``[K, d]`` unit atoms."""
    bias: torch.Tensor
    """``[d]`` bias."""
    r: torch.Tensor
    """``[N, d]`` residuals ``x − b − codes @ atoms``."""
    lam: float


@dataclass
class Move(ABC):
    """Base class: a perturbation with a step ``t`` (subclasses define the geometry)."""

    step: float

    @abstractmethod
    def changes(self, chunk: ChunkState) -> Changes:
        """What the move does to one chunk (only the atoms it changes)."""

    def apply_dictionary(
        self, atoms: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New ``(atoms, bias)``: codes are not part of a dictionary (they are re-solved)."""
        return atoms, bias

    def to_json(self) -> dict:
        return {"type": type(self).__name__, "step": self.step}


@dataclass
class CodeStep(Move):
    """C1: the optimal coordinate step on atom ``k``'s codes, ``δ = max(t (g − λ), −a)``."""

    k: int = 0

    def changes(self, chunk: ChunkState) -> Changes:
        k = self.k
        g = chunk.r @ chunk.atoms[k]
        a = chunk.codes[:, k]
        new = a + torch.maximum(self.step * (g - chunk.lam), -a)
        return Changes([k], new[:, None], chunk.atoms[[k]], None)

    def to_json(self) -> dict:
        return {**super().to_json(), "k": self.k}


@dataclass
class Rotate(Move):
    """C2 (tangential): ``d_k ← (d_k + t u) / √(1 + t²)`` with ``u ⊥ d_k`` unit; codes kept."""

    k: int = 0
    u: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def new_atom(self, atoms: torch.Tensor) -> torch.Tensor:
        d = atoms[self.k]
        return (d + self.step * self.u.to(d)) / math.sqrt(1 + self.step**2)

    def changes(self, chunk: ChunkState) -> Changes:
        return Changes([self.k], chunk.codes[:, [self.k]], self.new_atom(chunk.atoms)[None], None)

    def apply_dictionary(
        self, atoms: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        atoms = atoms.clone()
        atoms[self.k] = self.new_atom(atoms)
        return atoms, bias

    def to_json(self) -> dict:
        return {**super().to_json(), "k": self.k}


@dataclass
class Scale(Move):
    """C2 (radial): codes of atom ``k`` scaled by ``1 + t`` (``t`` may be negative)."""

    k: int = 0

    def changes(self, chunk: ChunkState) -> Changes:
        k = self.k
        return Changes([k], chunk.codes[:, [k]] * (1 + self.step), chunk.atoms[[k]], None)

    def to_json(self) -> dict:
        return {**super().to_json(), "k": self.k}


@dataclass
class BiasShift(Move):
    """C3: ``b ← b + t r̄``."""

    r_mean: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def changes(self, chunk: ChunkState) -> Changes:
        empty = chunk.codes[:, :0]
        return Changes([], empty, chunk.atoms[:0], self.step * self.r_mean.to(chunk.bias))

    def apply_dictionary(
        self, atoms: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return atoms, bias + self.step * self.r_mean.to(bias)


@dataclass
class AlwaysOnShift(Move):
    """C4: ``a_k ← a_k − t m``, ``b ← b + t m d_k`` (reconstructions unchanged; t ≤ 1)."""

    k: int = 0
    m: float = 0.0

    def changes(self, chunk: ChunkState) -> Changes:
        s, k, atoms = self.step * self.m, self.k, chunk.atoms
        return Changes([k], chunk.codes[:, [k]] - s, atoms[[k]], s * atoms[k])

    def apply_dictionary(
        self, atoms: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return atoms, bias + self.step * self.m * atoms[self.k]

    def to_json(self) -> dict:
        return {**super().to_json(), "k": self.k, "m": self.m}


@dataclass
class Toward(Move):
    """C5 / joint hull: rotate atoms ``j ∈ J`` toward ``d_k`` (THEORY C5, C5′).

    With ``s_j = t q_j``: ``d_j ← (d_j + s_j d_k)/‖·‖``, ``a_j ← a_j ‖d_j + s_j d_k‖``,
    ``a_k ← a_k − Σ_j s_j a_j + t κ``, ``b ← b − t κ d_k``. Every reconstruction is unchanged, so
    ``ΔL = λ [Σ_j ā_j (‖d_j + s_j d_k‖ − 1 − s_j) + t κ]`` exactly; first order
    ``−λ t (q·v − κ)`` with ``v_j = (1 − c_jk) ā_j``. The pair move ``(i, j)`` of C5 is
    ``k = j, q = ±e_i, κ = ±H_ij`` (``∓L_ij``).
    """

    k: int = 0
    J: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    q: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    kappa: float = 0.0

    def _norms(self, atoms: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``‖d_j + s_j d_k‖``, from the vectors (the cosine formula cancels badly near
        ``c = ∓1``, ``s = ±1``), in ``dtype`` (default the atoms'): only the rows the move
        reads are converted, never the whole dictionary."""
        dtype = atoms.dtype if dtype is None else dtype
        s = self.step * self.q.to(device=atoms.device, dtype=dtype)
        return (atoms[self.J].to(dtype) + s[:, None] * atoms[self.k].to(dtype)).norm(dim=1)

    def _new_atoms(self, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotated unit atoms of ``J`` and the norms. Where ``d_j + s_j d_k = 0``
        (``c_jk = ∓1`` at ``s_j = ±1``) atom ``j``'s new codes are all zero, so its direction
        is arbitrary: it is kept (proofs/c5_pairwise.md, edge cases)."""
        s = self.step * self.q.to(atoms)
        v = atoms[self.J] + s[:, None] * atoms[self.k]
        nrm = v.norm(dim=1)
        zero = nrm == 0
        unit = v / torch.where(zero, torch.ones_like(nrm), nrm)[:, None]
        return torch.where(zero[:, None], atoms[self.J], unit), nrm

    def changes(self, chunk: ChunkState) -> Changes:
        J, k, t = self.J, self.k, self.step
        codes, atoms = chunk.codes, chunk.atoms
        s = t * self.q.to(codes)
        atoms_J, nrm = self._new_atoms(atoms)
        aJ = codes[:, J]
        new_J = aJ * nrm
        new_k = codes[:, k] - aJ @ s + t * self.kappa
        idx = [*J.tolist(), k]
        return Changes(
            idx,
            torch.cat([new_J, new_k[:, None]], 1),
            torch.cat([atoms_J, atoms[[k]]], 0),
            -t * self.kappa * atoms[k],
        )

    def apply_dictionary(
        self, atoms: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = atoms.clone()
        out[self.J] = self._new_atoms(atoms)[0]
        return out, bias - self.step * self.kappa * atoms[self.k]

    def model_delta(self, atoms: torch.Tensor, mean_a: torch.Tensor, lam: float) -> float:
        """Exact ``ΔL`` (THEORY C5): only ā and the cosines enter."""
        # float64 on the rows it reads (a float64 copy of the whole dictionary for each of
        # thousands of pair moves dominated the check's time at K = 32,768)
        nrm = self._norms(atoms, F64)
        s = self.step * self.q.to(F64)
        return lam * float((mean_a[self.J] * (nrm - 1 - s)).sum() + self.step * self.kappa)

    def to_json(self) -> dict:
        return {
            **super().to_json(),
            "k": self.k,
            "J": self.J.tolist(),
            "q": [float(v) for v in self.q],
            "kappa": self.kappa,
        }


def best_toward_step(
    move: Toward, atoms: torch.Tensor, mean_a: torch.Tensor, lam: float, t_max: float
) -> float:
    """Minimise the exact, convex ``ΔL(t)`` of a :class:`Toward` move on ``(0, t_max]``.

    Parameters
    ----------
    move:
        The move (its ``step`` is set to the result).
    atoms:
        The unit atoms.
    mean_a:
        ``[K]`` mean codes.
    lam:
        λ.
    t_max:
        Largest step keeping every code nonnegative.

    Returns
    -------
    float
        The step (0 when ``t_max ≤ 0``).
    """
    from scipy.optimize import minimize_scalar

    hi = min(t_max, 1e3)
    if not hi > 0:
        return 0.0

    # the slices ``model_delta`` reads, taken once: the same operations on the same values
    # (so the same ΔL to the last bit), without re-indexing on every evaluation
    a_J, a_k = atoms[move.J].to(F64), atoms[move.k].to(F64)  # two rows, not all K
    q64, m_J = move.q.to(F64), mean_a[move.J].to(F64)

    def f(t: float) -> float:
        s = t * q64
        # the kernel ``Tensor.norm(dim=1)`` reaches, without its Python dispatch
        nrm = torch.linalg.vector_norm(a_J + s[:, None] * a_k, dim=1)
        return lam * float((m_J * (nrm - 1 - s)).sum() + t * move.kappa)

    res = minimize_scalar(f, bounds=(0.0, hi), method="bounded", options={"xatol": hi * 1e-9})
    t = float(res.x) if f(float(res.x)) <= f(hi) else hi
    move.step = t
    return t


def move_types() -> dict[str, type[Move]]:
    """Every concrete move class defined so far, by the name its JSON carries (``"type"``).

    Returns
    -------
    dict[str, type[Move]]
        Subclasses of :class:`Move` at any depth (moves defined in other modules, such as the
        held-out stage's, count once their module is imported).
    """
    out: dict[str, type[Move]] = {}
    todo = list(Move.__subclasses__())
    while todo:
        cls = todo.pop()
        out.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return out


def move_from_json(data: dict) -> Move:
    """The move written by ``Move.to_json``.

    Parameters
    ----------
    data:
        ``{"type": name, "step": t, ...}`` as written by the move's ``to_json``.

    Returns
    -------
    Move
        Every field the JSON carries is restored. The JSON of :class:`Rotate` and
        :class:`BiasShift` holds no direction (``u``, ``r_mean``: ``d`` numbers each), so those
        two come back with empty directions: their numbers are exact, but they cannot be
        applied to data again.
    """
    known = move_types()
    kind = known.get(str(data.get("type")))
    if kind is None:
        raise ValueError(f"move: unknown type {data.get('type')!r}; known: {sorted(known)}")
    fields = {k: v for k, v in data.items() if k != "type"}
    if issubclass(kind, Toward):
        fields["J"] = torch.tensor(fields.get("J", []), dtype=torch.long)
        fields["q"] = torch.tensor(fields.get("q", []), dtype=torch.float64)
    return kind(**fields)
