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


def best_pair_steps(
    atoms: torch.Tensor,
    mean_a: torch.Tensor,
    lam: float,
    i_n: torch.Tensor,
    k_n: torch.Tensor,
    q_n: torch.Tensor,
    kappa_n: list[float],
    t_max_n: list[float],
    batch: int = 1024,
) -> tuple[list[float], list[float]]:
    """:func:`best_toward_step` and the exact decrease for many one-atom :class:`Toward` moves
    (C5's pair moves ``J = [i]``), the same numbers to the last bit, batched.

    Each move's minimisation is SciPy's bounded Brent method (:func:`~dictopt.check.brent.
    bounded_brent`, the same points and result as ``minimize_scalar``); the moves of a batch
    run side by side and each round evaluates one point of every unfinished move in one
    ``[batch, d]`` float64 operation. Every value is computed by the same operations as
    ``best_toward_step``'s ``f`` and :meth:`Toward.model_delta` (a row's norm does not depend on
    the other rows of the batch; the one-term sum and the ``t κ`` term are formed as there).

    Parameters
    ----------
    atoms:
        ``[K, d]`` unit atoms.
    mean_a:
        ``[K]`` mean codes.
    lam:
        λ.
    i_n, k_n:
        ``[n]`` long: the rotated atom ``J = [i]`` and the atom ``k`` of each move.
    q_n:
        ``[n]`` the direction ``q`` (``±1``).
    kappa_n:
        ``κ`` of each move.
    t_max_n:
        Each move's step bound (a move with ``t_max ≤ 0`` gets step 0).
    batch:
        Moves minimised side by side (memory: two ``[batch, d]`` float64 arrays).

    Returns
    -------
    tuple[list[float], list[float]]
        Per move, the step ``t`` that :func:`best_toward_step` returns and ``ΔL(t)``
        (:meth:`Toward.model_delta` at that step; 0.0 where ``t = 0``).
    """
    from dictopt.check.brent import bounded_brent

    n = len(t_max_n)
    steps, deltas = [0.0] * n, [0.0] * n
    his = [min(t, 1e3) for t in t_max_n]
    todo = [p for p in range(n) if his[p] > 0]
    for lo in range(0, len(todo), batch):
        sel = todo[lo : lo + batch]
        idx = torch.tensor(sel, dtype=torch.long)
        a_J = atoms[i_n[idx]].to(F64)  # [B, d]
        a_k = atoms[k_n[idx]].to(F64)
        q64 = q_n[idx].to(F64)
        m_J = mean_a[i_n[idx]].to(F64)
        kap = [kappa_n[p] for p in sel]

        def f(ts: list[float], kp: list[float], a_J: torch.Tensor, a_k: torch.Tensor,
              q64: torch.Tensor, m_J: torch.Tensor) -> list[float]:
            """``best_toward_step``'s ``f`` at ``ts[r]`` for every row ``r`` of the arrays."""
            t = torch.tensor(ts, dtype=F64)
            s = t * q64
            nrm = torch.linalg.vector_norm(a_J + s[:, None] * a_k, dim=1)
            tk = torch.tensor([tt * kk for tt, kk in zip(ts, kp, strict=True)], dtype=F64)
            val = (m_J * (nrm - 1 - s))[:, None].sum(dim=1) + tk
            return [lam * v for v in val.tolist()]

        gens = [bounded_brent(0.0, his[p], xatol=his[p] * 1e-9) for p in sel]
        want = [next(g) for g in gens]
        result: list[tuple[float, float]] = [(0.0, 0.0)] * len(sel)
        # the arrays hold the rows ``cur``; finished rows are evaluated at 0 (discarded) until
        # fewer than 3/4 of the rows are left, then the arrays are cut to the live rows
        cur = list(range(len(sel)))
        arr = (a_J, a_k, q64, m_J)
        live = set(cur)
        while live:
            if len(live) < 0.75 * len(cur):
                keep = torch.tensor([x in live for x in cur])
                cur = [x for x in cur if x in live]
                arr = tuple(a[keep] for a in arr)
            vals = f([want[r] if r in live else 0.0 for r in cur],
                     [kap[r] for r in cur], *arr)
            for r, v in zip(cur, vals, strict=True):
                if r not in live:
                    continue
                try:
                    want[r] = gens[r].send(v)
                except StopIteration as stop:
                    result[r] = stop.value
                    live.discard(r)
        f_hi = f([his[p] for p in sel], kap, a_J, a_k, q64, m_J)
        for r, p in enumerate(sel):
            x, fx = result[r]
            t, ft = (x, fx) if fx <= f_hi[r] else (his[p], f_hi[r])
            steps[p] = t
            deltas[p] = ft if t > 0 else 0.0
    return steps, deltas


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
