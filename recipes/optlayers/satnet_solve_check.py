"""How a SATNet checkpoint's answers and gradients depend on the solve: for trained clauses, on
validation puzzles.

Two tables:

- ``grads``: the loss of the layer's answers, the bits right, the sweeps or iterations used and
  the clauses' gradient under each solve and backward, with the gradient's cosine and norm
  ratio to a reference one: the compiled sweeps run far past settling (``tol`` 1e-9, 400
  sweeps) with the backward undamped, which is the implicit gradient at that solution.
- ``budget``: validation cells and puzzles solved at growing test-time budgets of the
  checkpoint's own method.

    python recipes/optlayers/satnet_solve_check.py runs/satnet_sudoku_stage10/checkpoints/last.ckpt

Reads a Lightning checkpoint of ``zoo fit`` (weights only, ``weights_only=True``) with its
recipe's model arguments and data. ``--puzzles N`` scores the first N validation puzzles
(default 40 for ``grads``, 120 for ``budget``).
"""

from __future__ import annotations

import argparse
import time

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
        t0 = time.perf_counter()
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
            "seconds": time.perf_counter() - t0,
        }
    return out


def budget(hparams: dict, state_dict: dict, split, solves=None, batch_size: int = 40) -> dict:
    """Per test-time budget: cells and puzzles solved (%) and mean forward sweeps."""
    from zoo.tasks.constraint_satisfaction import PuzzleScore

    x, given, target = split
    out = {}
    for label, over in solves or SOLVES["budget"]:
        task = build(hparams, state_dict, over)
        score, nfe = PuzzleScore(task.model.cell_bits), []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                sl = slice(i, i + batch_size)
                score.update(task.model(x[sl], given[sl]), given[sl], target[sl])
                nfe.append(task.model.cost().nfe_forward)
        r = score.compute()
        out[label] = {
            "cells": float(r["cells"]),
            "solved": float(r["solved"]),
            "nfe": sum(nfe) / len(nfe),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    from zoo.data.puzzles import SudokuDataModule

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt", help="a Lightning checkpoint of a SATNet constraint-satisfaction run")
    ap.add_argument("--part", choices=["grads", "budget", "both"], default="both")
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
    val = SudokuDataModule(**dm_args).eval_split("val")
    print(f"{a.ckpt}: epoch {ck['epoch']}, step {ck['global_step']}")
    if a.part in ("grads", "both"):
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
    if a.part in ("budget", "both"):
        n = a.puzzles or 120
        res = budget(hp, sd, tuple(t[:n] for t in val))
        print(f"\n{n} validation puzzles: | budget | cells | solved | mean sweeps |")
        for label, r in res.items():
            print(f"| {label} | {r['cells']:.2f}% | {r['solved']:.2f}% | {r['nfe']:.1f} |")


if __name__ == "__main__":
    main()
