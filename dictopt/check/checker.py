"""``check``: two streamed passes, every first-order condition, certificates (THEORY §2).

The phases, each in its own module: the inputs are validated (:mod:`~dictopt.check.inputs`);
pass 1 (:class:`~dictopt.check.passes.PassOne`) accumulates C1–C4 statistics, capacity and top
buffers; between the passes the buffers decide ``H_ij`` exactly for almost every ordered pair
(:mod:`~dictopt.check.plan`); pass 2 (:class:`~dictopt.check.passes.PassTwo`) computes the
remaining pair extremes, the step bounds of the C5 certificates and the co-activity of label
candidates; verdicts, labels and the joint hull follow (:mod:`~dictopt.check.verdicts`) and the
report is assembled (:mod:`~dictopt.check.summary`). An executor
(:class:`~dictopt.check.executor.LocalExecutor` by default, or
``dictopt.distributed.DaskExecutor``) runs the passes. Memory: ``O(K d + K m L0)`` plus
``K × block`` blocks of the Gram matrix, independent of N.
"""

from __future__ import annotations

import time
from typing import Any

from dictopt.check.codecache import CODE_CACHE_BYTES, OWN_CODE_CACHE_BYTES, CodeCache
from dictopt.check.conditions import atom_conditions
from dictopt.check.executor import Chunked, Executor, LocalExecutor
from dictopt.check.gcpause import paused_gc
from dictopt.check.inputs import (
    Setup,
    prepare_setup,
    require_shippable_codes,
    validate_dictionary,
)
from dictopt.check.options import DEFAULT_OPTIONS, CheckOptions
from dictopt.check.passes import PassOne, PassTwo
from dictopt.check.plan import PairPlan, decide_pairs
from dictopt.check.report import CheckReport
from dictopt.check.summary import assemble_report
from dictopt.check.verdicts import (
    absorption_labels,
    joint_hull_verdicts,
    pair_violations,
    structural_labels,
)
from dictopt.problem import Dictionary


def check(
    dictionary: Dictionary,
    source: Any,
    *,
    codes: Any = "own",
    lam: float | None = None,
    options: CheckOptions = DEFAULT_OPTIONS,
    amortisation: Any = None,
    chunk_size: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    **option_changes: Any,
) -> CheckReport:
    """Check every first-order condition of THEORY §2 on streamed data.

    Parameters
    ----------
    dictionary:
        A canonical :class:`~dictopt.problem.Dictionary` (unit atoms; its encoder, if any), or
        anything :func:`dictopt.io.as_dictionary` accepts (a SAELens SAE object, a dictopt
        SAE module, a scikit-learn estimator, a state dict, a saved folder).
    source:
        Activations: an array/tensor ``[N, d]``, a ``.npy`` path, a shard folder, a callable
        returning a fresh iterator of batches, a torch ``DataLoader`` or an
        :class:`~dictopt.data.sources.ActivationSource` (see
        :func:`~dictopt.data.sources.as_source`; with a Dask executor: anything
        ``dictopt.distributed.partition_source`` accepts).
    codes:
        ``"own"``, ``"optimal"``, a callable ``x -> codes`` or given codes ``[N, K]``.
    lam:
        λ (overrides the dictionary's). Required when the dictionary has none.
    options:
        :class:`CheckOptions` (tolerances, label thresholds, buffers, hull, kernels).
    amortisation:
        The amortisation gap (own codes' loss minus the exact lasso codes' loss, per row):
        ``"all"`` rows, ``("sample", n)`` or ``n`` (about ``n`` rows chosen by a hash of the
        row index, reported with a standard error), ``"off"``/``False``. Default: a sample of
        :data:`~dictopt.check.amortisation.DEFAULT_SAMPLE_ROWS` rows when the dictionary has
        its own encoder and ``codes="own"``, else off (see :mod:`dictopt.check.amortisation`).
    chunk_size:
        Rows per chunk (default: the source's).
    progress:
        Show progress bars.
    executor:
        Runs the passes: :class:`~dictopt.check.executor.LocalExecutor` (default) or
        ``dictopt.distributed.DaskExecutor`` (partition by partition on a Dask cluster).
    **option_changes:
        Any field of :class:`CheckOptions` (``tol=``, ``hull=``, ``buffer_size=``, ...),
        applied to ``options``.

    Returns
    -------
    CheckReport
    """
    from dictopt.check.heldout import heldout_options
    from dictopt.io.objects import as_dictionary

    dictionary = as_dictionary(dictionary)
    options = options.replace(**option_changes)

    heldout_options(options.heldout)  # bad input is refused before any work
    executor = executor if executor is not None else LocalExecutor()
    require_shippable_codes(executor, codes)
    validate_dictionary(dictionary)
    with executor.session():
        stream = executor.open(source, dtype=dictionary.dtype, chunk_size=chunk_size)
        setup = prepare_setup(dictionary, stream.d, codes, lam, amortisation, n_rows=stream.n)
        if isinstance(executor, LocalExecutor) and setup.mode in ("optimal", "own"):
            # compute the codes once: pass 2 (and the held-out passes) read pass 1's
            setup.cache = CodeCache(
                CODE_CACHE_BYTES if setup.mode == "optimal" else OWN_CODE_CACHE_BYTES
            )
        return run_check(setup, executor, stream, options, progress=progress)


def pass_two_needed(plan: PairPlan, want_hull: bool) -> bool:
    """Whether pass 2 must stream the codes.

    Parameters
    ----------
    plan:
        The pair plan.
    want_hull:
        Whether the exact joint hull runs (it needs the codes).

    Returns
    -------
    bool
        True when some pair is tracked, some absorption candidate is streamed or the hull
        runs; otherwise pass 2's statistics are the empty ones ``PassTwo.start()`` gives (the
        absorption sums are read per candidate pair only), so the pass is skipped.
    """
    return (bool(plan.key.numel()) or want_hull
            or (plan.absorption is not None and bool(plan.absorption[0].numel())))


def run_check(
    setup: Setup,
    executor: Executor,
    stream: Chunked,
    options: CheckOptions = DEFAULT_OPTIONS,
    *,
    progress: bool = False,
) -> CheckReport:
    """The phases of :func:`check` on validated inputs.

    Parameters
    ----------
    setup:
        From :func:`~dictopt.check.inputs.prepare_setup`.
    executor:
        Runs the passes over ``stream``.
    stream:
        What ``executor.open`` returned for the source.
    options:
        As for :func:`check`.
    progress:
        Show progress bars.

    Returns
    -------
    CheckReport
    """
    o = options
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dic = setup.dictionary

    p1 = executor.run(PassOne(setup, o.tol, o.buffer_size, o.sparse), stream, progress=progress)
    timings["pass1"] = time.perf_counter() - t0
    st1, tau = p1.stats, p1.tau
    with paused_gc():  # a record per violated atom: up to hundreds of thousands, acyclic
        violations, cols = atom_conditions(st1, dic.atoms, setup.lam, tau, dic.has_bias, o.tol)
    st1.release_gradients()  # [K, d] float64, read by C2 alone (issue #17)

    t1 = time.perf_counter()
    plan = decide_pairs(dic, setup.lam, st1, tau, o.tol, o.thresholds, o.block,
                        o.max_pair_certificates)
    timings["pairs"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    want_hull = o.hull is True or (o.hull == "auto" and st1.n * dic.K <= o.hull_exact_limit)
    job = PassTwo(setup, plan, tau, want_hull)
    needed = pass_two_needed(plan, want_hull)
    p2 = executor.run(job, stream, progress=progress) if needed else job.start()
    timings["pass2"] = time.perf_counter() - t2

    pos_of = {int(k): p for p, k in enumerate(plan.key.tolist())}
    violations.extend(pair_violations(setup, plan, p2.stats, pos_of, st1.mean_a, tau, o.tol))
    timings["certificates"] = time.perf_counter() - t2 - timings["pass2"]

    labels = structural_labels(st1, p2.stats, pos_of, plan.labels, o.thresholds)
    labels.extend(absorption_labels(p2.absorption, setup.dictionary.atoms, o.thresholds))

    hull_violations, hull_info = joint_hull_verdicts(
        setup, p2.kept_codes, st1, tau, o.tol, o.hull, want_hull, violations, o.hull_duals,
        o.hull_basis,
    )
    violations.extend(hull_violations)
    timings["hull"] = hull_info["seconds"]

    violations.sort(key=lambda v: (-(v.model_decrease or 0.0), -v.slope))
    with paused_gc():  # a row per atom
        report = assemble_report(setup, p1, cols, violations, labels, hull_info,
                                 int(plan.key.numel()), o.tol, timings, t0)
    if o.heldout is not None and o.heldout is not False:
        from dictopt.check.heldout import run_heldout

        run_heldout(setup, executor, stream, report, o.tol, o.heldout, progress=progress)
    return report
