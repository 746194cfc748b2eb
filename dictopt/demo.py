"""The built-in demonstration behind ``dictopt demo`` (the README's main job).

It plants a strict feature hierarchy ("labrador only fires with dog"), shows that the
generating dictionary is *not* a local minimum (every child→parent pair violates C5 with a
certificate whose measured loss drop is reported), repairs it by certified descent, learns a
classical dictionary and a ReLU SAE and checks both, runs a short wide-limit sweep, and writes
self-contained HTML reports. Everything goes to one folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dictopt.atomic import write_text
from dictopt.check import CheckReport, check
from dictopt.check.certify import certify
from dictopt.check.repair import repair
from dictopt.data.worlds import make_world
from dictopt.io.native import save_dictionary
from dictopt.metrics import atom_recovery, cosine_matrix
from dictopt.plots import write_report
from dictopt.solvers.classical import fit_classical
from dictopt.solvers.train import fit_sae
from dictopt.wide import sweep

log = logging.getLogger(__name__)

#: World parameters of the demo: small enough for a few minutes on 2 cores.
DEMO_WORLD: dict[str, Any] = {"n": 4000}
DEMO_LAM = 0.05
#: ReLU SAE training steps and the wide sweep's widths (on the first SWEEP_N points).
SAE_STEPS = 3000
SWEEP_WIDTHS = (4, 8, 16, 32, 64)
SWEEP_N = 1000
#: How many of the strongest violations get their certificate measured on the data.
CERTIFIED_TOP = 20


@dataclass
class DemoResult:
    """What the demo measured (also written to ``summary.json``)."""

    out: Path
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def _c5_hierarchy_hits(report: CheckReport, edges: list[tuple[int, int]]) -> int:
    """How many planted (child, parent) edges the report flags as C5 violations."""
    flagged = {(v.i, v.j) for v in report.by_condition("C5")}
    return sum((child, parent) in flagged for child, parent in edges)


def _check_and_save(dictionary: Any, x: Any, codes: Any, path: Path, progress: bool,
                    amortisation: Any = None) -> CheckReport:
    """Check, measure the strongest certificates on the data, and save the JSON report."""
    report = check(dictionary, x, codes=codes, progress=progress, amortisation=amortisation)
    certify(dictionary, x, report, codes=codes, top=CERTIFIED_TOP)  # fills measured_decrease
    report.save_json(path)
    return report


def _counts(summary: dict) -> str:
    """``"C1 0, C2 3, ..."``: violations per condition."""
    return ", ".join(f"{c} {n}" for c, n in summary["counts"].items())


def _absorption_summary(learned_KD: Any, true_KD: Any, edges: list[tuple[int, int]]) -> dict:
    """Mean over planted edges of the best learned cosine to parent, child and parent+child."""
    true = torch.as_tensor(true_KD, dtype=torch.float64)
    child = true[[c for c, _ in edges]]
    parent = true[[p for _, p in edges]]
    both = parent + child
    best = {
        name: cosine_matrix(learned_KD, target).max(dim=0).values.mean().item()
        for name, target in (("parent", parent), ("child", child), ("parent+child", both))
    }
    return best


def run_demo(
    out: str | Path = "dictopt-demo",
    *,
    seed: int = 0,
    lam: float = DEMO_LAM,
    world_params: dict[str, Any] | None = None,
    max_iter: int = 300,
    progress: bool = True,
    narrate: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demonstration and write its outputs to ``out``; returns the figures.

    Parameters
    ----------
    narrate:
        Called with each summary line as soon as its phase ends, the phase's time appended
        (``dictopt demo`` prints them); the lines without times are ``result.lines``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _one_thread():
        return _run(out, seed, lam, world_params, max_iter, progress, narrate)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch and the BLAS libraries on one thread while the demo runs (restored after).

    The demo's work is many small tensor operations (the exact coder on a few thousand rows,
    a 256-row SAE batch): a second thread does not shorten it on an idle 2-core box (37.6 and
    41.6 s with one thread, 38.2–49.3 s with default threads), and when other processes hold
    the cores, threads waiting for each other stretched a run several-fold. One thread also
    makes the outputs independent of the machine's core count.
    """
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def _run(
    out: Path, seed: int, lam: float, world_params: dict[str, Any] | None, max_iter: int,
    progress: bool, narrate: Callable[[str], None] | None,
) -> DemoResult:
    """:func:`run_demo`'s phases, in order."""
    result = DemoResult(out)
    t0 = time.perf_counter()
    nar = _Narrator(result, narrate, t0)
    say = nar.say

    world = make_world("hierarchy", seed=seed, **(world_params or DEMO_WORLD))
    say(
        f"world 'hierarchy': N={world.n} d={world.d} K_true={world.K_true} "
        f"with {len(world.edges)} child→parent edges (children fire only with their parent)"
    )
    # Everything but the SAE's training runs without autograd (inference mode: no version
    # counters or grad checks on each of the many small tensor operations of the exact coder,
    # the checks and the fits; the same numbers). The world's tensors are made outside, so
    # that the training can use them.
    with torch.inference_mode():
        truth, truth_report, hits = _demo_truth(world, lam, out, progress, nar)
        repaired = _demo_repair(truth, world, out, progress, nar)
        learned, learned_report, rec, absorbed = _demo_classical(
            world, lam, seed, max_iter, repaired.losses[0], out, progress, nar
        )
    s = learned_report.summary
    sae, sae_report = _demo_sae(world, lam, seed, out, progress, nar)
    t = sae_report.summary
    with torch.inference_mode():
        wide = _demo_wide(world, lam, seed, out, progress, nar)
        reports = _demo_reports(out, world, (truth, truth_report), (learned, learned_report),
                                (sae, sae_report), wide)
    say("reports: " + ", ".join(str(path) for path in reports.values()))
    say(f"open {reports['report_truth.html']} in a browser: it opens with the triage (what "
        "is wrong, what it means, what to do), then the pair hull plots", ends_phase=False)
    result.figures = {
        "seed": seed,
        "lam": lam,
        "world": world.params,
        "truth_edges": len(world.edges),
        "truth_edges_flagged": hits,
        "truth_loss": truth_report.summary["loss"],
        "repaired_loss": repaired.losses[-1],
        "classical_loss": s["loss"],
        "classical_recovery_095": rec.fraction,
        "classical_counts": s["counts"],
        "classical_edge_cosines": absorbed,
        "sae_loss": t["loss"],
        "sae_counts": t["counts"],
        "l_inf": wide.l_inf,
        "wide_gaps": {row.K: row.gap for row in wide.rows},
        "seconds": time.perf_counter() - t0,
    }
    say(f"outputs in {out}/ ({result.figures['seconds']:.0f} s)", ends_phase=False)
    write_text(out / "summary.json", json.dumps(result.figures, indent=1, default=str) + "\n")
    write_text(out / "summary.txt", "\n".join(result.lines) + "\n")
    return result


class _Narrator:
    """The demo's summary lines: kept in ``result.lines`` and passed to ``narrate`` with the
    time of the phase they end."""

    def __init__(self, result: DemoResult, narrate: Callable[[str], None] | None,
                 t0: float) -> None:
        self.result, self.narrate, self.phase = result, narrate, t0

    def say(self, line: str, *, ends_phase: bool = True) -> None:
        """Record ``line``; narrate it (with the phase's time when it ends the phase)."""
        self.result.lines.append(line)
        now = time.perf_counter()
        if self.narrate is not None:
            self.narrate(f"{line}  [{now - self.phase:.1f} s]" if ends_phase else line)
        if ends_phase:
            self.phase = now

    def announce(self, text: str) -> None:
        """Narrate what the next phase does (not a summary line)."""
        if self.narrate is not None:
            self.narrate(text)


def _demo_truth(
    world: Any, lam: float, out: Path, progress: bool, nar: _Narrator
) -> tuple[Any, CheckReport, int]:
    """Check the ground truth with the world's own codes: the dictionary, its report and how
    many planted edges are flagged."""
    nar.announce("checking the ground truth (two streamed passes, then certificates) ...")
    truth = world.truth(lam)  # checked with the world's own codes
    truth_report = _check_and_save(truth, world.x, world.codes, out / "check_truth.json", progress)
    hits = _c5_hierarchy_hits(truth_report, world.edges)
    c5 = truth_report.by_condition("C5")
    worst = c5[0] if c5 else None
    nar.say(
        f"ground truth: {hits}/{len(world.edges)} planted edges flagged as C5 violations "
        f"({len(c5)} C5 violations in all)"
    )
    if worst is not None:
        nar.say(
            f"  strongest certificate: pair ({worst.i}, {worst.j}) predicted decrease "
            f"{worst.predicted_decrease:.3g}, measured {worst.measured_decrease:.3g}",
            ends_phase=False,
        )
    return truth, truth_report, hits


def _demo_repair(truth: Any, world: Any, out: Path, progress: bool, nar: _Narrator) -> Any:
    """Repair the ground truth by certified descent and save the result."""
    nar.announce("repairing the ground truth by certified descent (one check per round) ...")
    repaired = repair(truth, world.x, progress=progress)
    save_dictionary(repaired.dictionary, out / "truth_repaired")
    nar.say(
        f"repair of the ground truth: loss {repaired.losses[0]:.6g} → {repaired.losses[-1]:.6g} "
        f"in {len(repaired.losses) - 1} certified moves"
    )
    return repaired


def _demo_classical(
    world: Any, lam: float, seed: int, max_iter: int, truth_loss: float, out: Path,
    progress: bool, nar: _Narrator,
) -> tuple[Any, CheckReport, Any, dict[str, float]]:
    """Learn a classical dictionary, save and check it: the dictionary, its report, its atom
    recovery and the best cosines per planted edge."""
    nar.announce("learning a classical dictionary (alternating lasso / dictionary update) ...")
    learned = fit_classical(
        world.x,
        K=world.K_true,
        lam=lam,
        seed=seed,
        max_iter=max_iter,
        progress=progress,
    )
    save_dictionary(learned, out / "classical")
    rec = atom_recovery(learned.atoms, world.atoms, threshold=0.95)
    absorbed = _absorption_summary(learned.atoms, world.atoms, world.edges)
    learned_report = _check_and_save(
        learned, world.x, "optimal", out / "check_classical.json", progress
    )
    s = learned_report.summary
    nar.say(
        f"classical dictionary (K={learned.K}): loss {s['loss']:.6g} vs truth "
        f"{truth_loss:.6g} (both with optimal codes); "
        f"explained variance {s['explained_variance']:.4f}; "
        f"{rec.fraction:.0%} of true atoms matched at cosine ≥ 0.95"
    )
    nar.say(
        f"  per planted edge, best learned cosine to: parent {absorbed['parent']:.3f}, "
        f"child {absorbed['child']:.3f}, parent+child {absorbed['parent+child']:.3f} "
        "(the optimum absorbs children into parent+child atoms instead of keeping them)",
        ends_phase=False,
    )
    nar.say(
        "  its check: "
        + _counts(s)
        + (" — a certified descent exists" if s["unstable_optimum"] else " — no certified descent"),
        ends_phase=False,
    )
    return learned, learned_report, rec, absorbed


def _demo_sae(
    world: Any, lam: float, seed: int, out: Path, progress: bool, nar: _Narrator
) -> tuple[Any, CheckReport]:
    """Train a ReLU SAE, save and check it with its own codes."""
    nar.announce(f"training a ReLU SAE ({SAE_STEPS} steps) and checking it ...")
    sae = fit_sae(
        "relu",
        world.x,
        K=2 * world.K_true,
        lam=lam,
        seed=seed,
        progress=progress,
        total_steps=SAE_STEPS,
        batch_size=256,
        lr_decay_steps=SAE_STEPS // 5,
    ).to(torch.float64)
    with torch.inference_mode():  # as the other phases (run_demo)
        save_dictionary(sae, out / "sae_relu")
        # K = 64: exact codes for all 4,000 rows cost little, so the demo reports the exact gap
        sae_report = _check_and_save(sae, world.x, "own", out / "check_sae_relu.json",
                                     progress, amortisation="all")
    t = sae_report.summary
    nar.say(
        f"ReLU SAE (K={sae.K}, λ={lam}): loss {t['loss']:.6g} with its own codes; amortisation "
        f"gap {t['amortisation']['loss_gap']:.3g}; explained variance "
        f"{t['explained_variance']:.4f}; " + _counts(t)
    )
    return sae, sae_report


def _demo_wide(
    world: Any, lam: float, seed: int, out: Path, progress: bool, nar: _Narrator
) -> Any:
    """The wide-limit sweep on the first :data:`SWEEP_N` points, written to ``out``."""
    # The sweep's fits are deliberately short (max_iter=100): silence their "not converged"
    # warnings, which are expected here; the bound comparison holds for any loss found.
    nar.announce(f"wide-limit sweep over K = {', '.join(map(str, SWEEP_WIDTHS))} ...")
    classical_log = logging.getLogger("dictopt.solvers.classical")
    level = classical_log.level
    classical_log.setLevel(logging.ERROR)
    try:
        wide = sweep(
            world.x[:SWEEP_N],
            list(SWEEP_WIDTHS),
            [seed],
            lam,
            truth=world.atoms,
            fit_options={"max_iter": 100},
            limit_init=False,
            progress=progress,
        )
    finally:
        classical_log.setLevel(level)
    wide.to_json(out)
    gaps = ", ".join(f"K={row.K}: {row.gap:.3g}" for row in wide.rows)
    nar.say(f"wide limit on {SWEEP_N} points: L_∞ = {wide.l_inf:.6g}; gap of the best loss {gaps}")
    return wide


def _demo_reports(
    out: Path, world: Any, truth: tuple[Any, CheckReport], learned: tuple[Any, CheckReport],
    sae: tuple[Any, CheckReport], wide: Any,
) -> dict[str, Path]:
    """The three HTML reports (dictionary and report of each model), by file name."""
    return {
        "report_truth.html": write_report(
            truth[1], out / "report_truth.html", data=world.x, dictionary=truth[0], wide=wide,
            json_href="check_truth.json",
        ),
        "report_classical.html": write_report(
            learned[1], out / "report_classical.html", data=world.x, dictionary=learned[0],
            json_href="check_classical.json",
        ),
        "report_sae_relu.html": write_report(
            sae[1], out / "report_sae_relu.html", data=world.x, dictionary=sae[0],
            json_href="check_sae_relu.json",
        ),
    }
