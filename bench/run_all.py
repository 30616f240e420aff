"""``make bench``: every benchmark, one table each, JSON + markdown under bench/results/.

Timings are noisy on shared 2-core machines: compare ratios from one run, and do not run
while training. Set ``BENCH_QUICK=1`` for a smoke run with tiny batches.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import backward  # noqa: E402
import compaction  # noqa: E402
import cuda_graphs  # noqa: E402
import deq_lm_step  # noqa: E402
import ffjord  # noqa: E402
import grad_quality  # noqa: E402
import import_time  # noqa: E402
import latent_ode  # noqa: E402
import lm  # noqa: E402
import memory  # noqa: E402
import odenet  # noqa: E402
import odenet_nfe  # noqa: E402
import segmentation  # noqa: E402
import solver_compile  # noqa: E402
import solver_variants  # noqa: E402
import solvers  # noqa: E402


def main() -> None:
    quick = ["--quick"] if os.environ.get("BENCH_QUICK") else []
    os.chdir(Path(__file__).resolve().parents[1])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    t0 = time.time()
    print("== 1-2. forward solve: implicit-zoo vs torchdeq 0.1.0, overhead ==")
    solvers.main(quick)
    print("\n== 3. peak training memory: DEQ vs unrolled ==")
    memory.main(quick)
    print("\n== 4. backward cost per gradient mode ==")
    backward.main(quick)
    print("\n== 5. DEQ-Transformer vs explicit Transformer: training memory and step time ==")
    lm.main(quick)
    lm.generation(bool(quick))
    print("\n== 6. Latent ODE on PhysioNet: seconds per training step ==")
    latent_ode.main(quick)
    print("\n== 7. gradient quality at trained weights: each mode against the exact gradient ==")
    grad_quality.main(quick)
    print("\n== 8. ODE-Net training memory: adjoint vs direct backprop vs ResNet, by depth ==")
    odenet.main(quick)
    print("\n== 9. MDEQ segmentation vs the explicit multiscale network: memory and step time ==")
    segmentation.main(quick)
    print(
        "\n== 10. continuous normalizing flows: FFJORD vs RNODE vs flow matching, trace, adjoint =="
    )
    ffjord.main(quick)
    print("\n== 11. per-sample batch compaction on the trained MDEQ cells ==")
    compaction.main(quick)
    print("\n== 12. ODE-Net test NFE with and without RNODE regularization (CIFAR-10) ==")
    try:
        odenet_nfe.main(quick)
    except FileNotFoundError as e:  # the CIFAR-10 copy is needed (ZOO_DATA_DIR)
        print(f"skipped: {e}")
    print("\n== 13. iterations to tol under Anderson's m, damping, regularization; Broyden ==")
    solver_variants.main(quick)
    print("\n== 14. graph-captured forward solves (CUDA graphs; fixed budget on a CPU) ==")
    cuda_graphs.main(quick)
    print("\n== 15. the solver iteration compiled by torch.compile: bookkeeping cost ==")
    solver_compile.main(quick)
    print("\n== 16. DEQ-LM training step (lever 5) and warm starts across segments ==")
    deq_lm_step.main(quick)
    print("\n== 17. time to zoo.load in a fresh process, beside torch's own import ==")
    import_time.main(quick)
    write_summary(time.time() - t0, quick=bool(quick))
    print(f"\nall benchmarks done in {time.time() - t0:.0f} s; results in bench/results/")


def _machine() -> str:
    import platform

    import torch

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.machine()}, torch {torch.__version__}"


def write_summary(seconds: float, quick: bool) -> None:
    """bench/results/RESULTS.md: the three tables with the machine and the command."""
    import json

    from _cells import markdown_table

    res = Path("bench/results")
    solv = json.loads((res / "solvers.json").read_text())
    mem = json.loads((res / "memory.json").read_text())
    back = json.loads((res / "backward.json").read_text())
    lines = [
        "# Benchmark results",
        "",
        f"Command: `make bench`{' (BENCH_QUICK=1: tiny batches)' if quick else ''}, "
        f"{time.strftime('%Y-%m-%d')}, on {_machine()}; {seconds:.0f} s in all.",
        "Shared, noisy machines: compare the ratios within one run, not absolute times.",
        "",
        "## 1-2. Forward solve against torchdeq 0.1.0 (same cell, start, relative tol, max_iter 50)",
        "`overhead` = seconds / seconds inside the cell during the solve; `overhead_isolated` = "
        "seconds / (NFE x one cell call timed alone); `time_vs_torchdeq` = our seconds / theirs.",
        "",
        markdown_table(solv, solvers.COLS),
        "",
        f"## 3. Peak training memory of one step, MiB over the process baseline (batch {mem['batch']})",
        "",
        markdown_table(
            mem["rows"],
            [
                "mode",
                "iters",
                "peak_mib_default",
                "peak_mib_mmap_threshold",
                "step_s_default",
                "step_s_mmap_threshold",
            ],
        ),
        "",
        "Summary: `" + json.dumps(mem["summary"]) + "`",
        "",
        "## 4. Backward cost per gradient mode (forward excluded)",
        "",
        markdown_table(back, ["cell", "grad mode", "backward_s"]),
        "",
    ]
    if (res / "lm.json").is_file():
        lmrows = json.loads((res / "lm.json").read_text())
        lines += [
            "## 5. DEQ-Transformer vs explicit Transformer (one training step, batch 16)",
            "Depth = explicit blocks = DEQ forward solver iterations; `deq` trains with "
            "ImplicitGrad, `deq_phantom` with the shipped recipe's phantom gradients + Jacobian "
            "term. ![plot](lm.png)",
            "",
            markdown_table(lmrows, lm.COLS),
            "",
        ]
    if (res / "latent_ode.json").is_file():
        lines += [
            "## 6. Latent ODE on PhysioNet 2012: seconds per training step, batch 50",
            "The reference code: about 11 s (0.1 h grid) and 126 s (1 minute) per batch here.",
            "",
            markdown_table(json.loads((res / "latent_ode.json").read_text()), latent_ode.COLS),
            "",
        ]
    if (res / "grad_quality.json").is_file():
        lines += [
            "## 7. Gradient quality at trained weights (MDEQ checkpoints, fp32, dropout off)",
            "Each mode against the exact implicit gradient at a tight equilibrium: cosine over all "
            "parameters and over the equilibrium cell's, and the norm ratio.",
            "",
            markdown_table(json.loads((res / "grad_quality.json").read_text()), grad_quality.COLS),
            "",
        ]
    for n, title, stem in (
        (8, "ODE-Net training memory by depth (bench/odenet.py)", "odenet"),
        (9, "MDEQ segmentation vs the explicit multiscale network (bench/segmentation.py)",
         "segmentation"),
        (10, "FFJORD vs RNODE vs flow matching: one training iteration (bench/ffjord.py)",
         "ffjord_training"),
        (10, "Exact trace vs Hutchinson by dimension (bench/ffjord.py)", "ffjord_trace"),
        (10, "Adjoint vs direct backprop through a CNF solve (bench/ffjord.py)", "ffjord_adjoint"),
        (11, "Per-sample batch compaction on the trained MDEQ cells (bench/compaction.py)",
         "compaction"),
        (5, "Text generation: incremental decoding against re-encoding the window "
         "(bench/lm.py)", "lm_generate"),
        (12, "ODE-Net test NFE with and without RNODE regularization (bench/odenet_nfe.py)",
         "odenet_nfe"),
        (13, "Iterations to tol by accelerator setting, trained MDEQ cells "
         "(bench/solver_variants.py)", "solver_variants"),
    ):  # fmt: skip
        md = res / f"{stem}.md"
        if md.is_file():
            lines += [f"## {n}. {title}", "", md.read_text().strip(), ""]
    (res / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
