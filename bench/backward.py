"""Benchmark 4: backward cost of each gradient mode on the same cells (forward excluded).

Run: python bench/backward.py [--quick]
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from _cells import PROBLEMS, report
from _harness import parser, setup

from zoo.nn import DEQ
from zoo.solvers import Anderson, ImplicitGrad, PhantomGrad, UnrolledGrad

MODES = {
    "implicit (30 it, rel 1e-4)": lambda: ImplicitGrad(tol=1e-4, max_iter=30),
    "phantom k=1 (JFB)": lambda: PhantomGrad(steps=1),
    "phantom k=5": lambda: PhantomGrad(steps=5, tau=0.8),
    "unrolled 30": lambda: UnrolledGrad(steps=30),
}


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "backward.json")
    p.add_argument("--repeats", type=int, default=3)
    a = setup(p.parse_args(argv))
    rows = []
    for problem in ("mdeq", "transformer"):
        kw = {"batch": 8 if problem == "mdeq" else 4} if a.quick else {}
        cell, _, _, x, packer = PROBLEMS[problem](**kw)
        cell.train()
        z0 = packer.unflat(torch.zeros(packer.batch, sum(packer.sizes)))
        for name, make in MODES.items():
            times = []
            for _ in range(a.repeats):
                deq = DEQ(cell, solver=Anderson(m=5, tol=1e-4, max_iter=30), grad=make())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    z = deq(x, z0)
                    loss = (
                        sum(t.pow(2).mean() for t in z) if isinstance(z, list) else z.pow(2).mean()
                    )
                    t0 = time.perf_counter()
                    loss.backward()
                    times.append(time.perf_counter() - t0)
                cell.zero_grad()
            rows.append(
                {
                    "cell": problem,
                    "grad mode": name,
                    "backward_s": round(statistics.median(times), 4),
                }
            )
            print(rows[-1], flush=True)
    cols = ["cell", "grad mode", "backward_s"]
    report(rows, cols, a.out)
    return rows


if __name__ == "__main__":
    main()
