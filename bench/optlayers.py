"""The optimization layers' forward cost.

* ``qp``: ``zoo.nn.qp_solve`` (batched interior point) against ``cvxpylayers`` on a batch of 128
  random feasible QPs with ``n`` variables, ``n`` inequalities and ``n/4`` equalities, in float64,
  through two of its backends: the default (one conic solve per problem through diffcp and
  Clarabel; it solves the quadratic as a second-order cone, so its solutions are accurate to
  about the square root of its gap tolerance) and Moreau (a batched solver that takes the
  quadratic objective as it is; its interior point method). Columns: ``zoo_ms``,
  ``cvxpylayers_ms`` and ``moreau_ms`` (median forward over the batch), the speedups
  ``zoo_ms`` gives over each, and ``max_abs_diff`` / ``moreau_max_abs_diff`` between the
  solutions.
* ``sat``: ``zoo.nn.SATLayer`` with the paper's sequential coordinate sweeps (a Python-level loop
  over the variables) against the parallel update accelerated by Anderson and against the same
  sweeps compiled (``method="satnet"``, as many sweeps as the Python loop took), on a batch of 8:
  a well-posed problem of the 4x4 Sudoku layer's size (64 variables, 96 clauses scaled by 3,
  solved to 1e-6: iterations to tolerance, ``ms`` per forward, ``ms_per_iter`` and the largest
  difference of the two methods' outputs), and SATNet's 9x9 Sudoku layer (729 variables, 600
  clauses, 300 hidden; random clauses, 20 iterations: the cost of an iteration).
  ``max_abs_diff``: the largest difference of a row's outputs from the Python sweeps'.

The ``satnet`` package (PyPI 0.1.4), the paper's C++/CUDA kernels, would be the natural speed
reference for the second table; its source distribution does not build (it lacks its
``satnet.h`` header), so it is not measured here. The compiled rows run the zoo's own kernel of
the same algorithm (built on first use; the build is not timed).

Run: python bench/optlayers.py [--quick] [--only qp|sat]
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from _cells import report
from _harness import parser, setup

QP_COLS = ["n", "batch", "zoo_ms", "zoo_iters", "cvxpylayers_ms", "speedup", "max_abs_diff",
           "moreau_ms", "speedup_moreau", "moreau_max_abs_diff"]  # fmt: skip
SAT_COLS = ["problem", "n", "m", "aux", "k", "method", "tol", "iters", "converged", "ms",
            "ms_per_iter", "max_abs_diff"]  # fmt: skip


def _qps(B: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    m, k = n, max(n // 4, 1)
    P = torch.randn(n, n, generator=g, dtype=d)
    Q = P.T @ P + 0.5 * torch.eye(n, dtype=d)
    p = torch.randn(B, n, generator=g, dtype=d)
    G = torch.randn(m, n, generator=g, dtype=d)
    z0 = torch.randn(n, generator=g, dtype=d)
    h = G @ z0 + torch.rand(m, generator=g, dtype=d)
    A = torch.randn(k, n, generator=g, dtype=d)
    return Q, p, G, h, A, A @ z0


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def qp_rows(sizes, B: int, repeats: int) -> list[dict]:
    return [_qp_row(n, B, repeats) for n in sizes]


def _qp_row(n: int, B: int, repeats: int) -> dict:
    from zoo.nn import qp_solve

    Q, p, G, h, A, b = _qps(B, n)
    z, stats = qp_solve(Q, p, G, h, A, b)
    row = {"n": n, "batch": B, "zoo_ms": round(_time(lambda: qp_solve(Q, p, G, h, A, b),
                                                   repeats), 1), "zoo_iters": stats.n_iter}  # fmt: skip
    try:
        import cvxpy as cp
        from cvxpylayers.torch import CvxpyLayer
    except ImportError:  # a dev-only dependency
        return row
    x = cp.Variable(n)
    q = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q.numpy()) + q @ x),
                      [G.numpy() @ x <= h.numpy(), A.numpy() @ x == b.numpy()])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = CvxpyLayer(prob, parameters=[q], variables=[x])
        args = {"solve_method": "Clarabel", "n_jobs_forward": 1}
        ms = _time(lambda: layer(p, solver_args=args), repeats)
        (zc,) = layer(p, solver_args=args)
    row.update(cvxpylayers_ms=round(ms, 1), speedup=round(ms / row["zoo_ms"], 1),
               max_abs_diff=float(f"{(zc - z).abs().max():.2g}"))  # fmt: skip
    try:
        import moreau  # noqa: F401
    except ImportError:  # a dev-only dependency
        print(row, flush=True)
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = CvxpyLayer(prob, parameters=[q], variables=[x], solver="MOREAU")
        args = {"solver": "ipm"}
        ms = _time(lambda: layer(p, solver_args=args), repeats)
        (zc,) = layer(p, solver_args=args)
    row.update(moreau_ms=round(ms, 1), speedup_moreau=round(ms / row["zoo_ms"], 1),
               moreau_max_abs_diff=float(f"{(zc - z).abs().max():.2g}"))  # fmt: skip
    print(row, flush=True)
    return row


def sat_rows(cases, B: int, repeats: int) -> list[dict]:
    """Each case: (name, n, m, aux, clause scale, max_iter, tol). A scale above 1 with more
    clauses than variables makes a well-posed problem that both methods solve to tolerance."""
    from zoo.nn import SATLayer

    rows = []
    for name, n, m, aux, scale, max_iter, tol in cases:
        g = torch.Generator().manual_seed(0)
        z = torch.rand(B, n, generator=g)
        known = torch.rand(B, n, generator=g) < 0.4
        out = {}
        for method in ("sequential", "parallel", "satnet"):
            if method == "satnet":  # the same sweeps as the Python loop's, compiled
                sweeps = rows[-2]["iters"]
                layer = SATLayer(n, m, aux, method=method, tol=1e-30, max_iter=sweeps)
                layer(z[:1], known[:1])  # build (or load) the kernel outside the timing
            else:
                layer = SATLayer(n, m, aux, method=method, tol=tol, max_iter=max_iter)
            with torch.no_grad():
                layer.S.mul_(scale)
                ms = _time(lambda layer=layer, z=z, known=known: layer(z, known), repeats)
                out[method] = layer(z, known)
            st = layer.stats
            rows.append({"problem": name, "n": n, "m": m, "aux": aux, "k": layer.k,
                         "method": method, "tol": None if method == "satnet" else tol,
                         "iters": st.n_iter,
                         "converged": st.converged, "ms": round(ms, 1),
                         "ms_per_iter": round(ms / st.n_iter, 2)})  # fmt: skip
        for row, method in zip(rows[-2:], ("parallel", "satnet"), strict=True):
            diff = (out["sequential"] - out[method]).abs().max()
            row["max_abs_diff"] = float(f"{diff:.2g}")
        print(rows[-3:], flush=True)
    return rows


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "optlayers_qp.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["qp", "sat"], help="measure one table (default: both)")
    a = setup(p.parse_args(argv))
    warnings.simplefilter("ignore")
    sizes, B = ((8,), 16) if a.quick else ((8, 16, 32), 128)
    repeats = 1 if a.quick else a.repeats
    qp = [] if a.only == "sat" else qp_rows(sizes, B, repeats)
    if qp:
        report(qp, QP_COLS, a.out)
    if a.only == "qp":
        return qp
    cases = [("well-posed, 4x4 size", 64, 96, 16, 3.0, 5 if a.quick else 3000, 1e-6)]
    if not a.quick:  # SATNet's 9x9 layer, random clauses: the cost of 20 iterations
        cases.append(("SATNet 9x9 layer (random clauses)", 729, 600, 300, 1.0, 20, 1e-9))
    sat = sat_rows(cases, 2 if a.quick else 8, repeats)
    report(sat, SAT_COLS, a.out.replace("optlayers_qp", "optlayers_sat"))
    return qp + sat


if __name__ == "__main__":
    main()
