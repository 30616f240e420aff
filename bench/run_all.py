"""``make bench``: every benchmark, one table each, JSON + markdown under bench/results/.

Timings are noisy on shared 2-core machines: compare ratios from one run, and do not run
while training. Set ``BENCH_QUICK=1`` for a smoke run with tiny batches.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import backward  # noqa: E402
import memory  # noqa: E402
import solvers  # noqa: E402


def main() -> None:
    quick = ["--quick"] if os.environ.get("BENCH_QUICK") else []
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.time()
    print("== 1-2. forward solve: implicit-zoo vs torchdeq 0.1.0, overhead ==")
    solvers.main(quick)
    print("\n== 3. peak training memory: DEQ vs unrolled ==")
    memory.main(quick)
    print("\n== 4. backward cost per gradient mode ==")
    backward.main(quick)
    print(f"\nall benchmarks done in {time.time() - t0:.0f} s; results in bench/results/")


if __name__ == "__main__":
    main()
