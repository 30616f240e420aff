"""Does satnet.sudoku's layer learn Sudoku's rules, or the puzzles it has just seen?

Loads a Lightning state of a satnet.sudoku recipe (default: stage 7's), rebuilds the training
order its data loader followed (it depends only on the seed and the epoch), and scores, in
evaluation mode, 120 training puzzles of the last three batches trained on, 120 training puzzles
last trained on about an epoch earlier, and the first 120 validation puzzles. A layer that has
learned the rules scores the three groups alike; one that fits the batches it was just stepped on
scores the first group highest.

Run: OMP_NUM_THREADS=2 python recipes/optlayers/experiments/satnet_sudoku_recency.py STATE [RECIPE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from zoo.data import ResumableLoader
from zoo.data.puzzles import SudokuDataModule
from zoo.tasks.constraint_satisfaction import ConstraintSatisfaction

HERE = Path(__file__).resolve().parent


def _score(layer, x, given, target) -> tuple[float, int]:
    cells = total = solved = 0
    for i in range(0, len(x), 40):
        with torch.no_grad():
            out = layer(x[i : i + 40].float(), given[i : i + 40].bool())
        n = out.shape[0]
        pred = out.view(n, 81, 9).argmax(-1)
        true = target[i : i + 40].view(n, 81, 9).argmax(-1)
        find = ~given[i : i + 40].view(n, 81, 9)[..., 0].bool()
        cells += int(((pred == true) & find).sum())
        total += int(find.sum())
        solved += int(((pred == true) | ~find).all(1).sum())
    return cells / total, solved


def main(state: str, recipe: str) -> None:
    cfg = yaml.safe_load(Path(recipe).read_text())
    dm = SudokuDataModule(**cfg["data"]["init_args"])
    dm.setup("fit")
    x, given, target = dm.eval_split("train")
    xv, gv, yv = dm.eval_split("val")
    task = ConstraintSatisfaction(**cfg["model"]["init_args"])
    ckpt = torch.load(state, weights_only=True, map_location="cpu")
    task.load_state_dict(ckpt["state_dict"])
    task.eval()
    layer = task.model.sat
    bs = dm.batch_size
    per_epoch = len(x) // bs
    step, epoch = int(ckpt["global_step"]), int(ckpt["epoch"])
    done = step - per_epoch * epoch  # batches of this epoch already trained on
    if epoch < 1 or done < 3:
        raise SystemExit("give a state at least three batches into its second epoch or later")
    order = ResumableLoader.permutation
    now, before = order(dm.seed, epoch, len(x)), order(dm.seed, epoch - 1, len(x))
    recent = now[(done - 3) * bs : done * bs]
    seen = set(now[: done * bs].tolist())
    early = torch.tensor([int(i) for i in before[: 10 * bs] if int(i) not in seen][:120])
    print(f"state: epoch {epoch}, step {step}, {done} batches into the epoch")
    print("| puzzles (120 each) | cells right | solved |")
    print("|---|---|---|")
    groups = (
        ("training, trained on 1 to 3 steps before", x[recent], given[recent], target[recent]),
        (
            f"training, trained on {per_epoch - 10 + done} to {per_epoch + done} steps before",
            x[early], given[early], target[early],
        ),
        ("validation", xv[:120], gv[:120], yv[:120]),
    )  # fmt: skip
    for name, *data in groups:
        cells, solved = _score(layer, *data)
        print(f"| {name} | {cells:.2%} | {solved} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else str(HERE / "satnet_sudoku.stage7.yaml"))
