"""``make demo``: the solver backbone on a small DEQ, then every shipped checkpoint evaluated.

Without ``ZOO_DATA_DIR`` the checkpoints are evaluated on the small samples shipped in
``samples/``; with it, on the full test sets.
"""

from __future__ import annotations

import os
import time
import warnings

import torch

__all__ = ["backbone_demo", "main"]


def backbone_demo() -> None:
    """Solve and differentiate one DEQ with every solver x gradient mode; print a table."""
    from zoo.nn import DEQ
    from zoo.solvers import Anderson, Broyden, ImplicitGrad, PhantomGrad, Picard, UnrolledGrad

    torch.manual_seed(0)
    d = 64
    lin = torch.nn.Linear(d, d)
    with torch.no_grad():
        lin.weight.mul_(0.9 / torch.linalg.matrix_norm(lin.weight, 2))

    def cell(z, x):
        return torch.tanh(lin(z) + x)

    x = torch.randn(32, d)
    DEQ(cell)(
        x.requires_grad_()
    ).sum().backward()  # warm-up: first-call costs stay out of the table
    x = x.detach()
    print("DEQ z* = tanh(W z* + b + x), batch 32, dim 64, rel tol 1e-6")
    print(
        f"{'solver':10s} {'grad':10s} {'NFE':>4s} {'residual':>10s} {'fwd ms':>8s} {'bwd ms':>8s} {'|dL/dx|':>9s}"
    )
    for solver in (Picard(tol=1e-6, max_iter=200), Anderson(m=5, tol=1e-6), Broyden(tol=1e-6)):
        for grad in (
            ImplicitGrad(tol=1e-6, max_iter=100),
            PhantomGrad(steps=5),
            UnrolledGrad(steps=60),
        ):
            deq = DEQ(cell, solver=solver, grad=grad)
            xr = x.clone().requires_grad_()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z = deq(xr)
            t1 = time.perf_counter()
            z.pow(2).sum().backward()
            t2 = time.perf_counter()
            st = deq.stats
            print(
                f"{solver.name:10s} {grad.name:10s} {st.nfe:4d} {float(st.residual.max()):10.2e} "
                f"{1e3 * (t1 - t0):8.1f} {1e3 * (t2 - t1):8.1f} {float(xr.grad.norm()):9.4f}"
            )


def main() -> None:
    import zoo
    from zoo.evaluate import leaderboard

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"implicit-zoo {zoo.__version__}, torch {torch.__version__}\n")
    backbone_demo()
    names = zoo.list_models(pretrained=True)
    print(f"\nshipped checkpoints: {', '.join(names) or 'none yet'}")
    if not names:
        return
    full = bool(os.environ.get("ZOO_DATA_DIR"))
    print(
        "evaluating on",
        "the full test sets ($ZOO_DATA_DIR)" if full else "the shipped samples (samples/)",
    )
    for n in names:
        t0 = time.perf_counter()
        zoo.load(n)
        print(f"  zoo.load({n!r}) -> {time.perf_counter() - t0:.2f} s")
    leaderboard(sample=not full, out="leaderboard.md")
    for name, n in (("optnet.sudoku4", 4), ("satnet.sudoku", 9)):
        if name in names:
            puzzle_demo(name, n)


def board(cells, n: int) -> str:
    """A Sudoku grid as text, ``.`` for a blank (``cells``: ``n * n`` digits, 0 for blank)."""
    rows = [" ".join(str(int(v)) if v else "." for v in cells[r * n : r * n + n]) for r in range(n)]
    return "\n".join(rows)


def puzzle_demo(name: str = "optnet.sudoku4", n: int = 4) -> None:
    """A shipped ``n`` x ``n`` test puzzle and the answer of ``name`` (learned from examples
    alone), side by side."""
    import zoo

    model = zoo.load(name)
    inputs, given, target = zoo.example_batch(model, 1)
    cells = given.view(n * n, n)[:, 0]
    puzzle = (model.decode(inputs)[0] + 1) * cells
    answer = model.decode(model(inputs, given))[0] + 1
    right = bool((answer == model.decode(target)[0] + 1).all())
    print(f"\na {n}x{n} test puzzle (shipped sample) and {name}'s answer:")
    for a, b in zip(board(puzzle.tolist(), n).split("\n"), board(answer.tolist(), n).split("\n")):
        print(f"  {a}    {b}")
    print(f"  {'solved' if right else 'not solved'}; its solve: {model.cost()}")


if __name__ == "__main__":
    main()
