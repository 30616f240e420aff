"""How a SATNet checkpoint's answers and gradients depend on the solve: for trained clauses, on
validation puzzles.

Four tables:

- ``grads``: the loss of the layer's answers, the bits right, the sweeps or iterations used and
  the clauses' gradient under each solve and backward, with the gradient's cosine and norm
  ratio to a reference one: the compiled sweeps run far past settling (``tol`` 1e-9, 400
  sweeps) with the backward undamped, which is the implicit gradient at that solution.
- ``budget``: validation cells and puzzles solved at growing test-time budgets of the
  checkpoint's own method.
- ``singles``: how hard the puzzles are, by what simple propagation solves (cells with one
  candidate left, "naked singles"; then also digits with one place left in a unit, "hidden
  singles"), and which of the validation puzzles the checkpoint solves at its own budget.
- ``generators``: the same counts, with the rounds of naked singles a puzzle needs, on the
  validation puzzles of each generator (``SudokuDataModule(generator=...)``: the SATNet paper's
  and the zoo's default), and the checkpoint's score on each at its own budget.

    python recipes/optlayers/satnet_solve_check.py runs/satnet_sudoku_stage10/checkpoints/last.ckpt

Reads a Lightning checkpoint of ``zoo fit`` (weights only, ``weights_only=True``) with its
recipe's model arguments and data. ``--puzzles N`` scores the first N validation puzzles
(default 40 for ``grads``, 120 for ``budget``); ``singles`` counts up to N (default 1,000) of
each split's puzzles and scores the checkpoint on every validation puzzle; ``generators`` reads
every validation puzzle unless N is given.
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import torch
import torch.nn.functional as F

# (label, model arguments over the checkpoint's): the training's own first
SOLVES = {
    "grads": [
        ("as trained", {}),
        ("as trained, damping 0", {"damping": 0.0}),
        ("sweeps settled, damping 1e-2", {"tol": 1e-9, "max_iter": 400, "damping": 1e-2}),
        ("sweeps settled, damping 0 (reference)", {"tol": 1e-9, "max_iter": 400, "damping": 0.0}),
        ("parallel (2e-3, 150) + implicit", {"method": "parallel", "tol": 2e-3, "max_iter": 150}),
        ("parallel (1e-6, 400) + implicit", {"method": "parallel", "tol": 1e-6, "max_iter": 400}),
    ],
    "budget": [
        ("as trained", {}),
        ("tol 1e-6, 100 sweeps", {"tol": 1e-6, "max_iter": 100}),
        ("tol 1e-8, 200 sweeps", {"tol": 1e-8, "max_iter": 200}),
    ],
}
REFERENCE = "sweeps settled, damping 0 (reference)"


def build(hparams: dict, state_dict: dict, over: dict):
    """The checkpoint's task module with ``over`` replacing model arguments, in eval mode."""
    from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction

    args = {**hparams["model_args"], **over}
    if args.get("method") != "satnet":
        args.pop("damping", None)
    task = ConstraintSatisfaction(arch=hparams["arch"], model_args=args, loss="bce")
    task.load_state_dict(state_dict)
    return task.eval()


def grads(hparams: dict, state_dict: dict, batch, solves=None) -> dict[str, dict]:
    """Per solve: loss, bits right, forward cost and the clauses' gradient on one batch."""
    x, given, target = batch
    find = ~given
    out = {}
    for label, over in solves or SOLVES["grads"]:
        task = build(hparams, state_dict, over)
        probs = task.model(x, given)
        per_bit = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target, reduction="none")
        loss = (per_bit * find).sum() / find.sum()
        params = [p for p in task.parameters() if p.requires_grad]
        grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        right = ((probs > 0.5).to(target.dtype) == target)[find].float().mean()
        out[label] = {
            "loss": loss.item(),
            "bits": right.item(),
            "nfe": task.model.cost().nfe_forward,
            "grad": grad,
        }
    return out


def answers(task, x, given, batch_size: int = 40) -> tuple[torch.Tensor, float]:
    """The layer's outputs for every puzzle, by batches, and its mean forward sweeps."""
    probs, nfe = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            probs.append(task.model(x[i : i + batch_size], given[i : i + batch_size]))
            nfe.append(task.model.cost().nfe_forward)
    return torch.cat(probs), sum(nfe) / len(nfe)


def solved(probs, given, target, cell_bits: int) -> torch.Tensor:
    """Per puzzle: every cell to find is right (as :class:`PuzzleScore` counts it)."""
    from zoo.models.optlayers import decode_cells

    known = given.reshape(len(given), -1, cell_bits)[..., 0]
    right = decode_cells(probs, cell_bits) == decode_cells(target, cell_bits)
    return (right | known).all(1)


def budget(hparams: dict, state_dict: dict, split, solves=None, batch_size: int = 40) -> dict:
    """Per test-time budget: cells and puzzles solved (%) and mean forward sweeps."""
    from zoo.tasks.constraint_satisfaction import PuzzleScore

    x, given, target = split
    out = {}
    for label, over in solves or SOLVES["budget"]:
        task = build(hparams, state_dict, over)
        probs, nfe = answers(task, x, given, batch_size)
        score = PuzzleScore(task.model.cell_bits)
        score.update(probs, given, target)
        r = score.compute()
        out[label] = {"cells": float(r["cells"]), "solved": float(r["solved"]), "nfe": nfe}
    return out


@lru_cache
def _units(box: int) -> tuple[list[list[int]], list[set[int]]]:
    """The rows, columns and boxes as lists of cells, and each cell's peers."""
    from zoo.data.puzzles import _units as where

    n, rcb = where(box)
    units = [[i for i, w in enumerate(rcb) if w[kind] == u] for kind in range(3) for u in range(n)]
    peers = [{j for j, w in enumerate(rcb) if j != i and any(map(int.__eq__, w, rcb[i]))}
             for i in range(n * n)]  # fmt: skip
    return units, peers


def fill(grid: list[int], box: int = 3, hidden: bool = False) -> list[int]:
    """``grid`` (row-major digits, 0 for an empty cell) after repeated naked singles (a cell
    with one candidate left) and, with ``hidden``, hidden singles (a digit with one place left
    in a row, column or box)."""
    units, peers = _units(box)
    digits = set(range(1, box * box + 1))
    g = list(grid)
    while True:
        cand = [digits - {g[p] for p in peers[c]} if not g[c] else set() for c in range(len(g))]
        moved = False
        for c, left in enumerate(cand):
            if not g[c] and len(left) == 1:
                g[c], moved = next(iter(left)), True
        if not moved and hidden:
            for u in units:
                for d in digits - {g[c] for c in u}:
                    where = [c for c in u if not g[c] and d in cand[c]]
                    if len(where) == 1:
                        g[where[0]], moved = d, True
                        break
                if moved:
                    break
        if not moved:
            return g


def rounds(grid: list[int], box: int = 3) -> int | None:
    """Rounds of naked singles (every cell with one candidate left, filled at once) that complete
    ``grid``; ``None`` where they stop short."""
    _, peers = _units(box)
    digits = set(range(1, box * box + 1))
    g, r = list(grid), 0
    while not all(g):
        found = [(c, digits - {g[p] for p in peers[c]}) for c in range(len(g)) if not g[c]]
        found = [(c, left) for c, left in found if len(left) == 1]
        if not found:
            return None
        for c, left in found:
            g[c] = next(iter(left))
        r += 1
    return r


def propagate(grid: list[int], box: int = 3, hidden: bool = False) -> bool:
    """Whether :func:`fill` completes ``grid``."""
    return all(fill(grid, box, hidden))


def grids(split, box: int = 3) -> list[list[int]]:
    """The puzzles of ``(inputs, given, target)`` as row-major digit lists, 0 where not given."""
    _, given, target = split
    n = box * box
    digit = target.view(len(target), n * n, n).argmax(-1) + 1
    known = given.view(len(given), n * n, n).all(-1)
    return (digit * known).tolist()


def singles(split, box: int = 3) -> dict[str, float]:
    """Mean givens, the % of puzzles naked singles, and naked plus hidden singles, solve, and
    the rounds of naked singles those need (mean and most)."""
    gs = grids(split, box)
    r = [k for k in (rounds(g, box) for g in gs) if k is not None]
    return {
        "givens": sum(sum(1 for v in g if v) for g in gs) / len(gs),
        "naked": 100 * len(r) / len(gs),
        "hidden": 100 * sum(propagate(g, box, hidden=True) for g in gs) / len(gs),
        "rounds": sum(r) / len(r) if r else float("nan"),
        "rounds_max": max(r, default=0),
    }


def main(argv: list[str] | None = None) -> None:
    from zoo.data.puzzles import SudokuDataModule

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="a Lightning checkpoint of a SATNet constraint-satisfaction run")
    ap.add_argument(
        "--part", choices=["grads", "budget", "singles", "generators", "all"], default="all"
    )
    ap.add_argument("--puzzles", type=int, default=None, help="first N validation puzzles")
    a = ap.parse_args(argv)
    ck = torch.load(a.ckpt, weights_only=True, map_location="cpu")
    hp, sd = ck["hyper_parameters"], ck["state_dict"]
    dm = ck.get("datamodule_hyper_parameters", {})
    if hp.get("arch") != "satnet" or dm.get("_class_path") != "zoo.data.puzzles.SudokuDataModule":
        raise SystemExit(
            f"{a.ckpt} is not a SATNet Sudoku run of `zoo fit` (arch {hp.get('arch')!r}, data "
            f"{dm.get('_class_path')!r}): this check reads arch: satnet with SudokuDataModule"
        )
    dm_args = {k: v for k, v in dm.items() if not k.startswith("_")}
    data = SudokuDataModule(**dm_args)
    val = data.eval_split("val")
    print(f"{a.ckpt}: epoch {ck['epoch']}, step {ck['global_step']}")
    if a.part in ("grads", "all"):
        n = a.puzzles or 40
        res = grads(hp, sd, tuple(t[:n] for t in val))
        ref = res[REFERENCE]["grad"]
        print(
            f"\n{n} validation puzzles: | solve | loss | bits right | sweeps | cos | norm ratio |"
        )
        for label, r in res.items():
            cos = F.cosine_similarity(r["grad"], ref, dim=0).item()
            ratio = (r["grad"].norm() / ref.norm()).item()
            print(
                f"| {label} | {r['loss']:.4f} | {100 * r['bits']:.2f}% | {r['nfe']} | "
                f"{cos:+.4f} | {ratio:.3f} |"
            )
    if a.part in ("budget", "all"):
        n = a.puzzles or 120
        res = budget(hp, sd, tuple(t[:n] for t in val))
        print(f"\n{n} validation puzzles: | budget | cells | solved | mean sweeps |")
        for label, r in res.items():
            print(f"| {label} | {r['cells']:.2f}% | {r['solved']:.2f}% | {r['nfe']:.1f} |")
    if a.part in ("singles", "all"):
        print("\n| split | puzzles | mean givens | naked singles solve | with hidden singles |")
        for split in ("val", "test", "train"):
            part = tuple(t[: a.puzzles or 1000] for t in data.eval_split(split))
            r = singles(part)
            print(
                f"| {split} | {len(part[0])} | {r['givens']:.1f} | {r['naked']:.1f}% | "
                f"{r['hidden']:.1f}% |"
            )
        task = build(hp, sd, {})
        probs, _ = answers(task, val[0], val[1])
        solved_ = solved(probs, val[1], val[2], task.model.cell_bits)
        naked = torch.tensor([propagate(g) for g in grids(val)])
        print(
            f"\nAt its own budget it solves {int(solved_.sum())} of the {len(solved_)} validation "
            f"puzzles: {int((solved_ & naked).sum())} of the {int(naked.sum())} that naked singles "
            f"solve, {int((solved_ & ~naked).sum())} of the other {int((~naked).sum())}."
        )
    if a.part in ("generators", "all"):
        print(
            "\n| generator | validation puzzles | mean givens | naked singles solve | their rounds "
            "(mean; most) | solved at its budget | cells right |"
        )
        for gen in ("satnet", "unique"):
            args = {**dm_args, "generator": gen}
            args["clues"] = None if gen == "satnet" else (dm_args.get("clues") or (30, 40))
            split = SudokuDataModule(**args).eval_split("val")
            split = tuple(t[: a.puzzles] for t in split) if a.puzzles else split
            r = singles(split, int(args.get("box", 3)))
            score = budget(hp, sd, split, [("as trained", {})])["as trained"]
            print(
                f"| {gen} | {len(split[0])} | {r['givens']:.2f} | {r['naked']:.1f}% | "
                f"{r['rounds']:.1f}; {r['rounds_max']} | {score['solved']:.1f}% | "
                f"{score['cells']:.2f}% |"
            )


if __name__ == "__main__":
    main()
