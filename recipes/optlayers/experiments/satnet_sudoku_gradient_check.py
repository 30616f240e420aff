"""How far satnet.sudoku's training gradient is from the exact implicit gradient.

Loads a Lightning state of ``experiments/satnet_sudoku.yaml`` (default: the one in ``resume/``),
takes 16 training puzzles, and compares the gradient of the clauses ``S`` computed as in training
(forward stopped at a relative residual of 2e-3; backward by Anderson, optionally damped: it
solves ``(I - J' + d I) v = g``) with a reference: the implicit gradient at a forward solved to
1e-7, whose backward converges. Prints one row per setting: backward residual, gradient norm,
cosine to the reference. The table in recipes/optlayers/HISTORY.md is its output.

Run: OMP_NUM_THREADS=1 python recipes/optlayers/experiments/satnet_sudoku_gradient_check.py [STATE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from zoo.data.puzzles import SudokuDataModule
from zoo.solvers import Anderson
from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _solve(fn, start, tol: float, max_iter: int):
    out = Anderson(m=5, tol=tol, max_iter=max_iter, stop_mode="rel", warn=False)(fn, start)
    return out[0] if isinstance(out, tuple) else out


def main(state: str) -> None:
    cfg = yaml.safe_load((HERE / "satnet_sudoku.yaml").read_text())
    dm = SudokuDataModule(**{**cfg["data"]["init_args"], "batch_size": 16})
    dm.setup("fit")
    inputs, given, target = next(iter(dm.train_dataloader()))
    task = ConstraintSatisfaction(**cfg["model"]["init_args"])
    ckpt = torch.load(state, weights_only=True, map_location="cpu")
    task.load_state_dict(ckpt["state_dict"])
    layer = task.model.sat
    find = ~given.bool()
    T, V0, read, *_ = layer._map(inputs.float(), given.bool())

    def gradient(V, damping: float, backward_iter: int):
        z = V.detach().requires_grad_()
        f = T(z)
        p = read(f).clamp(1e-6, 1 - 1e-6)
        loss = (F.binary_cross_entropy(p, target, reduction="none") * find).sum() / find.sum()
        (g,) = torch.autograd.grad(loss, f, retain_graph=True)
        if backward_iter == 0:  # one step at the iterate
            v, res = g, float("nan")
        else:

            def step(v):
                (vj,) = torch.autograd.grad(f, z, v, retain_graph=True)
                return (vj + g) / (1 + damping)

            with torch.no_grad():
                v = _solve(step, g.clone(), 1e-10, backward_iter)
                res = float((step(v) - v).norm() / step(v).norm())
        (dS,) = torch.autograd.grad(f, layer.S, v, retain_graph=True)
        return dS, res

    def cos(a, b):
        return float((a * b).sum() / a.norm() / b.norm())

    with torch.no_grad():
        exact_V = _solve(T, V0, 1e-7, 3000)
        V = _solve(T, V0, 2e-3, 100)
    ref, res = gradient(exact_V, 0.0, 1000)
    print(f"reference (forward 1e-7, backward 1000): residual {res:.1e}, |dS| {ref.norm():.3f}")
    for damping, it in (
        (0, 40),
        (0, 200),
        (1e-3, 200),
        (1e-2, 200),
        (3e-2, 200),
        (1e-1, 200),
        (0, 0),
    ):
        d, res = gradient(V, damping, it)
        name = "one step (phantom)" if it == 0 else f"backward {it}, damping {damping:g}"
        print(
            f"forward 2e-3, {name}: residual {res:.1e}, |dS| {d.norm():.3f}, cos {cos(d, ref):.4f}"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "resume" / "satnet_sudoku_last.ckpt"))
