"""Does a better-tuned accelerator reach tol in fewer iterations?

On the trained equilibrium cells of the shipped MDEQ checkpoints (batch 64 of their shipped
test images, zeros start, relative tol), every sample's iterations to tol 1e-3 and 1e-4 under
Anderson's history size ``m``, damping ``beta`` and regularization ``lam``, and Broyden. Counts,
not times: the numbers do not depend on the machine's load. ``rows`` is the cell-call cost
under per-sample compaction (the sum of each sample's iterations, a sample that never reaches
tol counted at 50) over the full batch's 64 x 50.

Run: python bench/solver_variants.py [--quick]
"""

from __future__ import annotations

import warnings

import torch
from _cells import PROBLEMS, report
from _harness import parser, setup

from zoo.solvers import Anderson, Broyden

MAX_ITER = 50
VARIANTS = [("anderson", {"m": m, "beta": b}) for m in (3, 6, 10) for b in (1.0, 0.7)]
VARIANTS += [("anderson", {"m": 6, "lam": 1e-2}), ("broyden", {})]
COLS = ["cell", "solver"] + [
    f"{k}_{t}" for t in ("1e-3", "1e-4") for k in ("median_it", "max_it", "reached", "rows")
]


def iterations_to(trace: torch.Tensor, tol: float) -> torch.Tensor:
    """Each sample's first iteration (1-based) at or below ``tol``; ``MAX_ITER + 1`` if never."""
    hit = trace <= tol
    first = hit.float().argmax(0) + 1
    return torch.where(hit.any(0), first, torch.full_like(first, MAX_ITER + 1))


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "solver_variants.json")
    a = setup(p.parse_args(argv))
    rows = []
    for prob in ("mdeq_tiny_trained", "mdeq_cifar10_trained"):
        made = PROBLEMS[prob](batch=8 if a.quick else 64)
        if made is None:
            print(f"({prob}: no shipped checkpoint, skipped)")
            continue
        _, f, z0, _, _ = made
        for kind, kw in VARIANTS:
            solver = (Anderson if kind == "anderson" else Broyden)(
                tol=1e-4, max_iter=MAX_ITER, warn=False, **kw
            )
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, stats = solver(f, z0.clone())
            r = {"cell": prob, "solver": kind + "".join(f" {k}={v:g}" for k, v in kw.items())}
            for tol, tag in ((1e-3, "1e-3"), (1e-4, "1e-4")):
                it = iterations_to(stats.trace, tol)
                ok = it <= MAX_ITER
                r[f"median_it_{tag}"] = float(it.float().median())
                r[f"max_it_{tag}"] = int(it.max()) if ok.all() else f"> {MAX_ITER}"
                r[f"reached_{tag}"] = round(float(ok.float().mean()), 3)
                r[f"rows_{tag}"] = round(
                    float(it.clamp(max=MAX_ITER).sum()) / (MAX_ITER * len(it)), 3
                )
            print(r, flush=True)
            rows.append(r)
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
