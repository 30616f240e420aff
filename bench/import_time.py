"""Benchmark: how long a user waits for ``zoo.load`` in a fresh Python process.

Each command runs in its own interpreter, ``--repeats`` times, interleaved, so the page cache
and machine load hit all of them alike. Reported per command: the first run (the coldest this
script can make it: without root it cannot drop the page cache, so a start right after a reboot
can be slower) and the median of the rest. ``zoo.load`` minus ``import torch`` is what the zoo
itself adds. The target is ``zoo.load('mdeq_tiny.cifar10')`` <= 2.5 s on an idle machine,
with torch's own import time beside it.

Run: python bench/import_time.py [--repeats 7]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from _cells import report
from _harness import parser, setup

COMMANDS = {
    "python (nothing imported)": "pass",
    "import torch": "import torch",
    "import zoo": "import zoo",
    "zoo.load('mdeq_tiny.cifar10')": "import zoo; zoo.load('mdeq_tiny.cifar10')",
    "zoo.load + one forward": (
        "import torch, zoo; m = zoo.load('mdeq_tiny.cifar10'); m(torch.zeros(1, 3, 32, 32))"
    ),
}
COLS = ["command", "first_s", "median_s", "min_s", "minus_torch_s"]


def _time(code: str) -> float:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> list[dict]:
    p = parser(__doc__.split("\n\n")[0], "import_time.json")
    p.add_argument("--repeats", type=int, default=7)
    a = setup(p.parse_args(argv))
    if a.quick:
        a.repeats = 2
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(a.repeats):
        for name, code in COMMANDS.items():
            times[name].append(_time(code))
    torch_med = statistics.median(times["import torch"][1:] or times["import torch"])
    rows = []
    for name, ts in times.items():
        rest = ts[1:] or ts
        med = statistics.median(rest)
        rows.append(
            {
                "command": name,
                "first_s": round(ts[0], 3),
                "median_s": round(med, 3),
                "min_s": round(min(ts), 3),
                "minus_torch_s": round(med - torch_med, 3) if "load" in name else None,
            }
        )
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
