"""Does ``torch.compile`` lower the solver's overhead?

One steady-state Anderson iteration without the cell (m=6, the history full): the tracker's
residual norms and best-iterate update, the history write, the new Gram row, the bordered
least-squares solve and the mixing, on the state size of the shipped ``mdeq_tiny`` cells
(batch 64). Timed eagerly as the solver runs it, and as one function compiled by
``torch.compile`` (inductor; its compile time reported apart). The cell call it sits beside
is timed too, so ``bookkeeping_vs_cell`` is the overhead each variant adds to a solve.

Run: python bench/solver_compile.py [--quick] [--repeats N]; writes
bench/results/solver_compile.{json,md}.
"""

from __future__ import annotations

import math
import time

import torch
from _cells import report, trained_mdeq_problem
from _harness import parser, setup

COLS = ["variant", "batch", "dim", "us_per_iteration", "cell_ms", "bookkeeping_vs_cell"]
COLS += ["compile_s", "max_abs_diff"]


def _iteration(z, gz, F, G, gram, best_res, best_abs, best_rel, active, best_z, slot: int,
               lam: float, tol: float):  # fmt: skip
    """One Anderson iteration's algebra, history full (n = m), as ``zoo.solvers`` does it."""
    diff = gz - z
    G[:, slot] = diff
    abs_res = torch.linalg.vector_norm(diff, dim=1)
    g_norm = torch.linalg.vector_norm(gz, dim=1)
    rel_res = abs_res / (g_norm + 1e-9)
    ok = torch.isfinite(rel_res) & torch.isfinite(abs_res) & torch.isfinite(g_norm)
    res = torch.where(ok, rel_res, torch.full_like(rel_res, math.inf))
    better = (res < best_res) & active
    best_z = torch.where(better[:, None], gz, best_z)
    best_res = torch.where(better, res, best_res)
    best_abs = torch.where(better, abs_res, best_abs)
    best_rel = torch.where(better, rel_res, best_rel)
    active = active & (best_res > tol)
    F[:, slot] = gz
    row = torch.bmm(G, G[:, slot].unsqueeze(2)).squeeze(2)
    gram[:, slot, :] = row
    gram[:, :, slot] = row
    n = gram.shape[1]
    scale = gram.diagonal(dim1=1, dim2=2).amin(dim=1).clamp_min(1e-30)
    h = gram / scale[:, None, None] + lam * torch.eye(n, dtype=gram.dtype)
    sys_ = torch.zeros(gram.shape[0], n + 1, n + 1, dtype=gram.dtype)
    sys_[:, 0, 1:] = 1.0
    sys_[:, 1:, 0] = 1.0
    sys_[:, 1:, 1:] = h
    rhs = torch.zeros(gram.shape[0], n + 1, dtype=gram.dtype)
    rhs[:, 0] = 1.0
    sol, info = torch.linalg.solve_ex(sys_, rhs)
    alpha = sol[:, 1:]
    okw = (info == 0) & torch.isfinite(alpha).all(dim=1)
    alpha = torch.where(okw[:, None], alpha, torch.zeros_like(alpha))
    znew = torch.bmm(alpha.unsqueeze(1), F).squeeze(1)
    return torch.where(okw[:, None], znew, gz), best_z, best_res, best_abs, best_rel, active


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "solver_compile.json")
    p.add_argument("--repeats", type=int, default=5)
    a = setup(p.parse_args(argv))
    batch, m = (16 if a.quick else 64), 6
    prob = trained_mdeq_problem(batch)
    if prob is None:
        print("skipped: mdeq_tiny.fashion_mnist is not shipped here")
        return []
    f, z0 = prob[1], prob[2]
    with torch.no_grad():
        z = f(z0)
        gz = f(z)
        t0 = time.perf_counter()
        for _ in range(3):
            f(z)
        cell_s = (time.perf_counter() - t0) / 3
    dim = z.shape[1]

    def state():
        gen = torch.Generator().manual_seed(0)
        F = torch.randn(batch, m, dim, generator=gen)
        G = 1e-2 * torch.randn(batch, m, dim, generator=gen)
        gram = torch.bmm(G, G.transpose(1, 2))
        inf = torch.full((batch,), math.inf)
        return F, G, gram, inf, inf.clone(), inf.clone(), torch.ones(batch, dtype=torch.bool)

    compiled = torch.compile(_iteration, dynamic=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        for k in range(m):  # every history slot is a constant: one graph each
            got = compiled(z, gz, *state(), z.clone(), k, 1e-4, 1e-3)
        compile_s = time.perf_counter() - t0
        want = _iteration(z, gz, *state(), z.clone(), m - 1, 1e-4, 1e-3)
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(got, want))
    rows, reps, inner = [], (1 if a.quick else a.repeats), (5 if a.quick else 30)
    best = {}
    for _ in range(reps):
        for label, fn in (
            ("eager (as the solver runs it)", _iteration),
            ("torch.compile", compiled),
        ):
            st = state()
            bz = z.clone()
            with torch.no_grad():
                t0 = time.perf_counter()
                for k in range(inner):
                    fn(z, gz, *st, bz, k % m, 1e-4, 1e-3)
                sec = (time.perf_counter() - t0) / inner
            best[label] = min(best.get(label, math.inf), sec)
    for label, sec in best.items():
        rows.append({
            "variant": label, "batch": batch, "dim": dim, "us_per_iteration": round(sec * 1e6, 1),
            "cell_ms": round(cell_s * 1e3, 2), "bookkeeping_vs_cell": round(sec / cell_s, 4),
            "compile_s": round(compile_s, 1) if label == "torch.compile" else None,
            "max_abs_diff": diff if label == "torch.compile" else None,
        })  # fmt: skip
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
