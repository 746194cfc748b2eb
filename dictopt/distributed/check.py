"""The checker and certificate measurement as map-and-merge over partitions on Dask.

:class:`DaskPasses` is the distributed driver of :func:`dictopt.check.checker.run_check`: the
same per-chunk functions (``pass_one_update``, ``pass_two_update``) and the same merges run on
workers, and everything between and after the passes (pair decisions, C1–C5, certificates,
labels, hull, report) runs once on the client on statistics whose size does not depend on N.
τ and the sparse kernels are fixed on the first chunk of the first partition, exactly as the
single-process check fixes them on the first chunk of the stream.

Results equal the single-process check on the same data: counts, maxima, minima, labels and
the decided pairs exactly; sums to floating-point rounding (they add in a different order).
One exception by design: the step bounds ``t_max`` of C5 pairs left to pass 2 are computed
against running extremes (see :class:`~dictopt.check.stats.PassTwoStats`), so they are
conservative in both drivers and may be smaller here (each partition starts from the pass-1
bounds, not from the preceding partitions' extremes); a certificate is valid either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dictopt.check.certify import (
    CertifySums,
    Measurement,
    certify_chunk,
    finish_certify,
    prepare_certify,
    scaled_moves,
)
from dictopt.check.checker import (
    PairPlan,
    PassOneResult,
    PassTwoResult,
    Setup,
    _codes_for,
    first_chunk_choices,
    make_coder,
    merge_pass_one,
    merge_pass_two,
    pass_one_start,
    pass_one_update,
    pass_two_start,
    pass_two_update,
    prepare_setup,
    run_check,
)
from dictopt.check.moves import Move
from dictopt.check.report import CheckReport, Violation
from dictopt.check.tolerances import Tolerances
from dictopt.data.sources import DEFAULT_CHUNK_SIZE
from dictopt.distributed.cluster import DEFAULT_RETRIES, dask_client, map_reduce, share
from dictopt.distributed.sources import PartitionedSource, PartitionSource, partition_source
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_width


def _probe(src: PartitionSource, start: int, setup: Setup, tol: Tolerances,
           sparse: bool | None) -> tuple[float, bool]:
    """τ and the sparse choice from the first chunk (the first partition's first chunk)."""
    chunk = next(src.iter_chunks())
    x = chunk.data.to(setup.dictionary.device)
    return first_chunk_choices(setup, setup.codes(x, start + chunk.start), tol, sparse)


def _pass_one_partition(src: PartitionSource, start: int, setup: Setup, tau: float,
                        sparse: bool, buffer_size: int) -> PassOneResult:
    p1 = pass_one_start(setup, buffer_size, tau)
    for chunk in src.iter_chunks():
        x = chunk.data.to(setup.dictionary.device)
        g = start + chunk.start
        pass_one_update(setup, p1, x, setup.codes(x, g), g, sparse)
    return p1


def _pass_two_partition(src: PartitionSource, start: int, setup: Setup, plan: PairPlan,
                        tau: float, keep_codes: bool) -> PassTwoResult:
    p2 = pass_two_start(setup, plan)
    for chunk in src.iter_chunks():
        x = chunk.data.to(setup.dictionary.device)
        pass_two_update(p2, setup.codes(x, start + chunk.start), tau, keep_codes)
    return p2


class DaskPasses:
    """Both passes of the check mapped over the partitions of ``psrc`` on ``client``."""

    def __init__(self, client: Any, psrc: PartitionedSource, *, chunk_size: int,
                 progress: bool = False, retries: int = DEFAULT_RETRIES) -> None:
        self.client, self.psrc = client, psrc
        self.chunk_size, self.progress, self.retries = chunk_size, progress, retries
        self._setup: tuple[Setup, Any] | None = None

    def _scattered(self, setup: Setup) -> Any:
        """The setup (dictionary, λ, coder; no stream) sent once to every worker."""
        if self._setup is None or self._setup[0] is not setup:
            light = dataclasses.replace(setup, src=None)
            self._setup = (setup, share(self.client, light))
        return self._setup[1]

    def _map(self, fn: Any, setup: Setup, args: Sequence[Any], merge: Any, desc: str,
             **kw: Any) -> Any:
        return map_reduce(self.client, fn, self.psrc, args, merge, chunk_size=self.chunk_size,
                          dtype=setup.dictionary.dtype, desc=desc, retries=self.retries, **kw)

    def pass_one(self, setup: Setup, tol: Tolerances, buffer_size: int,
                 sparse: bool | None) -> PassOneResult:
        s = self._scattered(setup)
        tau, use_sparse = self._map(_probe, setup, (s, tol, sparse), None, "check probe",
                                    partitions=self.psrc.partitions[:1])
        return self._map(_pass_one_partition, setup, (s, tau, use_sparse, buffer_size),
                         merge_pass_one, "check pass 1", progress=self.progress)

    def pass_two(self, setup: Setup, plan: PairPlan, tau: float,
                 want_hull: bool) -> PassTwoResult:
        if not (plan.key.numel() or want_hull):
            return pass_two_start(setup, plan)
        plan_f = share(self.client, plan)
        return self._map(_pass_two_partition, setup, (self._scattered(setup), plan_f, tau,
                         want_hull), merge_pass_two, "check pass 2", progress=self.progress)


def _check_codes_arg(codes: Any) -> None:
    if not isinstance(codes, str) and not callable(codes):
        raise DictoptInputError(
            "codes: a distributed check computes codes on the workers: pass 'own', 'optimal' "
            "or a picklable callable x -> codes, not an array of given codes"
        )


def check_distributed(
    dictionary: Dictionary,
    source: Any,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_rows: int | None = None,
    codes: Any = "own",
    lam: float | None = None,
    amortisation: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 10.0,
    **options: Any,
) -> CheckReport:
    """:func:`dictopt.check.check` on a Dask cluster, partition by partition.

    Parameters
    ----------
    dictionary, codes, lam, amortisation, chunk_size, progress:
        As for :func:`~dictopt.check.check` (``codes``: ``"own"``, ``"optimal"`` or a
        picklable callable; given code arrays are not shipped to workers). ``progress`` shows
        a bar over completed partitions.
    source:
        Anything :func:`~dictopt.distributed.partition_source` accepts: a shard folder, a
        ``.npy`` file, a Zarr array or path, a Dask array, a :class:`PartitionedSource`.
    client, scheduler, workers:
        A ``distributed.Client``; or the address of a running scheduler; or the number of
        local worker processes to start (see :func:`~dictopt.distributed.dask_client`).
    partition_rows:
        Rows per partition (default: one partition per shard up to 65536 rows).
    retries:
        Extra tries of a failed partition before :class:`PartitionError` names it.
    timeout:
        Seconds to wait for ``scheduler``.
    **options:
        ``tol``, ``thresholds``, ``buffer_size``, ``hull``, ``hull_exact_limit``,
        ``max_pair_certificates``, ``sparse``, ``block`` as for ``check``.

    Returns
    -------
    CheckReport
        Equal to the single-process report (see the module docstring for the tolerance).
    """
    _check_codes_arg(codes)
    psrc = partition_source(source, rows=partition_rows)
    setup = prepare_setup(dictionary, psrc.d, codes, lam, amortisation)
    with dask_client(client, scheduler=scheduler, workers=workers, timeout=timeout) as c:
        passes = DaskPasses(c, psrc, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
                            progress=progress, retries=retries)
        return run_check(setup, passes, **options)


def _certify_partition(src: PartitionSource, start: int, dictionary: Dictionary, lam: float,
                       coder: Any, moves: list[Move]) -> CertifySums:
    sums = CertifySums.empty(len(moves))
    for chunk in src.iter_chunks():
        x = chunk.data.to(dictionary.device)
        a = _codes_for(coder, x, start + chunk.start, dictionary.K, dictionary.dtype)
        sums.merge(certify_chunk(dictionary, lam, moves, x, a))
    return sums


def _merge_certify(a: CertifySums, b: CertifySums) -> CertifySums:
    return a.merge(b)


def certify_distributed(
    dictionary: Dictionary,
    source: Any,
    violations: CheckReport | Sequence[Violation],
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_rows: int | None = None,
    codes: Any = "own",
    step_scale: float = 1.0,
    top: int | None = 50,
    lam: float | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 10.0,
) -> list[Measurement]:
    """:func:`dictopt.check.certify.certify` with the loss changes summed over partitions.

    Arguments as for ``certify`` and :func:`check_distributed`.
    """
    _check_codes_arg(codes)
    lam, vs = prepare_certify(dictionary, violations, lam, top)
    psrc = partition_source(source, rows=partition_rows)
    check_width(psrc.d, dictionary.d, psrc.n)
    _, coder = make_coder(dictionary, codes)
    moves = scaled_moves(vs, step_scale)
    with dask_client(client, scheduler=scheduler, workers=workers, timeout=timeout) as c:
        args = [share(c, obj) for obj in (dictionary, lam, coder, moves)]
        sums = map_reduce(c, _certify_partition, psrc, args, _merge_certify,
                          chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, dtype=dictionary.dtype,
                          desc="certify", progress=progress, retries=retries)
    return finish_certify(vs, sums, step_scale)


__all__ = ["DaskPasses", "certify_distributed", "check_distributed"]
