"""``check``: two streaming passes, every first-order condition, certificates (THEORY §2).

Pass 1 encodes each chunk, forms residuals and accumulates :class:`PassOneStats` (C1–C4,
capacity, top buffers). Between the passes the buffers decide ``H_ij`` exactly
for almost every ordered pair (:mod:`dictopt.check.pairs`). Pass 2 re-encodes and computes
the remaining pair extremes, the step bounds of the C5 certificates and the co-activity of
label candidates. Memory: ``O(K d + K m L0)`` plus ``K × block`` blocks of the Gram matrix,
independent of N. The joint hull (``hull=True``) is a separate, separately timed stage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from dictopt.check.conditions import atom_conditions, atom_floor
from dictopt.check.moves import Toward, best_toward_step
from dictopt.check.pairs import buffer_extremes, dense_extremes
from dictopt.check.report import CONDITIONS, LABELS, CheckReport, Label, Violation
from dictopt.check.stats import PassOneStats, PassTwoStats, argsort_stable, sort_unique
from dictopt.check.tolerances import (
    DEFAULT_LABELS,
    DEFAULT_TOLERANCES,
    LabelThresholds,
    Tolerances,
)
from dictopt.problem import Dictionary, check_codes
from dictopt.validation import DictoptInputError, to_tensor

log = logging.getLogger(__name__)
F64 = torch.float64

LAM_HELP = (
    "the L1 check needs λ (THEORY §1 convention). Supply it: check(..., lam=L), "
    "Dictionary.with_lam(L), or `--lam L` on the command line. For an SAE trained with "
    "loss mean_n[‖x−x̂‖²] + α Σ_k ‖W_dec[k]‖ f_k, λ = α/2 in dictopt's ½-convention; for a "
    "TopK SAE there is no λ: use the implied λ of your choice (e.g. the mean d_k·r_n on "
    "active codes, which makes C1 hold on average)."
)


def validate_dictionary(dictionary: Dictionary) -> None:
    """Re-check canonical form (atoms may have been edited after construction)."""
    if not isinstance(dictionary, Dictionary):
        raise DictoptInputError(
            f"dictionary: expected a dictopt Dictionary, got {type(dictionary).__name__}; "
            "build one with Dictionary.from_decoder(W_dec, b_dec, lam=...)"
        )
    norms = dictionary.atoms.norm(dim=1)
    if bool((norms == 0).any()):
        k = int((norms == 0).nonzero()[0])
        raise DictoptInputError(f"dictionary: atom {k} is zero; a canonical atom has norm 1")
    bad = ((norms - 1).abs() > 1e-5).nonzero()
    if bad.numel():
        k = int(bad[0])
        raise DictoptInputError(
            f"dictionary: atom {k} has norm {float(norms[k]):.6g}, not 1 (not canonical); "
            "use Dictionary.from_decoder(W_dec, ...) to canonicalise atoms and codes"
        )


def make_coder(
    dictionary: Dictionary, codes: Any
) -> tuple[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    """``(mode, coder(x_chunk, start) -> canonical codes)`` for ``codes``.

    ``codes`` is ``"own"`` (the dictionary's encoder; optimal codes when it has none),
    ``"optimal"`` (exact nonnegative lasso), a callable ``x -> codes``, or an ``[N, K]`` array of
    given codes aligned with the source rows.
    """
    if isinstance(codes, str):
        if codes == "own":
            mode = "own" if dictionary.encoder is not None else "optimal"
            return mode, lambda x, start: dictionary.encode(x)
        if codes == "optimal":
            return "optimal", lambda x, start: dictionary.optimal_codes(x)
        raise DictoptInputError(f"codes: expected 'own' or 'optimal', got {codes!r}")
    if callable(codes):
        return "given", lambda x, start: codes(x)
    arr = to_tensor(codes, "codes", dtype=dictionary.dtype, device=dictionary.device)
    if arr.ndim != 2 or arr.shape[1] != dictionary.K:
        raise DictoptInputError(
            f"codes: expected shape [N, K={dictionary.K}], got {tuple(arr.shape)}"
        )
    return "given", lambda x, start: arr[start : start + x.shape[0]]


def _codes_for(coder, x: torch.Tensor, start: int, K: int, dtype: torch.dtype) -> torch.Tensor:
    """Codes of a chunk, validated with one pass (``amin`` propagates NaN; +inf is caught
    when the active entries are read) and clamped only if slightly negative."""
    a = coder(x, start).to(dtype)
    if a.shape != (x.shape[0], K):
        check_codes(a, x.shape[0], K)
    low = float(a.amin()) if a.numel() else 0.0
    if low != low or low < -1e-9 or low == float("inf"):
        check_codes(a, x.shape[0], K, tol=1e-9)
    if bool(torch.isinf(a.amax())):
        check_codes(a, x.shape[0], K, tol=1e-9)
    return a.clamp(min=0) if low < 0 else a


def check(
    dictionary: Dictionary,
    source: Any,
    *,
    codes: Any = "own",
    lam: float | None = None,
    tol: Tolerances = DEFAULT_TOLERANCES,
    thresholds: LabelThresholds = DEFAULT_LABELS,
    buffer_size: int = 4,
    hull: bool | str = "auto",
    hull_exact_limit: int = 5_000_000,
    amortisation: bool | None = None,
    max_pair_certificates: int = 20_000,
    sparse: bool | None = None,
    block: int = 512,
    chunk_size: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Check every first-order condition of THEORY §2 on streamed data.

    Parameters
    ----------
    dictionary:
        A canonical :class:`~dictopt.problem.Dictionary` (unit atoms; its encoder, if any).
    source:
        Activations: an array/tensor ``[N, d]``, a ``.npy`` path, a shard folder or an
        :class:`~dictopt.data.sources.ActivationSource`.
    codes:
        ``"own"``, ``"optimal"``, a callable ``x -> codes`` or given codes ``[N, K]``.
    lam:
        λ (overrides the dictionary's). Required when the dictionary has none.
    tol, thresholds:
        Tolerances (:class:`Tolerances`) and label thresholds.
    buffer_size:
        ``m``, the number of extreme points kept per atom (pairs the buffers cannot decide are
        computed exactly in pass 2, so ``m`` affects speed, never the result).
    hull:
        Joint hull condition: ``"auto"`` (exact LP when ``N·K ≤ hull_exact_limit``, else
        skipped with a note), ``True`` (exact; holds the codes in memory), ``False``.
    amortisation:
        Also compute the optimal codes and report the amortisation gap (default: when the
        dictionary has its own encoder and ``codes="own"``).
    max_pair_certificates:
        C5 violations beyond this many (ranked by slope) are counted and listed without
        step bounds (step 0).
    sparse:
        Use sparse code kernels for decode and ``Σ a r`` (default: when codes are < 10 %
        dense on the first chunk).

    Returns
    -------
    CheckReport
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    validate_dictionary(dictionary)
    lam = lam if lam is not None else dictionary.lam
    if lam is None:
        raise DictoptInputError(f"lam: missing; {LAM_HELP}")
    dictionary = dictionary.with_lam(lam)
    lam = float(dictionary.lam)
    from dictopt.data.sources import as_source

    kwargs = {"chunk_size": chunk_size} if chunk_size else {}
    src = as_source(source, dtype=dictionary.dtype, **kwargs)
    if src.d != dictionary.d:
        raise DictoptInputError(
            f"activations: width {src.d} but the dictionary has d = {dictionary.d}"
        )
    mode, coder = make_coder(dictionary, codes)
    amortisation_note = None
    if amortisation is None:
        amortisation = mode == "own"
        if amortisation:
            try:
                import dictopt.solvers.coding  # noqa: F401
            except ImportError:
                amortisation = False
                amortisation_note = "skipped: the exact coder dictopt.solvers.coding is missing"
    K, d = dictionary.K, dictionary.d
    atoms, bias = dictionary.atoms, dictionary.bias
    dev = dictionary.device

    # ---- pass 1 ---------------------------------------------------------------------------
    tau = tol.tau
    st1: PassOneStats | None = None
    opt_loss = opt_n = 0.0
    code_diff = torch.zeros(K, dtype=F64, device=dev)
    for chunk in src.iter_chunks(progress=progress, desc="check pass 1"):
        x = chunk.data.to(device=dev)
        a = _codes_for(coder, x, chunk.start, K, dictionary.dtype)
        if tau is None:
            tau = 0.0 if mode == "own" else tol.tau_rel * float(a.max())
        if st1 is None:
            st1 = PassOneStats(K, d, lam, buffer_size, dev)
            if sparse is None:
                sparse = float((a > tau).float().mean()) < 0.1 and K >= 256
        st1.update(x, a, atoms, bias, chunk.start, tau, sparse=bool(sparse))
        if amortisation:
            a_opt = dictionary.optimal_codes(x)
            r = x - dictionary.decode(a_opt)
            opt_loss += float(0.5 * (r.to(F64) ** 2).sum() + lam * a_opt.to(F64).sum())
            opt_n += x.shape[0]
            code_diff += (a_opt - a).abs().to(F64).sum(0)
    assert st1 is not None and tau is not None
    timings["pass1"] = time.perf_counter() - t0
    N = st1.n
    abar = st1.mean_a
    n_inactive = N - st1.n_active

    violations, cols = atom_conditions(st1, atoms, lam, tau, dictionary.has_bias, tol)

    # ---- pair classification from the buffers ---------------------------------------------
    t1 = time.perf_counter()
    top = buffer_extremes(st1.top, K)
    floor = atom_floor(abar, tol)
    D = atoms
    pair_found: list[tuple[torch.Tensor, ...]] = []  # (i, j, side, value) known violations
    pass2_i: list[torch.Tensor] = []
    pass2_j: list[torch.Tensor] = []
    label_pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    ar = torch.arange(K, device=dev)
    for lo in range(0, K, block):
        rows = ar[lo : lo + block]
        c = (D[rows] @ D.t()).to(F64)
        theta = (1 - c) * abar[rows, None]
        tol_i = (tol.pair_rel * abar[rows] + floor)[:, None]
        valid = (n_inactive[None, :] > 0).expand_as(c).clone()
        valid[torch.arange(rows.numel()), rows] = False
        H = dense_extremes(top, rows, K)
        up_unknown = valid & torch.isnan(H)
        if dictionary.has_bias:
            up_viol = valid & ~torch.isnan(H) & (theta - H > tol_i)
        else:  # without a bias only the strict hierarchy survives (THEORY C5)
            up_viol = valid & ~torch.isnan(H) & (H <= 0) & (theta > tol_i)
        ii, jj = up_viol.nonzero(as_tuple=True)
        pair_found.append((rows[ii], jj, torch.ones_like(ii), H[ii, jj]))
        if dictionary.has_bias:  # lower side: see the lemma in dictopt.check.pairs
            both = st1.n_active[rows, None] + st1.n_active[None, :] >= N
            lo_unknown = valid & (both | (theta < tau))
        else:
            lo_unknown = torch.zeros_like(valid)
        ii, jj = (up_unknown | lo_unknown).nonzero(as_tuple=True)
        pass2_i.append(rows[ii])
        pass2_j.append(jj)
        # label candidates (upper triangle only)
        cand = ((c >= thresholds.absorption_cos) | (c <= -thresholds.antipodal_cos)) & (
            rows[:, None] < ar[None, :]
        )
        ii, jj = cand.nonzero(as_tuple=True)
        label_pairs.append((rows[ii], jj, c[ii, jj]))
    fi = torch.cat([p[0] for p in pair_found])
    fj = torch.cat([p[1] for p in pair_found])
    fside = torch.cat([p[2] for p in pair_found])
    fval = torch.cat([p[3] for p in pair_found])
    li = torch.cat([p[0] for p in label_pairs])
    lj = torch.cat([p[1] for p in label_pairs])
    lc = torch.cat([p[2] for p in label_pairs])
    # rank known violations by slope; only the first max_pair_certificates get step bounds
    fc = (D[fi] * D[fj]).sum(1).to(F64)
    fslope = lam * fside * ((1 - fc) * abar[fi] - fval)
    order = argsort_stable(-fslope)
    fi, fj, fside, fval, fc, fslope = (t[order] for t in (fi, fj, fside, fval, fc, fslope))
    nb = min(max_pair_certificates, fi.numel())
    # pass-2 pair list: unknown pairs, certified pairs (step bounds), label pairs (co-activity)
    ui, uj = torch.cat(pass2_i), torch.cat(pass2_j)
    P_i = torch.cat([ui, fi[:nb], li])
    P_j = torch.cat([uj, fj[:nb], lj])
    key = sort_unique(torch.cat([P_i * K + P_j]))
    P_i, P_j = key // K, key % K
    # initial extremes: exact where the buffers know them, otherwise the safe bounds
    H0 = torch.zeros(key.numel(), dtype=F64, device=dev)
    L0 = st1.max_a[P_i].clone()
    Hk = _lookup(top, P_i, P_j, K)
    H0 = torch.where(torch.isnan(Hk), H0, Hk)
    timings["pairs"] = time.perf_counter() - t1

    # ---- pass 2 ---------------------------------------------------------------------------
    t2 = time.perf_counter()
    want_hull = hull is True or (hull == "auto" and N * K <= hull_exact_limit)
    kept_codes: list[torch.Tensor] = []
    st2 = PassTwoStats(P_i, P_j, H0, L0)
    if key.numel() or want_hull:
        for chunk in src.iter_chunks(progress=progress, desc="check pass 2"):
            x = chunk.data.to(device=dev)
            a = _codes_for(coder, x, chunk.start, K, dictionary.dtype)
            st2.update(a, tau)
            if want_hull:
                kept_codes.append(a)
    timings["pass2"] = time.perf_counter() - t2

    # ---- C5 violations with certificates ----------------------------------------------------
    pos_of = {int(k): p for p, k in enumerate(key.tolist())}
    cset = _pair_candidates(
        st2, ui * K + uj, fi, fj, fside, fval, nb, K, D, abar, floor, tol, dictionary.has_bias
    )
    for i, j, side, val, certify in cset:
        c_ij = float(D[i] @ D[j])
        slope = lam * side * ((1 - c_ij) * float(abar[i]) - val)
        p = pos_of.get(i * K + j)
        if certify and p is not None:
            t_max = float(st2.t_up[p] if side > 0 else st2.t_lo[p])
        else:
            t_max = 0.0
        move = Toward(0.0, k=j, J=torch.tensor([i]), q=torch.tensor([float(side)]),
                      kappa=float(side * val) if dictionary.has_bias else 0.0)
        t = best_toward_step(move, D, abar, lam, t_max) if t_max > 0 else 0.0
        strict = side > 0 and val <= tau
        violations.append(Violation(
            "C5", i, j, "hierarchy" if strict else ("upper" if side > 0 else "lower"),
            slope, t, slope * t, -move.model_delta(D, abar, lam) if t > 0 else 0.0,
            detail={"side": "upper" if side > 0 else "lower", "H" if side > 0 else "L": val,
                    "theta": (1 - c_ij) * float(abar[i]), "cos": c_ij, "t_max": t_max},
            move=move,
        ))
    timings["certificates"] = time.perf_counter() - t2 - timings["pass2"]

    # ---- labels -----------------------------------------------------------------------------
    labels = _labels(st1, st2, pos_of, li, lj, lc, thresholds, K, N, violations)

    # ---- joint hull -------------------------------------------------------------------------
    hull_info: dict[str, Any] = {"mode": "skipped", "atoms_checked": 0, "seconds": 0.0}
    if want_hull and dictionary.has_bias:
        from dictopt.check.hull import joint_hull

        th = time.perf_counter()
        A = torch.cat(kept_codes).to(F64)
        hv = joint_hull(A, D, abar, lam, tau, tol)
        violations.extend(hv)
        hull_info = {"mode": "exact", "atoms_checked": K, "seconds": time.perf_counter() - th}
    elif hull is not False and dictionary.has_bias:
        hull_info["mode"] = f"skipped (N·K = {N * K} > hull_exact_limit)"
    timings["hull"] = hull_info["seconds"]

    violations.sort(key=lambda v: (-(v.model_decrease or 0.0), -v.slope))
    rec = st1.half_sq / N
    counts = {c: sum(v.condition == c for v in violations) for c in CONDITIONS}
    label_counts = {name: 0 for name in LABELS}
    for lab in labels:
        label_counts[lab.label] += 1
    label_counts["hierarchy"] = sum(v.label == "hierarchy" for v in violations)
    label_counts["always_on"] = counts["C4"]
    summary: dict[str, Any] = {
        "N": N, "K": K, "d": d, "lam": lam, "codes": mode, "tau": tau,
        "has_bias": dictionary.has_bias,
        "loss": rec + lam * st1.l1 / N, "reconstruction": rec, "sparsity": lam * st1.l1 / N,
        "explained_variance": st1.ev.value, "l0": float(st1.n_active.sum()) / N,
        # a certified descent of the dictionary (C1 alone is about the codes, not D)
        "unstable_optimum": any(
            v.condition != "C1" and (v.model_decrease or 0.0) > 0 for v in violations
        ),
        "counts": counts, "labels": label_counts,
        "max_kkt_violation": float(cols["kkt_violation"].max()),
        "bias_residual": float(st1.r_mean.norm()),
        "capacity": {"points_over_lam": st1.n_over, "total_gain": st1.over_sum / N,
                     "max_gain": st1.over_max / N},
        "amortisation": amortisation_note,
        "pairs_in_pass2": int(key.numel()),
        "hull": hull_info,
        "tolerances": {k: getattr(tol, k) for k in tol.__dataclass_fields__},
    }
    if amortisation:
        summary["amortisation"] = {
            "optimal_loss": opt_loss / opt_n,
            "loss_gap": summary["loss"] - opt_loss / opt_n,
            "mean_abs_code_diff": (code_diff / N).tolist(),
        }
    atom_rows = _atom_rows(st1, cols, labels, violations, K, N)
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    return CheckReport(summary, atom_rows, violations, labels)


def _lookup(ext, P_i: torch.Tensor, P_j: torch.Tensor, K: int) -> torch.Tensor:  # noqa: ANN001
    """Buffer value of each pair (NaN = unknown): sparse entries override ``first[i]``."""
    out = ext.first[P_i].clone()
    keys = ext.pi * K + ext.pj
    order = argsort_stable(keys)
    sk = keys[order]
    q = P_i * K + P_j
    pos = torch.searchsorted(sk, q).clamp(max=max(sk.numel() - 1, 0))
    if sk.numel():
        hit = sk[pos] == q
        out[hit] = ext.val[order[pos[hit]]]
    return out


def _pair_candidates(st2, unknown_keys, fi, fj, fside, fval, nb, K, D, abar, floor, tol,
                     has_bias):  # noqa: ANN001, ANN202
    """C5 violations: known from buffers, plus unknown pairs decided by pass 2."""
    out = []
    for t in range(fi.numel()):
        out.append((int(fi[t]), int(fj[t]), int(fside[t]), float(fval[t]), t < nb))
    if unknown_keys.numel():
        keyset = set(unknown_keys.tolist())
        for p in range(st2.pi.numel()):
            i, j = int(st2.pi[p]), int(st2.pj[p])
            if i * K + j not in keyset:
                continue
            theta = (1 - float(D[i] @ D[j])) * float(abar[i])
            tol_i = tol.pair_rel * float(abar[i]) + floor
            H, L = float(st2.H[p]), float(st2.L[p])
            if has_bias:
                if theta - H > tol_i:
                    out.append((i, j, 1, H, True))
                if L - theta > tol_i:
                    out.append((i, j, -1, L, True))
            elif H <= 0 and theta > tol_i:
                out.append((i, j, 1, H, True))
    # the same pair may be known on one side and unknown on the other: keep distinct sides
    seen = set()
    uniq = []
    for row in out:
        if (row[0], row[1], row[2]) not in seen:
            seen.add((row[0], row[1], row[2]))
            uniq.append(row)
    return uniq


def _labels(st1, st2, pos_of, li, lj, lc, th, K, N, violations):  # noqa: ANN001, ANN202
    labels: list[Label] = []
    frac = st1.n_active / N
    for k in (st1.n_active == 0).nonzero().flatten().tolist():
        labels.append(Label("dead", k))
    for t in range(li.numel()):
        i, j, c = int(li[t]), int(lj[t]), float(lc[t])
        if c >= th.duplicate_cos:
            labels.append(Label("duplicate", i, j, {"cos": c}))
        p = pos_of.get(i * K + j)
        coact = float(st2.coact[p]) if p is not None else math.nan
        if (c >= th.absorption_cos and coact == 0 and st1.n_active[i] > 0
                and st1.n_active[j] > 0):
            labels.append(Label("absorption", i, j, {"cos": c, "coactive": 0}))
        if (c <= -th.antipodal_cos and frac[i] >= th.dense_fraction
                and frac[j] >= th.dense_fraction):
            labels.append(Label("antipodal", i, j, {"cos": c, "coactive": coact}))
    return labels


def _atom_rows(st1, cols, labels, violations, K, N):  # noqa: ANN001, ANN202
    tags: list[list[str]] = [[] for _ in range(K)]
    for lab in labels:
        tags[lab.i].append(lab.label)
        if lab.j is not None:
            tags[lab.j].append(lab.label)
    for v in violations:
        if v.condition == "C4":
            tags[v.i].append("always_on")
        if v.label == "hierarchy":
            tags[v.i].append("hierarchy_child")
            tags[v.j].append("hierarchy_parent")
    abar = st1.mean_a
    return [
        {
            "k": k,
            "mean_code": float(abar[k]),
            "active_fraction": float(st1.n_active[k]) / N,
            "min_code": float(st1.min_a[k]),
            "max_code": float(st1.max_a[k]),
            "kkt_violation": float(cols["kkt_violation"][k]),
            "stationarity_tangential": float(cols["stationarity_tangential"][k]),
            "stationarity_radial": float(cols["stationarity_radial"][k]),
            "labels": sorted(set(tags[k])),
        }
        for k in range(K)
    ]
