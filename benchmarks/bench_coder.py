"""exact coder vs cvxpy and scikit-learn Lasso (now ``benchmarks/compare/coder.py``).

Kept so old commands still work: ``python benchmarks/bench_coder.py [--quick|--full|--smoke]``
is ``python benchmarks/run.py --only coder ...``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "coder", *sys.argv[1:]]))
