"""wide-limit bound vs cvxpy (now ``benchmarks/compare/wide.py``).

Kept so old commands still work: ``python benchmarks/bench_wide.py [--quick|--full|--smoke]``
is ``python benchmarks/run.py --only wide ...``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "wide", *sys.argv[1:]]))
