"""CPU seconds per phase of ``dictopt demo`` (README "Demo time").

``python -m benchmarks.demo_phases OUT`` runs :func:`dictopt.demo.run_demo` (progress bars off)
and prints ``time.process_time()`` at each phase-ending line, and the user + system time of the
whole process from ``getrusage`` (start-up and imports included) with the peak RSS. Set
``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS) to compare with the README's one-thread figures.
"""

from __future__ import annotations

import resource
import sys
import time

PHASES = {"world": "world", "ground": "ground-truth check", "repair": "repair",
          "classical": "classical + check", "ReLU": "SAE training + check",
          "wide": "wide sweep", "reports": "HTML reports"}


def main(out: str) -> str:
    """Run the demo into ``out``; one line ``phase seconds | ...``."""
    import dictopt.cli  # noqa: F401  (what `dictopt demo` imports)
    from dictopt.demo import run_demo

    last = [time.process_time()]
    rows = [("imports", last[0])]

    def narrate(line: str) -> None:
        if line.endswith(" s]"):
            now = time.process_time()
            name = PHASES.get(line.split()[0].strip(":'"), line[:20])
            rows.append((name, now - last[0]))
            last[0] = now

    run_demo(out, progress=False, narrate=narrate)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rows.append(("whole process", ru.ru_utime + ru.ru_stime))
    return (" | ".join(f"{n} {v:.1f}" for n, v in rows)
            + f" | peak RSS {ru.ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "dictopt-demo"))
