"""How fast satnet.sudoku's solve settles at a training state's clauses, by method and weight.

Loads a Lightning state of a satnet.sudoku recipe, takes the first 40 validation puzzles and, in
evaluation mode, solves them with the parallel proximal update at several proximal weights and
with the paper's sequential sweeps, printing the wall time, the iterations, the share of puzzles
settled and the cells right of each. The numbers in recipes/optlayers/HISTORY.md are its output.

Run: OMP_NUM_THREADS=2 python recipes/optlayers/experiments/satnet_sudoku_solve_speed.py STATE [RECIPE]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import yaml

from zoo.data.puzzles import SudokuDataModule
from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction

HERE = Path(__file__).resolve().parent
SETTINGS = (  # method, proximal weight, tolerance, iteration budget
    ("parallel", 0.5, 2e-3, 400),
    ("parallel", 0.25, 2e-3, 400),
    ("parallel", 0.1, 2e-3, 400),
    ("sequential", 0.5, 1e-3, 40),
)


def main(state: str, recipe: str) -> None:
    cfg = yaml.safe_load(Path(recipe).read_text())
    dm = SudokuDataModule(**{**cfg["data"]["init_args"], "augment": False})
    x, given, target = (t[:40] for t in dm.eval_split("val"))
    task = ConstraintSatisfaction(**cfg["model"]["init_args"])
    task.load_state_dict(torch.load(state, weights_only=True, map_location="cpu")["state_dict"])
    task.eval()
    layer = task.model.sat
    find = ~given.view(-1, 81, 9)[..., 0].bool()
    print(
        "| method | proximal weight | tolerance | budget | seconds | iterations | settled | cells right |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method, prox, tol, budget in SETTINGS:
        layer.method, layer.prox, layer.tol, layer.max_iter = method, prox, tol, budget
        layer.compact = method == "parallel"
        begin = time.perf_counter()
        with torch.no_grad():
            out = layer(x.float(), given.bool())
        seconds = time.perf_counter() - begin
        right = out.view(-1, 81, 9).argmax(-1) == target.view(-1, 81, 9).argmax(-1)
        cells = float((right & find).sum() / find.sum())
        settled = float(layer.stats.converged_mask.float().mean())
        print(f"| {method} | {prox} | {tol:g} | {budget} | {seconds:.1f} | {layer.stats.nfe} | "
              f"{settled:.0%} | {cells:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(HERE / "satnet_sudoku.stage7.yaml"))
