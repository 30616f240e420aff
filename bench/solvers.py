"""Benchmarks 1 and 2: forward time-to-tolerance against torchdeq 0.1.0, and solver overhead.

Same cell, same start (zeros), same tolerance (relative), max_iter 50. For each solver we
report NFE, wall seconds (median of ``--repeats``), the worst final relative residual (computed
here, identically for both libraries), and the solver overhead two ways: ``overhead`` = solve
seconds / seconds spent inside the cell during that solve (measured in place, so machine noise
and cache effects hit both terms alike), and ``overhead_isolated`` = seconds / (NFE x one cell
call timed on its own at the start point), the definition of earlier runs. The ``implicit-zoo
compiled`` rows run Anderson with ``compile=True``; their compilation happens in the warm-up
round and is not in the seconds (``bench/solver_compile.py`` reports it). On a cell whose samples
are coupled (``deq_lm_trained``: positions attend to each other) the ``implicit-zoo joint`` rows
stop and pick the returned iterate per coupled block (``joint=True``; the DEQ-LM declares its
sequences as blocks), and the ``compact joint`` rows stop evaluating a finished sequence; their
``compiled`` twins fuse the iteration (a compacting one until its first shrink). The ``iterate``
rows return each sample's lowest-residual iterate itself (``returns="iterate"``) instead of the
default one more step ``g(z)`` (what torchdeq returns too), whose residual nobody measured.

Run: python bench/solvers.py [--quick]
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from _cells import PROBLEMS, Counted, rel_residual, report, time_call
from _harness import parser, setup

from zoo.solvers import Anderson, Broyden, FixedPointMap, Picard


def ours(kind, m, tol, max_iter, compact=False, compile=False, joint=False, returns="step"):
    cls = {"anderson": Anderson, "broyden": Broyden, "picard": Picard}[kind]
    kw = {"m": m, "compile": compile} if kind == "anderson" else {}
    solver = cls(
        tol=tol, max_iter=max_iter, stop_mode="rel", warn=False, compact=compact, joint=joint,
        returns=returns, **kw,
    )  # fmt: skip
    return lambda f, z0: solver(f.fixed_point_map if isinstance(f, Counted) else f, z0)[0]


def theirs(kind, m, tol, max_iter):
    from torchdeq.solver import anderson_solver, broyden_solver, fixed_point_iter

    fn = {"anderson": anderson_solver, "broyden": broyden_solver, "picard": fixed_point_iter}[kind]
    kw = {"m": m} if kind == "anderson" else {}
    return lambda f, z0: fn(f, z0, max_iter=max_iter, tol=tol, stop_mode="rel", **kw)[0]


def run(problem: str, configs, repeats: int, quick: bool) -> list[dict]:
    """Time each (solver, tol) for both libraries, interleaved round by round after a warm-up
    run of each, so that machine noise hits both alike."""
    kw = {"batch": 8} if quick and problem.startswith("mdeq") else ({"batch": 4} if quick else {})
    made = PROBLEMS[problem](**kw)
    if made is None:
        print(f"({problem}: no shipped checkpoint, skipped)")
        return []
    _, f, z0, _, _ = made
    rows = []
    with torch.no_grad():
        for kind, m, tol in dict.fromkeys((k, m, t) for _, k, m, t in configs):
            solves = {
                "torchdeq": theirs(kind, m, tol, 50),
                "implicit-zoo": ours(kind, m, tol, 50),
            }
            if kind == "anderson":
                # the iteration compiled (its compilation in the warm-up), and the best iterate
                # itself returned instead of one more step
                solves["implicit-zoo compiled"] = ours(kind, m, tol, 50, compile=True)
                solves["implicit-zoo iterate"] = ours(kind, m, tol, 50, returns="iterate")
            coupled = isinstance(f, FixedPointMap) and f.group is not None  # rows see each other
            subsets = isinstance(f, FixedPointMap) and f.rows is not None
            if subsets and kind == "anderson" and not coupled:  # compaction
                solves["implicit-zoo compact"] = ours(kind, m, tol, 50, compact=True)
                solves["implicit-zoo compact iterate"] = ours(
                    kind, m, tol, 50, compact=True, returns="iterate"
                )
            if coupled and kind == "anderson":
                # one decision per coupled block (the whole batch unless the map declares
                # blocks: the DEQ-LM's sequences), then finished blocks dropped
                solves["implicit-zoo joint"] = ours(kind, m, tol, 50, joint=True)
                solves["implicit-zoo compiled joint"] = ours(
                    kind, m, tol, 50, joint=True, compile=True
                )
                if subsets:
                    solves["implicit-zoo compact joint"] = ours(
                        kind, m, tol, 50, compact=True, joint=True
                    )
                    # fused until the first shrink of the working set, eager after it
                    solves["implicit-zoo compact joint compiled"] = ours(
                        kind, m, tol, 50, compact=True, joint=True, compile=True
                    )
            times = {lib: [] for lib in solves}
            inside = {lib: [] for lib in solves}
            result = {}
            for rnd in range(repeats + 1):  # round 0 is the warm-up
                for lib, solve in solves.items():
                    cf = Counted(f)
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        z = solve(cf, z0.clone())
                    if rnd:
                        times[lib].append(time.perf_counter() - t0)
                        inside[lib].append(times[lib][-1] / cf.seconds)
                    result[lib] = (cf.n, float(rel_residual(f, z).max()), cf.samples)
            t_f = time_call(f, z0)
            for lib in solves:
                nfe, res, samples = result[lib]
                sec = statistics.median(times[lib])
                rows.append(
                    {
                        "cell": problem,
                        "library": lib,
                        "solver": kind + (f" m={m}" if m else ""),
                        "tol": tol,
                        "NFE": nfe,
                        "rows_vs_full": round(samples / (nfe * z0.shape[0]), 3),
                        "seconds": round(sec, 4),
                        "max_rel_residual": res,
                        "overhead": round(statistics.median(inside[lib]), 3),
                        "overhead_isolated": round(sec / (nfe * t_f), 3),
                        "t_f_ms": round(1e3 * t_f, 2),
                    }
                )
            base = next(r for r in rows[-len(solves) :] if r["library"] == "torchdeq")
            for r in rows[-len(solves) :]:
                if r is not base:
                    r["time_vs_torchdeq"] = round(r["seconds"] / base["seconds"], 3)
    return rows


CONFIGS = [
    (lib, kind, m, tol)
    for tol, m in ((1e-3, 6), (1e-4, 5))
    for kind in ("anderson", "broyden", "picard")
    for lib in ("torchdeq", "implicit-zoo")
    if not (tol == 1e-4 and kind != "anderson")
]
COLS = [
    "cell",
    "library",
    "solver",
    "tol",
    "NFE",
    "rows_vs_full",
    "seconds",
    "max_rel_residual",
    "overhead",
    "overhead_isolated",
    "time_vs_torchdeq",
]


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "solvers.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--problems",
        default="mdeq,mdeq_tiny_trained,mdeq_cifar10_trained,transformer,deq_lm_trained",
        help="comma-separated cells to time (default: all five)",
    )
    a = setup(p.parse_args(argv))
    problems = a.problems.split(",")
    unknown = [x for x in problems if x not in PROBLEMS]
    if unknown:
        p.error(f"unknown problem(s) {unknown}; valid: {', '.join(PROBLEMS)}")
    rows = []
    for problem in problems:
        rows += run(
            problem,
            [(lib, k, m if k == "anderson" else None, t) for lib, k, m, t in CONFIGS],
            a.repeats,
            a.quick,
        )
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
