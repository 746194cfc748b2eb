"""λ conventions of each library (THEORY §1) and the *implied λ* of objectives without L1.

Conversion factors (``λ = factor × the library's coefficient``; all reconstruction terms are
squared error summed over dimensions and averaged over the batch unless stated)::

    dictopt            L = mean_n[½‖r‖² + λ Σ a]                        factor 1
    SAELens standard   mean_n[‖r‖² + c Σ_k f_k ‖W_dec[k]‖]              λ = c / 2  (/ s if a
                       scaling factor s was folded in by the loader)
    dictionary_learning  mean_n[‖r‖² + l1_penalty Σ_k f_k (‖d_k‖)]       λ = l1_penalty / 2
                       (× norm_factor when trained with normalize_activations)
    scikit-learn       Σ_n[½‖r‖² + α Σ|u|]                              λ = α  (sum vs mean)
    TopK, BatchTopK, Matryoshka, JumpReLU (L0), gated (L1 on the gate), sparsify, OpenAI
                       no L1 on the codes                               λ = None → implied λ

Implied λ. For codes ``a`` (the SAE's own) and residuals ``r_n = x_n − b − Σ_k a_kn d_k``
let ``g_kn = d_k · r_n``. Exact lasso codes at λ have ``g_kn = λ`` on every active entry and
``g_kn ≤ λ`` elsewhere (C1), so the active ``g`` of an L1 optimum sit on one value. For an SAE
trained without L1 they spread; :func:`implied_lambda` reports their distribution and takes
the **median over active entries** as the implied λ (robust to a few outlying entries, and
the λ at which half the active codes would want to grow and half to shrink). It also gives
the code-weighted mean ``Σ a g / Σ a = Σ_k G_k·d_k / Σ_k ā_k``, the single λ that zeroes C2's
radial residual summed over atoms, and the per-atom medians.

What the checker's verdicts mean with an implied λ (codes fixed = ``codes="own"``):

- **C2 tangential** and **C3** involve no λ: their certificates change only the
  reconstruction term, so they are first-order conditions of *any* objective whose sparsity
  term depends only on the codes (L1, L0, TopK) — genuine necessary conditions for the SAE's
  decoder and bias given its codes (C3 exactly so when the encoder does not see ``b_dec``).
- **C1** and **C2 radial** are statements about the L1 objective at that λ: they measure how
  far the codes are from being lasso codes for any single λ (TopK codes never satisfy C1: an
  inactive atom may correlate with the residual more than an active one).
- **C4, C5 and the joint hull**: their certificates keep every reconstruction and change only
  ``λ Σ a``, so their *signs* do not depend on λ (only the size of the predicted decrease
  scales with λ). They say whether the dictionary could be a local minimum of the L1 problem
  at any λ; for an L0/TopK objective they are not necessary conditions (the moves can change
  the number of active codes).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_positive_int, check_width

#: Quantiles reported for the active ``g = d·r``.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class ImpliedLambda(NamedTuple):
    """The distribution of ``g_kn = d_k · r_n`` on active codes, and the implied λ."""

    lam: float
    """Median of ``g`` over all active entries (the implied λ)."""
    weighted_mean: float
    """``Σ a g / Σ a``: the λ that zeroes C2's radial residual summed over atoms."""
    quantiles: dict[float, float]
    """Quantiles of the active ``g`` (keys :data:`QUANTILES`)."""
    per_atom_median: torch.Tensor
    """``[K]`` median active ``g`` of each atom (NaN for atoms never active)."""
    atom_spread: float
    """Interquartile range of the per-atom medians, relative to ``lam``."""
    inactive_above: float
    """Fraction of inactive entries with ``g > lam`` (C1's inactive side violated)."""
    n_active: int
    n_points: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (per-atom medians as a list, NaN → None)."""
        return {
            "lam": self.lam,
            "weighted_mean": self.weighted_mean,
            "quantiles": {str(q): v for q, v in self.quantiles.items()},
            "per_atom_median": [None if math.isnan(v) else v
                                for v in self.per_atom_median.tolist()],
            "atom_spread": self.atom_spread,
            "inactive_above": self.inactive_above,
            "n_active": self.n_active,
            "n_points": self.n_points,
        }


def implied_lambda(
    dictionary: Dictionary, source: Any, *, max_points: int = 20_000, progress: bool = False
) -> ImpliedLambda:
    """The implied λ of a dictionary's own codes on (the first ``max_points`` rows of) data.

    Parameters
    ----------
    dictionary:
        A dictionary with its own encoder (for optimal lasso codes λ is an input, not implied).
    source:
        Activations (array, tensor, ``.npy`` path, shard folder or ActivationSource).
    max_points:
        Rows used (the median needs every active ``g`` in memory).

    Returns
    -------
    ImpliedLambda
    """
    from dictopt.data.sources import as_source
    from dictopt.io.objects import as_dictionary

    dictionary = as_dictionary(dictionary)
    if dictionary.encoder is None:
        raise DictoptInputError(
            "implied λ: this dictionary has no encoder; its codes are the optimal lasso codes "
            "for a λ you supply, so there is nothing to infer"
        )
    max_points = check_positive_int(max_points, "max_points")
    src = as_source(source, dtype=dictionary.dtype)
    check_width(src.d, dictionary.d, src.n)
    active_g: list[torch.Tensor] = []
    atom_idx: list[torch.Tensor] = []
    sum_ag = sum_a = 0.0
    inactive_g: list[torch.Tensor] = []
    n = 0
    for chunk in src.iter_chunks(progress=progress, desc="implied λ"):
        x = chunk.data[: max_points - n]
        a = dictionary.encode(x).to(torch.float64)
        r = x.to(torch.float64) - dictionary.decode(a).to(torch.float64)
        g = r @ dictionary.atoms.to(torch.float64).T
        on = a > 0
        active_g.append(g[on])
        atom_idx.append(on.nonzero()[:, 1])
        inactive_g.append(g[~on])
        sum_ag += float((a * g).sum())
        sum_a += float(a.sum())
        n += x.shape[0]
        if n >= max_points:
            break
    g_act = torch.cat(active_g)
    if g_act.numel() == 0:
        raise DictoptInputError("implied λ: no code is active on these data")
    lam = float(g_act.median())
    qs = torch.quantile(g_act, torch.tensor(QUANTILES, dtype=torch.float64)) if \
        g_act.numel() < 16_000_000 else torch.tensor([math.nan] * len(QUANTILES))
    per_atom = _per_atom_median(torch.cat(atom_idx), g_act, dictionary.K)
    live = per_atom[~per_atom.isnan()]
    spread = math.nan
    if live.numel() >= 2 and lam != 0:
        q1, q3 = torch.quantile(live, torch.tensor([0.25, 0.75], dtype=torch.float64))
        spread = float(q3 - q1) / abs(lam)
    g_in = torch.cat(inactive_g)
    above = float((g_in > lam).double().mean()) if g_in.numel() else 0.0
    return ImpliedLambda(
        lam=lam,
        weighted_mean=sum_ag / sum_a if sum_a > 0 else math.nan,
        quantiles={q: float(v) for q, v in zip(QUANTILES, qs.tolist(), strict=True)},
        per_atom_median=per_atom,
        atom_spread=spread,
        inactive_above=above,
        n_active=int(g_act.numel()),
        n_points=n,
    )


def _per_atom_median(idx: torch.Tensor, g_act: torch.Tensor, K: int) -> torch.Tensor:
    """``[K]`` median of the active ``g`` of each atom (NaN for atoms never active)."""
    per_atom = torch.full((K,), math.nan, dtype=torch.float64)
    order = torch.argsort(idx, stable=True)
    idx_s, g_s = idx[order], g_act[order]
    counts = torch.bincount(idx_s, minlength=K)
    for k, chunk_g in zip(counts.nonzero().flatten().tolist(),
                          torch.split(g_s, counts[counts > 0].tolist()), strict=True):
        per_atom[k] = chunk_g.median()
    return per_atom
