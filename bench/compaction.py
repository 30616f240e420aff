"""Per-sample batch compaction: the solver evaluates the cell only on the
samples that have not reached tol yet. On the shipped MDEQ checkpoints, over their shipped
evaluation samples (real test images), in eval mode: Anderson at the shipped budget (m=5,
12 iterations, tol 1e-3) and at a tighter setting (m=6, 50 iterations, tol 1e-3 and 1e-4).

Columns: ``rows`` = samples the cell saw, summed over the solve's calls (``nfe x B`` for the
full batch), ``rows_vs_full``, seconds with and without compaction (interleaved, best of
``--repeats``), ``time_vs_full``, the largest difference of the logits (float32 batch-size
effects only: the float64 equivalence is tested in tests/test_compaction.py) and top-1 on the
sample, which must not change.

Run: python bench/compaction.py [--quick] [--repeats N]; writes bench/results/compaction.{json,md}.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _cells import report
from _harness import parser, setup

COLS = ["model", "solver", "batch", "nfe", "rows_full", "rows", "rows_vs_full", "s_full", "s"]
COLS += ["time_vs_full", "max_logit_diff", "top1_full", "top1"]
SETTINGS = (
    ("shipped: anderson m=5, 12 it, tol 1e-3", {"m": 5, "max_iter": 12, "tol": 1e-3}),
    ("anderson m=6, 50 it, tol 1e-3", {"m": 6, "max_iter": 50, "tol": 1e-3}),
    ("anderson m=6, 50 it, tol 1e-4", {"m": 6, "max_iter": 50, "tol": 1e-4}),
)


def _data(model, n: int):
    from zoo.tasks import sample_path

    cfg = model.pretrained_cfg
    d = np.load(sample_path(cfg.get("sample") or cfg["dataset"]))
    x = torch.from_numpy(d["x"][:n]).float()
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    return (x / 255 - mean) / std, torch.from_numpy(d["y"][:n]).long()


def main(argv=None) -> list[dict]:
    import zoo
    from zoo.solvers import get_solver

    p = parser(__doc__, "compaction.json")
    p.add_argument("--repeats", type=int, default=2)
    a = setup(p.parse_args(argv))
    names = [n for n in ("mdeq_tiny.fashion_mnist", "mdeq_tiny.cifar10")
             if n in zoo.list_models(pretrained=True)]  # fmt: skip
    batch = 16 if a.quick else 64
    settings = SETTINGS[:2] if a.quick else SETTINGS
    rows = []
    for name in names:
        model = zoo.load(name)
        x, y = _data(model, batch)
        for label, cfg in settings:
            runs = {}
            for _ in range(1 if a.quick else a.repeats):
                for compact in (False, True):  # interleaved
                    model.deq.eval_solver = get_solver(
                        {"name": "anderson", **cfg, "compact": compact, "warn": False}
                    )
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        logits = model(x)
                    sec = time.perf_counter() - t0
                    st = model.deq.stats
                    best = runs.get(compact)
                    if best is None or sec < best[0]:
                        runs[compact] = (sec, st.nfe, st.rows_evaluated, logits)
            (s_f, nfe, r_f, l_f), (s_c, _, r_c, l_c) = runs[False], runs[True]
            rows.append({
                "model": name, "solver": label, "batch": batch, "nfe": nfe, "rows_full": r_f,
                "rows": r_c, "rows_vs_full": round(r_c / r_f, 3), "s_full": round(s_f, 3),
                "s": round(s_c, 3), "time_vs_full": round(s_c / s_f, 3),
                "max_logit_diff": float(f"{(l_f - l_c).abs().max():.2e}"),
                "top1_full": round(float((l_f.argmax(1) == y).float().mean()) * 100, 2),
                "top1": round(float((l_c.argmax(1) == y).float().mean()) * 100, 2),
            })  # fmt: skip
            print(rows[-1], flush=True)
        model.deq.eval_solver = None
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
