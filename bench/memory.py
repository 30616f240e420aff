"""Benchmark 3: peak training memory of one DEQ step against backprop through the same
number of unrolled iterations, at 10, 30 and 60 iterations (MDEQ-like cell, batch 64, 32x32).

Every configuration runs in a fresh subprocess; the figure is the growth of the process's
peak anonymous resident memory (RSS minus file-backed pages, polled every millisecond) over
its value after building the model and batch, in MiB; on a GPU, ``torch.cuda.max_memory_allocated``.
glibc keeps freed memory, so this is what a user sees. Each configuration is measured twice:
with the default allocator settings and with ``MALLOC_MMAP_THRESHOLD_=131072``, which makes glibc
return large blocks to the system at once.

Run: python bench/memory.py [--quick]
"""

from __future__ import annotations

import json
from pathlib import Path

from _cells import markdown_table, print_table
from _harness import parser, run_child, setup


def child(mode: str, iters: int, batch: int, device: str) -> dict:
    """One configuration, run in a fresh interpreter by ``run_child``."""
    import torch
    from _cells import mdeq_problem

    from zoo.nn import DEQ
    from zoo.solvers import Anderson, ImplicitGrad, PhantomGrad, UnrolledGrad

    cell, _, _, x, packer = mdeq_problem(batch=batch)
    cell = cell.train().to(device)
    x = [t.to(device) if t is not None else None for t in x]
    z0 = [
        torch.zeros_like(t)
        for t in packer.unflat(torch.zeros(batch, sum(packer.sizes), device=device))
    ]
    grad = {
        "implicit": ImplicitGrad(tol=0.0, max_iter=iters),
        "phantom": PhantomGrad(steps=1),
        "unrolled": UnrolledGrad(steps=iters),
    }[mode]
    deq = DEQ(cell, solver=Anderson(m=5, tol=0.0, max_iter=iters), grad=grad)

    def step():
        z = deq(x, z0)
        sum(t.float().pow(2).mean() for t in z).backward()

    from _memprobe import measure

    peak, sec = measure(step, device)
    return {
        "mode": mode,
        "iters": iters,
        "peak_over_base_mib": round(peak, 1),
        "step_s": round(sec, 3),
    }


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "memory.json")
    a = setup(p.parse_args(argv))
    batch = 8 if a.quick else 64
    iters_list = (10, 30) if a.quick else (10, 30, 60)
    rows = []
    for mode in ("implicit", "phantom", "unrolled"):
        for it in iters_list:
            row = {}
            for label, extra in (
                ("default", {}),
                ("mmap_threshold", {"MALLOC_MMAP_THRESHOLD_": "131072"}),
            ):
                res = run_child(child, mode, it, batch, a.device, env=extra)
                row.update(mode=mode, iters=it)
                row[f"peak_mib_{label}"] = res["peak_over_base_mib"]
                row[f"step_s_{label}"] = res["step_s"]
            rows.append(row)
            print(row, flush=True)
    summary = {}
    for label in ("default", "mmap_threshold"):
        by = {(r["mode"], r["iters"]): r[f"peak_mib_{label}"] for r in rows}
        imp = [by[("implicit", i)] for i in iters_list]
        summary[label] = {
            "implicit_over_unrolled_at_30": round(by[("implicit", 30)] / by[("unrolled", 30)], 3),
            "implicit_spread_10_to_max": round((max(imp) - min(imp)) / min(imp), 3),
        }
    print(json.dumps(summary))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps({"rows": rows, "summary": summary, "batch": batch}, indent=2) + "\n"
    )
    print_table(rows, list(rows[0]))
    Path(a.out).with_suffix(".md").write_text(
        f"Batch {batch}; peak MiB over the process baseline and step seconds, with the default "
        "allocator and with MALLOC_MMAP_THRESHOLD_=131072.\n\n"
        + markdown_table(rows, list(rows[0]))
        + f"\n\nSummary: `{json.dumps(summary)}`\n"
    )
    return rows


if __name__ == "__main__":
    main()
