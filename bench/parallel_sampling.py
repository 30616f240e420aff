"""Parallel-in-time sampling of the shipped flow-matching flow: rounds and wall time.

``ffjord_toy.cfm_8gaussians`` samples by integrating its field from ``T`` back to 0 with K RK4
steps. Sequentially that is K steps one after another; in parallel
(``model.sample(n, steps=K, parallel=solver)``, :func:`zoo.nn.parallel_grid_nodes`) the whole
grid trajectory is one fixed point, and each round evaluates the field at all K steps as one
batch. For Picard and Anderson: the rounds needed until every sample is within ``--err`` of the
sequential K-step samples (the same draws), and the seconds of that parallel solve against the
sequential one, at 1 and 2 CPU threads. The target is at most K/4 rounds. On a CPU a batch of K
evaluations costs about K evaluations, so fewer rounds do not mean less time here; on a GPU a
round costs about one evaluation.

The image flow-matching flows (``ffjord_*_tiny.cfm_fashion_mnist``) sample through their own
multiscale path, which has no parallel option yet.

Run: python bench/parallel_sampling.py [--quick]
"""

from __future__ import annotations

import time
import warnings

import torch
from _cells import report
from _harness import parser, setup

COLS = ["solver", "threads", "steps", "rounds", "rounds_vs_steps", "max_error", "sequential_s",
        "parallel_s", "time_vs_sequential"]  # fmt: skip


def _solver(name: str, rounds: int):
    from zoo.solvers import Anderson, Picard

    if name == "picard":
        return Picard(tol=0.0, max_iter=rounds, warn=False)
    return Anderson(m=5, tol=0.0, max_iter=rounds, warn=False)


def main(argv=None) -> list[dict]:
    import zoo

    p = parser(__doc__, "parallel_sampling.json")
    p.add_argument("--steps", type=int, default=32, help="RK4 steps K")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--err", type=float, default=1e-3, help="sample error that counts as equal")
    a = setup(p.parse_args(argv))
    steps, n = (8, 200) if a.quick else (a.steps, a.samples)
    warnings.simplefilter("ignore")
    model = zoo.load("ffjord_toy.cfm_8gaussians")

    def gen():
        return torch.Generator().manual_seed(0)

    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        seq = model.sample(n, gen(), steps=steps)
        t_seq = time.perf_counter() - t0
        for name in ("picard", "anderson"):
            rounds = None  # not within --err after K rounds: reported as "> K"
            for r in range(1, steps + 1):  # the fewest rounds within --err
                t0 = time.perf_counter()
                par = model.sample(n, gen(), steps=steps, parallel=_solver(name, r))
                t_par = time.perf_counter() - t0
                err = float((par - seq).abs().max())
                if err < a.err:
                    rounds = r
                    break
            rows.append({"solver": name, "threads": threads, "steps": steps,
                         "rounds": rounds if rounds else f"> {steps}",
                         "rounds_vs_steps": round(rounds / steps, 3) if rounds else "> 1",
                         "max_error": float(f"{err:.2g}"),
                         "sequential_s": round(t_seq, 3), "parallel_s": round(t_par, 3),
                         "time_vs_sequential": round(t_par / t_seq, 2)})  # fmt: skip
            print(rows[-1], flush=True)
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
