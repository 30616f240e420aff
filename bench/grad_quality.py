"""Benchmark 7: how close each gradient mode gets to the exact gradient, at trained weights.

For each shipped MDEQ checkpoint, one batch of its shipped evaluation sample (or, with
``--images train``, the first images of its training split), cross-entropy loss, the model in training mode with dropout off. The reference is the exact implicit gradient
at the tightest equilibrium a budget buys (Anderson, 40 iterations, relative tol 1e-6; backward
solve 60 iterations, tol 1e-6); the residuals it reached are printed (trained MDEQ cells stall
near 1e-3, so the reference is exact up to that). Every other mode is
run at a training-sized forward budget and compared with it over all parameters, and over the
equilibrium cell's parameters alone (the ones the gradient mode changes; the stem and head
gradients differ only through ``z*``):

* ``cos``: cosine similarity with the reference gradient (1 = same direction);
* ``norm ratio``: ``|g| / |g_ref|``;
* ``s/step``: median seconds of forward + backward (the cost of one training step, fp32).

Run: python bench/grad_quality.py [--quick] [--models mdeq_tiny.cifar10 ...] [--images train]
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from _cells import report
from _harness import parser, setup

import zoo
from zoo.data import build_datamodule
from zoo.nn._dropout import VariationalDropout
from zoo.solvers import Anderson, ImplicitGrad, PhantomGrad, UnrolledGrad
from zoo.tasks import sample_path

COLS = [
    "model",
    "images",
    "mode",
    "forward it",
    "cos (all)",
    "cos (cell)",
    "norm ratio",
    "loss",
    "s/step",
]
MODELS = ("mdeq_tiny.cifar10", "mdeq_tiny.fashion_mnist")

# (label, forward max_iter, gradient mode)
MODES = [
    ("phantom k=1 (JFB)", 8, lambda: PhantomGrad(steps=1)),
    ("phantom k=1 (JFB)", 12, lambda: PhantomGrad(steps=1)),
    ("phantom k=5, tau=0.5", 8, lambda: PhantomGrad(steps=5, tau=0.5)),
    ("implicit, 8 it", 8, lambda: ImplicitGrad(tol=1e-6, max_iter=8)),
    ("implicit, 12 it", 12, lambda: ImplicitGrad(tol=1e-6, max_iter=12)),
    ("unrolled (Picard)", 8, lambda: UnrolledGrad(steps=8)),
]


def _grads(model, x, y, fwd_iter: int, grad) -> dict:
    deq = model.deq
    deq.solver = Anderson(m=5, tol=1e-6, max_iter=fwd_iter, warn=False)
    deq.grad = grad
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    seconds = time.perf_counter() - t0
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    g_all = torch.cat([g.flatten() for _, g in named])
    g_cell = torch.cat([g.flatten() for n, g in named if ".cell." in n])
    return {
        "all": g_all,
        "cell": g_cell,
        "loss": loss.item(),
        "seconds": seconds,
        "fwd_residual": deq.stats.rel_residual.max().item(),
        "bwd": getattr(grad, "last_stats", None),
    }


def run(name: str, batch: int, repeats: int, images: str = "sample") -> list[dict]:
    if name not in zoo.list_models(pretrained=True):
        print(f"({name}: no shipped checkpoint, skipped)")
        return []
    model = zoo.load(name).train()
    for m in model.modules():
        if isinstance(m, VariationalDropout):
            m.p = 0.0
    cfg = model.pretrained_cfg
    if images == "train":
        dm = build_datamodule(cfg["datamodule"], cfg.get("datamodule_args"))
        x, y = dm.eval_split("train")  # the recipes' training split (ZOO_DATA_DIR)
        x, y = x[:batch], y[:batch].long()
    else:
        with np.load(sample_path(cfg["dataset"])) as d:
            x, y = torch.from_numpy(d["x"][:batch]), torch.from_numpy(d["y"][:batch]).long()
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    x = (x.float() / 255 - mean) / std

    ref = _grads(model, x, y, 40, ImplicitGrad(tol=1e-6, max_iter=60))
    bwd = ref["bwd"]
    print(
        f"{name}: reference forward rel. residual {ref['fwd_residual']:.1e}, backward "
        f"{bwd.rel_residual.max().item():.1e} after {bwd.n_iter} iterations"
    )
    rows = [
        {
            "model": name,
            "images": images,
            "mode": f"reference (residual fwd {ref['fwd_residual']:.1e}, "
            f"bwd {bwd.rel_residual.max().item():.1e})",
            "forward it": 40,
            "cos (all)": 1.0,
            "cos (cell)": 1.0,
            "norm ratio": 1.0,
            "loss": ref["loss"],
            "s/step": ref["seconds"],
        }
    ]
    for label, fwd_iter, make in MODES:
        times = []
        for _ in range(repeats):
            out = _grads(model, x, y, fwd_iter, make())
            times.append(out["seconds"])
        rows.append(
            {
                "model": name,
                "images": images,
                "mode": label,
                "forward it": fwd_iter,
                "cos (all)": F.cosine_similarity(out["all"], ref["all"], 0).item(),
                "cos (cell)": F.cosine_similarity(out["cell"], ref["cell"], 0).item(),
                "norm ratio": (out["all"].norm() / ref["all"].norm()).item(),
                "loss": out["loss"],
                "s/step": statistics.median(times),
            }
        )
    return rows


def main(argv=None) -> list[dict]:
    p = parser(__doc__, "grad_quality.json")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--images",
        choices=("sample", "train"),
        default="sample",
        help="the shipped evaluation sample (offline), or the first images of the training "
        "split (needs ZOO_DATA_DIR; written to grad_quality_train.json unless --out is given)",
    )
    a = setup(p.parse_args(argv))
    out = a.out
    if a.images == "train" and a.out == p.get_default("out"):
        out = out.replace("grad_quality.json", "grad_quality_train.json")
    batch, repeats = (8, 1) if a.quick else (a.batch, a.repeats)
    torch.manual_seed(0)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # budget-limited solves warn by design
        for name in a.models:
            rows += run(name, batch, repeats, a.images)
    report(rows, COLS, out)
    return rows


if __name__ == "__main__":
    main()
