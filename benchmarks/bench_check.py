"""checker vs brute force and vs encode+decode (now ``benchmarks/compare/check.py``).

Kept so old commands still work: ``python benchmarks/bench_check.py [--quick|--full|--smoke]``
is ``python benchmarks/run.py --only check ...``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--only", "check", *sys.argv[1:]]))
