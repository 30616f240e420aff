"""``make bench``: every benchmark, one table each, JSON + markdown under bench/results/, then
``bench/RESULTS.md`` rendered from them (``zoo docs`` renders the same file).

Timings are noisy on shared 2-core machines: compare ratios from one run, and do not run
while training. ``BENCH_QUICK=1`` (or ``--quick``) makes a smoke run with tiny batches.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from _harness import ROOT

# (script, what it measures), in the order of bench/README.md
SCRIPTS = [
    ("solvers", "forward solve against torchdeq 0.1.0: time to tolerance and overhead"),
    ("memory", "peak training memory of a DEQ step against unrolled backprop"),
    ("backward", "backward cost per gradient mode"),
    ("lm", "DEQ-Transformer against the explicit Transformer: memory and step time"),
    ("latent_ode", "Latent ODE on PhysioNet: seconds per training step"),
    ("grad_quality", "each gradient mode against the exact gradient, at trained weights"),
    ("odenet", "ODE-Net training memory: adjoint against direct backprop and the ResNet"),
    ("segmentation", "MDEQ segmentation against the explicit multiscale network"),
    ("ffjord", "continuous normalizing flows: objectives, trace estimators, adjoint"),
    ("compaction", "per-sample batch compaction on the trained MDEQ cells"),
    ("odenet_nfe", "ODE-Net test NFE with and without RNODE regularization"),
    ("solver_variants", "iterations to tolerance by accelerator setting"),
    ("cuda_graphs", "graph-captured forward solves"),
    ("solver_compile", "the solver iteration compiled by torch.compile"),
    ("deq_lm_step", "DEQ-LM training step and warm starts across segments"),
    ("deq_lm_eval", "DEQ-LM evaluation: per-sequence solves against one joint solve"),
    ("import_time", "time to zoo.load in a fresh process"),
    ("reversible", "reversible DEQs against the implicit gradient: memory and step time"),
    ("parallel_sampling", "parallel-in-time sampling of the flow-matching flow: rounds, time"),
    ("optlayers", "the QP layer against cvxpylayers; SATNet's sequential and parallel solves"),
]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = ["--quick"] if ("--quick" in argv or os.environ.get("BENCH_QUICK")) else []
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if quick and not os.environ.get("ZOO_BENCH_RESULTS"):  # a smoke run keeps the stored tables
        import tempfile

        os.environ["ZOO_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="zoo-bench-quick-")
    t0 = time.time()
    skipped = []
    for i, (name, title) in enumerate(SCRIPTS, 1):
        print(f"\n== {i}/{len(SCRIPTS)} {name}: {title} ==", flush=True)
        try:
            importlib.import_module(name).main(quick)
        except FileNotFoundError as e:  # a dataset it needs is not here (ZOO_DATA_DIR)
            skipped.append(name)
            print(f"skipped: {e}")
    from zoo.docs import bench_summary

    (ROOT / "bench" / "RESULTS.md").write_text(bench_summary())
    print(
        f"\nall benchmarks done in {time.time() - t0:.0f} s; tables in bench/results/, "
        "summary in bench/RESULTS.md" + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    )


if __name__ == "__main__":
    main()
