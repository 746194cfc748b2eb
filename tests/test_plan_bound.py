"""The planner's row bound (dictopt.check.plan.upper_rows) and its half-product sweep
(dictopt.check.gramsweep) change nothing: every pair plan equals the one the dense
classification of every block's own products gives (the planner before the bound, kept below
as the reference, with main's current label rule), on worlds with near-duplicate, dense, dead
and never-co-active atoms, with and without a bias, for τ = 0 and τ > 0; and the sweep's plan
is the row-block planner's bit for bit where the sweep decides the blocks."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.plan as plan
from dictopt.check.pairs import BufferExtremes, dense_extremes
from dictopt.check.plan import BlockPairs, decide_pairs
from dictopt.check.stats import PassOneStats
from dictopt.check.tolerances import DEFAULT_LABELS, DEFAULT_TOLERANCES, LabelThresholds, Tolerances
from dictopt.problem import Dictionary

F64 = torch.float64


# ---- the planner before the row bound (reference) -------------------------------------------


def dense_classify_block(
    rows: torch.Tensor,
    c: torch.Tensor,
    st1: PassOneStats,
    top: BufferExtremes,
    abar: torch.Tensor,
    floor: float,
    tau: float,
    tol: Tolerances,
    thresholds: LabelThresholds,
    has_bias: bool,
) -> BlockPairs:
    """The pairs ``(i, j)``, ``i ∈ rows``: C5 with ``θ_ij = (1 − c_ij) ā_i`` against the
    buffer's ``H_ij`` (THEORY C5), pairs the buffers leave open, and label candidates."""
    c = c.to(F64)  # the planner passes the block in the atoms' dtype; the rule reads float64
    K = c.shape[1]
    N = st1.n
    n_inactive = N - st1.n_active
    theta = (1 - c) * abar[rows, None]
    tol_i = (tol.pair_rel * abar[rows] + floor)[:, None]
    # a pair is testable when j is inactive somewhere (else H_ij, L_ij are empty) and i ≠ j
    valid = (n_inactive[None, :] > 0).expand_as(c).clone()
    valid[torch.arange(rows.numel()), rows] = False
    H = dense_extremes(top, rows, K)
    known = valid & ~torch.isnan(H)
    if has_bias:
        up_viol = known & (theta - H > tol_i)
    else:  # without a bias only the strict hierarchy survives (THEORY C5)
        up_viol = known & (H <= 0) & (theta > tol_i)
    ii, jj = up_viol.nonzero(as_tuple=True)
    found = (rows[ii], jj, torch.ones_like(ii), H[ii, jj])
    up_unknown = valid & torch.isnan(H)
    if has_bias:  # lower side: see the lemma in dictopt.check.pairs
        both = st1.n_active[rows, None] + st1.n_active[None, :] >= N
        lo_unknown = valid & (both | (theta < tau))
    else:
        lo_unknown = torch.zeros_like(valid)
    ii, jj = (up_unknown | lo_unknown).nonzero(as_tuple=True)
    unknown = (rows[ii], jj)
    # label candidates (upper triangle only)
    cand = ((c >= thresholds.duplicate_cos) | (c <= -thresholds.antipodal_cos)) & (
        rows[:, None] < torch.arange(K, device=rows.device)[None, :]
    )
    ii, jj = cand.nonzero(as_tuple=True)
    return BlockPairs(found, unknown, (rows[ii], jj, c[ii, jj]))





# ---- worlds ---------------------------------------------------------------------------------


def world(seed: int, K: int, N: int, d: int, n_dense: int, n_dup: int, n_dead: int,
          parent: bool):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(K, d, generator=g, dtype=F64)
    for t in range(n_dup):  # near-duplicates (and one exact copy)
        D[K - 1 - t] = D[t] + (0 if t == 0 else 1e-3) * torch.randn(d, generator=g, dtype=F64)
    D /= D.norm(dim=1, keepdim=True)
    A = torch.rand(N, K, generator=g, dtype=F64) * (torch.rand(N, K, generator=g) < 0.15)
    A[:, :n_dense] = torch.rand(N, n_dense, generator=g, dtype=F64) * (
        torch.rand(N, n_dense, generator=g) < 0.8)
    if n_dead:
        A[:, n_dense : n_dense + n_dead] = 0
    if parent:  # atom K//2 fires only with atom K//2 + 1 (a strict hierarchy)
        i, j = K // 2, K // 2 + 1
        A[:, i] *= A[:, j] > 0
    x = A @ D + 0.3 + 0.01 * torch.randn(N, d, generator=g, dtype=F64)
    return D, A, x


def stats_of(D, A, x, bias, tau, m):
    st1 = PassOneStats(D.shape[0], D.shape[1], 0.05, m, torch.device("cpu"))
    for lo in range(0, x.shape[0], 97):
        st1.update(x[lo : lo + 97], A[lo : lo + 97], D, bias, lo, tau, sparse=False)
    return st1


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    K=st.integers(3, 40),
    N=st.integers(20, 300),
    n_dense=st.integers(0, 3),
    n_dup=st.integers(0, 3),
    n_dead=st.integers(0, 2),
    parent=st.booleans(),
    has_bias=st.booleans(),
    tau=st.sampled_from([0.0, 1e-3, 0.2]),
    m=st.integers(1, 6),
    block=st.integers(1, 17),
    f32=st.booleans(),
)
def test_plan_equals_the_dense_planner(seed, K, N, n_dense, n_dup, n_dead, parent, has_bias,
                                       tau, m, block, f32):
    n_dup = min(n_dup, K // 2)
    D, A, x = world(seed, K, N, 6, min(n_dense, K), n_dup, min(n_dead, K - n_dense), parent)
    bias = torch.full((6,), 0.3, dtype=F64) if has_bias else torch.zeros(6, dtype=F64)
    if f32:  # the planner's float32 prefilters against the float64 rule
        D, A, x, bias = D.float(), A.float(), x.float(), bias.float()
    dic = Dictionary(atoms=D, bias=bias, lam=0.05, has_bias=has_bias)
    st1 = stats_of(D, A, x, bias, tau, m)
    args = (dic, 0.05, st1, tau, DEFAULT_TOLERANCES, DEFAULT_LABELS, block, 7)
    new = decide_pairs(*args)
    saved = plan._classify_block
    plan._classify_block = dense_classify_block
    try:
        old = decide_pairs(*args, sweep=False)
    finally:
        plan._classify_block = saved
    for a, b in zip(new, old, strict=True):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            if isinstance(u, torch.Tensor):
                assert u.dtype == v.dtype and torch.equal(u, v)
            else:
                assert u == v


def test_the_bound_skips_rows():
    """On a sparse world most rows cannot violate the upper side: the bound skips them."""
    D, A, x = world(0, 60, 400, 6, 0, 0, 0, True)
    bias = torch.full((6,), 0.3, dtype=F64)
    st1 = stats_of(D, A, x, bias, 0.0, 8)
    from dictopt.check.pairs import buffer_extremes

    top = buffer_extremes(st1.top, 60)
    rows = torch.arange(60)
    c = (D @ D.T).to(F64)
    tol_row = 1e-6 * st1.mean_a + 1e-9 * float(st1.mean_a.max())
    can = plan.upper_rows(rows, c, top, st1.mean_a, tol_row, True)
    assert 0 < int(can.sum()) < 60 and bool(can[30])  # the hierarchy's child row is kept


def test_thresholds_decide_as_float64():
    """Float32 cosines against float64 thresholds: the same as comparing the float64 copy,
    at the representable neighbours of each threshold (where rounding the threshold to float32
    would decide differently)."""
    for x in (0.99, -0.9, 0.75, 1.0, 0.0, 1e-30):
        t = torch.tensor(x, dtype=F64).float()
        near = torch.stack([t, torch.nextafter(t, torch.tensor(2.0)),
                            torch.nextafter(t, torch.tensor(-2.0))])
        for c in (near, near.double()):
            assert torch.equal(plan.exact_at_least(c, x), c.double() >= x)
            assert torch.equal(plan.exact_at_most(c, x), c.double() <= x)


def test_lower_side_prefilter_is_exact():
    """θ_ij = (1 − c_ij) ā_i < τ: the float32 preselection loses no pair, at cosines packed
    around each row's crossing, for τ = 0 and τ > 0, with dead atoms (ā = 0)."""
    g = torch.Generator().manual_seed(3)
    B, K = 7, 400
    abar = torch.rand(B, generator=g, dtype=F64) * 2
    abar[0] = 0.0
    abar[1] = 1e-12
    rows = torch.arange(B)
    for tau in (0.0, 1e-3, 0.2, 5.0):
        cross = (1 - tau / abar.clamp(min=1e-300)).clamp(-1.5, 1.5).float()
        c = torch.empty(B, K)
        for i in range(B):  # float32 neighbours of the crossing, and random cosines
            v = cross[i].clone()
            for k in range(K // 2):
                c[i, k] = v
                v = torch.nextafter(v, torch.tensor(2.0))
            c[i, K // 2:] = torch.rand(K - K // 2, generator=g) * 2 - 1
        c[:, :4] = torch.tensor([1.0, 1.0000001, -1.0, 0.99999994])
        n_active = torch.zeros(K, dtype=F64)
        ii, jj = plan._lower_open(rows, c, n_active, 10, abar, tau)
        want = ((1 - c.double()) * abar[:, None] < tau).nonzero(as_tuple=True)
        assert torch.equal(ii, want[0]) and torch.equal(jj, want[1])


# ---- the half-product sweep ------------------------------------------------------------------


def _equal_plans(new, old):
    for a, b in zip(new, old, strict=True):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            if isinstance(u, torch.Tensor):
                assert u.dtype == v.dtype and torch.equal(u, v)
            else:
                assert u == v


def _plans(seed, K, N, d, n_dense, n_dup, n_dead, parent, has_bias, tau, m, block, f32,
           shift=0):
    D, A, x = world(seed, K, N, d, n_dense, n_dup, n_dead, parent)
    # roll the atoms (and their codes) by ``shift``: moves the duplicates out of block 0
    return _plans_of(D.roll(shift, 0), A.roll(shift, 1), x, has_bias, tau, m, block, f32)


def _plans_of(D, A, x, has_bias, tau, m, block, f32):
    """The sweep's plan, the row-block planner's, and how many blocks formed their products."""
    d = D.shape[1]
    bias = torch.full((d,), 0.3, dtype=F64) if has_bias else torch.zeros(d, dtype=F64)
    if f32:
        D, A, x, bias = D.float(), A.float(), x.float(), bias.float()
    dic = Dictionary(atoms=D, bias=bias, lam=0.05, has_bias=has_bias)
    st1 = stats_of(D, A, x, bias, tau, m)
    args = (dic, 0.05, st1, tau, DEFAULT_TOLERANCES, DEFAULT_LABELS, block, 7)
    calls = [0]
    own = plan._classify_block

    def counted(*a, **k):
        calls[0] += 1
        return own(*a, **k)

    plan._classify_block = counted
    try:
        new = decide_pairs(*args)
        formed = calls[0]
    finally:
        plan._classify_block = own
    return new, decide_pairs(*args, sweep=False), formed


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    K=st.integers(3, 90),
    N=st.integers(20, 300),
    d=st.sampled_from([6, 48, 300]),
    n_dense=st.integers(0, 3),
    n_dup=st.integers(0, 3),
    n_dead=st.integers(0, 2),
    parent=st.booleans(),
    has_bias=st.booleans(),
    tau=st.sampled_from([0.0, 1e-3, 0.2]),
    m=st.integers(1, 6),
    block=st.integers(1, 17),
    f32=st.booleans(),
    shift=st.integers(0, 89),
)
def test_the_sweep_gives_the_row_block_plan(seed, K, N, d, n_dense, n_dup, n_dead, parent,
                                           has_bias, tau, m, block, f32, shift):
    """Half the products, the same plan bit for bit: in high dimension most blocks are decided
    by the sweep's intervals (no label, no neighbour near a threshold), in low dimension most
    form their own products; both kinds are mixed in one plan."""
    n_dup = min(n_dup, K // 2)
    n_dense = min(n_dense, K)
    new, old, _ = _plans(seed, K, N, d, n_dense, n_dup, min(n_dead, K - n_dense), parent,
                         has_bias, tau, m, block, f32, shift=shift % K)
    _equal_plans(new, old)


def test_the_sweep_decides_blocks_and_hands_back_the_others():
    """A high-dimensional world with one exact duplicate pair, rolled to ``(20, 19)``: its
    label's cosine is reported with the row block's own bits, and ``θ_20,19 < τ = 0`` (a cosine
    of 1 up to rounding) is decided within the margin by neither end, so the first block (formed
    to judge whether the sweep pays) and the duplicate's block of 8 (rows 16–23) form their
    products; the plan is the row-block planner's. Without the duplicate only the first block
    does."""
    new, old, formed = _plans(5, 64, 200, 300, 2, 1, 1, True, True, 0.0, 4, 8, True, shift=20)
    _equal_plans(new, old)
    assert new.labels.i.tolist() == [19] and new.labels.j.tolist() == [20] and formed == 2
    new, old, formed = _plans(5, 64, 200, 300, 2, 0, 1, True, True, 0.0, 4, 8, True)
    _equal_plans(new, old)
    assert formed == 1


def test_sweep_entries_are_the_windows_of_one_symmetric_matrix():
    """Each unordered pair's product once: the entries are exactly those of the matrix built
    from the upper block triangle of the sweep's own products (off the diagonal blocks read
    transposed) inside each row's window, row-major."""
    from dictopt.check.gramsweep import sweep_entries

    g = torch.Generator().manual_seed(1)
    K, d, block = 23, 9, 5
    D = torch.randn(K, d, generator=g)
    S = torch.empty(K, K)
    for lo in range(0, K, block):
        hi = min(lo + block, K)
        P = D[lo:hi] @ D[lo:].t()
        S[lo:hi, lo:] = P  # the diagonal block as computed, both orientations
        S[hi:, lo:hi] = P[:, hi - lo :].t()
    low = torch.randn(K, generator=g) + 1.0
    high = torch.randn(K, generator=g) - 1.0
    low[3], high[4] = -torch.inf, torch.inf  # whole rows
    got = sweep_entries(D, block, low, high)
    want_i, want_j = ((S >= low[:, None]) | (S <= high[:, None])).nonzero(as_tuple=True)
    assert torch.equal(got.i, want_i) and torch.equal(got.j, want_j)
    assert torch.equal(got.value, S[want_i, want_j])
    # unordered (the planner's): block by block the same entries, in some order
    from dictopt.check.gramsweep import sweep_blocks

    for lo, e in zip(range(0, K, block), sweep_blocks(D, block, low, high, ordered=False),
                     strict=True):
        order = torch.argsort(e.i * K + e.j)
        mine = (want_i >= lo) & (want_i < lo + block)
        assert torch.equal(e.i[order], want_i[mine]) and torch.equal(e.j[order], want_j[mine])
        assert torch.equal(e.value[order], S[want_i[mine], want_j[mine]])


def test_rounding_margin_bounds_every_evaluation():
    """Any two float32 evaluations of a cosine (row-block, sub-block, single dot, float64
    rounded) differ by at most the margin; the bound also holds against the exact value."""
    from dictopt.check.gramsweep import rounding_margin

    g = torch.Generator().manual_seed(2)
    for d in (6, 300, 2304):
        D = torch.randn(40, d, generator=g)
        D[5] = D[4]  # an exact copy: a cosine of 1 up to rounding
        D /= D.norm(dim=1, keepdim=True)
        exact = D.double() @ D.double().t()
        delta = rounding_margin(D)[:, None]
        for c in (D @ D.t(), D[:7] @ D.t(), (D[:, None, :] * D[None, :, :]).sum(-1)):
            n = c.shape[0]
            assert bool(((c.double() - exact[:n]).abs() <= delta[:n] / 2).all())


def _counting_sweep(seen):
    own = plan.sweep_blocks

    def counted(*a, **k):
        for e in own(*a, **k):
            seen[0] += 1
            yield e

    return own, counted


def test_the_sweep_is_not_started_where_it_would_not_pay():
    """In 6 dimensions nearly every block holds a label or a neighbour near its threshold: the
    first block says so, no sweep starts, and every block forms its products once."""
    seen = [0]
    own, plan.sweep_blocks = _counting_sweep(seen)
    try:
        new, old, formed = _plans(3, 90, 150, 6, 2, 3, 1, True, True, 0.2, 4, 5, False)
    finally:
        plan.sweep_blocks = own
    _equal_plans(new, old)
    assert seen[0] == 0 and formed == 18


def test_the_sweep_stops_where_it_does_not_pay():
    """The first block of 8 is clean but every later one holds a near-duplicate pair (a label):
    the sweep starts, blocks 1–3 each form their own products, and then (more than half of
    the blocks seen) the sweep stops; every block forms its products at most once and the plan
    is the row-block planner's."""
    g = torch.Generator().manual_seed(4)
    K, N, d = 64, 200, 300
    D = torch.randn(K, d, generator=g, dtype=F64)
    for k in range(8, K, 2):
        D[k + 1] = D[k] + 1e-3 * torch.randn(d, generator=g, dtype=F64)
    D /= D.norm(dim=1, keepdim=True)
    A = torch.rand(N, K, generator=g, dtype=F64) * (torch.rand(N, K, generator=g) < 0.15)
    x = A @ D + 0.3 + 0.01 * torch.randn(N, d, generator=g, dtype=F64)
    seen = [0]
    own, plan.sweep_blocks = _counting_sweep(seen)
    try:
        new, old, formed = _plans_of(D, A, x, True, 0.0, 4, 8, True)
    finally:
        plan.sweep_blocks = own
    _equal_plans(new, old)
    assert seen[0] == 4 and formed == 8


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(5, 30), N=st.integers(5, 200),
       n_dense=st.integers(0, 3), parent=st.booleans(), m=st.integers(1, 6),
       tau=st.sampled_from([0.0, 0.2]))
def test_buffer_extremes_are_the_exactness_lemma_pair_by_pair(seed, K, N, n_dense, parent, m,
                                                              tau):
    """Every pair's ``H_ij`` from :func:`buffer_extremes` is the lemma's, read pair by pair
    from the buffers: the value at the first rank where ``j`` is not in the buffered row's
    support, NaN where it is in all ``m``, ``first[i]`` for ``j = i``; each pair listed once
    (the listing reads only the atoms with a pair still open after each rank)."""
    from dictopt.check.pairs import buffer_extremes

    D, A, x = world(seed, K, N, 5, n_dense, 0, 0, parent)
    bias = torch.full((5,), 0.3, dtype=F64)
    buf = stats_of(D, A, x, bias, tau, m).top
    top = buffer_extremes(buf, K)
    keys = top.pi * K + top.pj
    assert keys.unique().numel() == keys.numel()
    got = dense_extremes(top, torch.arange(K), K)
    want = torch.empty(K, K, dtype=F64)
    M = buf.vals.shape[0]
    for i in range(K):
        supports = [set(buf.supports(buf.ids[r][i : i + 1])[1].tolist()) for r in range(M)]
        for j in range(K):
            if j == i:
                want[i, j] = buf.vals[0][i]
                continue
            ranks = [r for r in range(M) if j not in supports[r]]
            want[i, j] = buf.vals[ranks[0]][i] if ranks else torch.nan
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(-7.0), want.nan_to_num(-7.0))
