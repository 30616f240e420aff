"""Graph-captured forward solves on the shipped MDEQ checkpoints.

Three ways to run the same model forward, in eval mode, on the shipped evaluation sample:
- ``eager``: the shipped solver (Anderson m=5, 12 iterations, tol 1e-3), early exit;
- ``fixed budget``: the same solver with ``cuda_graph=True``, run eagerly: all 12 iterations,
  no host synchronization (on a CPU, this is what the flag does);
- ``graph replay``: the same solve captured as a CUDA graph and replayed (CUDA only).

Columns: seconds per batch (best of ``--repeats``, interleaved), ``vs_eager``, the first call's
seconds (``first_s``: the capture, for the replay row), the NFE, the largest logit difference to
the eager row (the fixed point is the early-exit solve's; float32 only) and top-1 on the sample.
Without a CUDA device the replay row says so: its speed is unmeasured.

Run: python bench/cuda_graphs.py [--quick] [--repeats N] [--device cuda]; writes
bench/results/cuda_graphs.{json,md}.
"""

from __future__ import annotations

import time

import torch
from _cells import report
from _harness import parser, setup
from compaction import _data  # noqa: E402

COLS = ["model", "device", "batch", "mode", "nfe", "s", "vs_eager", "first_s"]
COLS += ["max_logit_diff", "top1"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _modes(device: str):
    yield "eager", False, None
    yield "fixed budget (cuda_graph=True, eager)", True, "eager"
    if device.startswith("cuda"):
        yield "graph replay", True, "cuda"


def main(argv=None) -> list[dict]:
    import zoo
    from zoo.nn._graphs import CudaGraphReplay, EagerReplay, GraphedSolve

    p = parser(__doc__, "cuda_graphs.json", device="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    a = setup(p.parse_args(argv))
    names = [n for n in ("mdeq_tiny.fashion_mnist", "mdeq_tiny.cifar10")
             if n in zoo.list_models(pretrained=True)]  # fmt: skip
    batches = [16] if a.quick else ([64, 256] if a.device.startswith("cuda") else [64])
    rows = []
    for name in names:
        model = zoo.load(name).to(a.device)
        shipped = model.deq.solver.replace(warn=False)
        for batch in batches:
            x, y = _data(model, batch)
            x = x.to(a.device)
            best, first = {}, {}
            for rep in range(1 if a.quick else a.repeats):
                for label, graph, replay in _modes(a.device):  # interleaved
                    model.deq.eval_solver = shipped.replace(cuda_graph=graph)
                    if rep == 0:  # a fresh capture per row, timed as the first call
                        cls = {"cuda": CudaGraphReplay, "eager": None}.get(replay, EagerReplay)
                        model.deq.graphs = GraphedSolve(cls)
                    _sync(a.device)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        logits = model(x)
                    _sync(a.device)
                    sec = time.perf_counter() - t0
                    first.setdefault(label, sec)
                    if label not in best or sec < best[label][0]:
                        best[label] = (sec, model.deq.stats.nfe, logits.float().cpu())
            base = best["eager"]
            for label, _, _ in _modes(a.device):
                sec, nfe, logits = best[label]
                rows.append({
                    "model": name, "device": a.device, "batch": batch, "mode": label, "nfe": nfe,
                    "s": round(sec, 4), "vs_eager": round(sec / base[0], 3),
                    "first_s": round(first[label], 3),
                    "max_logit_diff": float(f"{(logits - base[2]).abs().max():.2e}"),
                    "top1": round(float((logits.argmax(1) == y).float().mean()) * 100, 2),
                })  # fmt: skip
                print(rows[-1], flush=True)
            if not a.device.startswith("cuda"):
                rows.append({"model": name, "device": a.device, "batch": batch,
                             "mode": "graph replay: unmeasured (no CUDA device)"})  # fmt: skip
        model.deq.eval_solver = None
    report(rows, COLS, a.out)
    return rows


if __name__ == "__main__":
    main()
